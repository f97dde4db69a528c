// Package otelcache reports the counters of a [tiered.Cache] and of its
// [tiered.Bus] (with the bus's outbox) as OpenTelemetry metrics, and traces
// the cache's operations as OpenTelemetry spans ([Tracer]).
//
// # Mechanism
//
// [Register] creates one observable instrument per field of tiered.Stats on
// the caller's [metric.Meter] and registers a single callback that reads
// Cache.Stats once per collection and observes every instrument from that
// one snapshot. Nothing is added to the cache's read or write paths: the
// counters the cache keeps anyway are read only when a reader (a Prometheus
// scrape, a periodic exporter) collects. [RegisterBus] does the same for
// Bus.Stats, Bus.Healthy and Bus.ProofAge. Both return a [*Registration]
// whose Unregister stops the reporting.
//
// # Tracing
//
// [Tracer] adapts a [trace.Tracer] to tiered.Options.Tracer: a span per
// operation that gets past L1 and per loader call, named "tiered." and
// the operation ("tiered.get-or-load", "tiered.load"), the loader's under
// the read that led its flight. The Redis round trips are traced by
// go-redis's redisotel hook on the client, whose spans nest under these;
// this package makes no Redis spans. Keys are recorded only when
// [TracerOptions] asks. L1 hits are not traced unless
// tiered.Options.TraceL1Hits asks: docs/operations.md ("Tracing") says why,
// and docs/benchmarks.md what a span costs.
//
// # API only
//
// The package depends on go.opentelemetry.io/otel/metric and
// go.opentelemetry.io/otel/trace, the APIs, and on no SDK: the application
// chooses the SDK, the exporters, the views and the sampler. A Meter or
// Tracer from a no-op or not yet configured provider is fine; nothing is
// reported until a real one is installed.
//
// # Module
//
// otelcache is a module of its own (github.com/tieredcache/tiered/otelcache)
// so that a program that uses the cache without OpenTelemetry does not
// download or list OpenTelemetry at all. Measured with Go 1.26 and otel
// v1.47.0: the core module's `go mod graph` has 35 edges and 22 modules;
// as a package inside it, the metric API alone takes it to 58 edges and 30
// modules, and the SDK that the tests need to 125 edges and 38 modules
// (otel, otel/metric, otel/trace, otel/sdk, otel/sdk/metric, otel/log,
// auto/sdk, go-logr, uuid, go-cmp, goleak, ...). Test dependencies of a
// package in the core would appear in the core's go.mod, and so in the
// module graph of every user. As a separate module, the core keeps its 22.
//
// # Names and attributes
//
// Instruments are named tiered.cache.*, tiered.bus.* and tiered.outbox.*
// (the Prometheus exporter turns tiered.cache.l1.hits into
// tiered_cache_l1_hits_total); each instrument's description is the
// meaning of its Stats field. Every observation of a cache carries the
// attribute [NamespaceKey] ("tiered.namespace", not "namespace", which
// Prometheus's Kubernetes discovery sets on targets and would rename) with
// the cache's namespace, plus Options.Attributes. Bus observations carry
// Options.Attributes only.
//
// # One registration per cache and per bus
//
// Register each cache once per meter, and each bus once per meter: a bus
// shared by several caches (tiered.Options.Bus) is registered once with
// RegisterBus, not once per cache. A cache that made its own bus (Options.Bus
// nil) has a bus per cache: register each with an attribute that tells them
// apart, such as the cache's NamespaceKey. Registering the same source on
// the same meter with the same attributes again, before Unregister, returns
// [ErrRegistered]: the SDK would sum the two callbacks' observations of the
// one series and double every value.
package otelcache
