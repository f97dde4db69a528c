package otelcache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tieredcache/tiered/tiered"
)

// NamespaceKey is the attribute that carries a cache's namespace on every
// observation of its instruments.
const NamespaceKey = attribute.Key("tiered.namespace")

// ErrInvalid is wrapped by the errors Register and RegisterBus return for
// bad arguments.
var ErrInvalid = errors.New("otelcache: invalid argument")

// ErrRegistered is returned by Register and RegisterBus for a source
// already registered on the same meter with the same attributes: the SDK
// would sum the two callbacks' observations of one series, doubling every
// value.
var ErrRegistered = errors.New("otelcache: already registered on this meter with these attributes")

// Source is what Register reads: a *tiered.Cache[V] of any V.
type Source interface {
	Stats() tiered.Stats
}

// BusSource is what RegisterBus reads: a *tiered.Bus.
type BusSource interface {
	Stats() tiered.BusStats
	Healthy() bool
	ProofAge() time.Duration
}

// Options configures a registration. A nil *Options means defaults.
type Options struct {
	// Attributes are added to every observation of the registration, for
	// example the node or service when the resource does not say it, or
	// NamespaceKey on a bus that belongs to one cache. Default none.
	Attributes []attribute.KeyValue
}

// Registration is the reporting of one cache or bus. It is safe for
// concurrent use by multiple goroutines.
type Registration struct {
	once sync.Once
	reg  metric.Registration
	id   regKey
	err  error
}

// regKey identifies a registration for the duplicate check: a meter, a
// source and an attribute set. The zero regKey is not checked.
type regKey struct {
	meter metric.Meter
	src   any
	attrs attribute.Distinct
}

var (
	regMu      sync.Mutex          // guards registered
	registered = map[regKey]bool{} // live registrations
)

// claim records id, or reports that it is live already. Sources or meters
// of types that cannot be compared (none of this module's) are not checked.
func claim(meter metric.Meter, src any, attrs attribute.Distinct) (regKey, error) {
	if !reflect.TypeOf(meter).Comparable() || !reflect.TypeOf(src).Comparable() {
		return regKey{}, nil
	}
	id := regKey{meter, src, attrs}
	regMu.Lock()
	defer regMu.Unlock()
	if registered[id] {
		return regKey{}, ErrRegistered
	}
	registered[id] = true
	return id, nil
}

func release(id regKey) {
	if id == (regKey{}) {
		return
	}
	regMu.Lock()
	delete(registered, id)
	regMu.Unlock()
}

// Unregister stops the reporting: the next collections observe nothing
// from this registration (the instruments stay on the meter, as the API has
// no way to remove them). It is idempotent; calls after the first return
// the first's error.
func (r *Registration) Unregister() error {
	r.once.Do(func() {
		r.err = r.reg.Unregister()
		release(r.id)
	})
	return r.err
}

// counter is one observable counter read from a snapshot of type S.
type counter[S any] struct {
	name, unit, desc string
	read             func(*S) uint64
}

// cacheCounters are the instruments of Register, one per tiered.Stats field.
var cacheCounters = []counter[tiered.Stats]{
	{"tiered.cache.l1.hits", "{read}", "Reads answered from L1, cached \"not found\" included.", func(s *tiered.Stats) uint64 { return s.L1Hits }},
	{"tiered.cache.l2.hits", "{read}", "Reads answered from Redis, cached \"not found\" included.", func(s *tiered.Stats) uint64 { return s.L2Hits }},
	{"tiered.cache.misses", "{read}", "Reads answered by neither tier (loader, fail-safe, not found, error).", func(s *tiered.Stats) uint64 { return s.Misses }},
	{"tiered.cache.negative_hits", "{read}", "Reads answered from L1 or Redis by a cached \"not found\".", func(s *tiered.Stats) uint64 { return s.NegativeHits }},
	{"tiered.cache.loads", "{call}", "Loader calls.", func(s *tiered.Stats) uint64 { return s.Loads }},
	{"tiered.cache.load_errors", "{call}", "Loader calls that failed (not found is not a failure).", func(s *tiered.Stats) uint64 { return s.LoadErrors }},
	{"tiered.cache.lease_waits", "{flight}", "Flights that waited for another node's lease.", func(s *tiered.Stats) uint64 { return s.LeaseWaits }},
	{"tiered.cache.stale_discards", "{value}", "Loaded values kept out of Redis because a write raced them.", func(s *tiered.Stats) uint64 { return s.StaleDiscards }},
	{"tiered.cache.l2.errors", "{call}", "Failed Redis calls.", func(s *tiered.Stats) uint64 { return s.L2Errors }},
	{"tiered.cache.corrupt", "{value}", "Values in Redis that did not decode (each deleted).", func(s *tiered.Stats) uint64 { return s.Corrupt }},
	{"tiered.cache.rejected", "{input}", "Rejected inputs: bad keys, values too large or not encodable.", func(s *tiered.Stats) uint64 { return s.Rejected }},
	{"tiered.cache.invalidations", "{key}", "Keys invalidated by messages from other nodes.", func(s *tiered.Stats) uint64 { return s.Invalidations }},
	{"tiered.cache.resets", "{reset}", "Times L1 was dropped because the bus lost or regained its subscription, or the namespace was purged.", func(s *tiered.Stats) uint64 { return s.Resets }},
	{"tiered.cache.queued", "{key}", "Keys of this cache whose invalidation went to the outbox.", func(s *tiered.Stats) uint64 { return s.Queued }},
	{"tiered.cache.delivered", "{key}", "Outbox keys of this cache that the outbox delivered.", func(s *tiered.Stats) uint64 { return s.Delivered }},
	{"tiered.cache.purges", "{purge}", "Times this cache purged its namespace from Redis.", func(s *tiered.Stats) uint64 { return s.Purges }},
	{"tiered.cache.l1.unproven", "{call}", "Reads that skipped L1 because the bus could not prove it fresh within MaxStaleness.", func(s *tiered.Stats) uint64 { return s.L1Unproven }},
	{"tiered.cache.breaker.opens", "{open}", "Times the breaker opened after consecutive Redis failures.", func(s *tiered.Stats) uint64 { return s.BreakerOpens }},
	{"tiered.cache.breaker.skips", "{call}", "Redis calls skipped because the breaker was open.", func(s *tiered.Stats) uint64 { return s.BreakerSkips }},
	{"tiered.cache.stale_served", "{call}", "Calls answered with an expired value by fail-safe.", func(s *tiered.Stats) uint64 { return s.StaleServed }},
	{"tiered.cache.refreshes", "{call}", "Refresh-ahead loads this node ran.", func(s *tiered.Stats) uint64 { return s.Refreshes }},
}

// busCounters are the counters of RegisterBus, one per tiered.BusStats
// counter.
var busCounters = []counter[tiered.BusStats]{
	{"tiered.bus.received", "{message}", "Messages received, including own and garbled ones.", func(s *tiered.BusStats) uint64 { return s.Received }},
	{"tiered.bus.own", "{message}", "Messages of this node, ignored.", func(s *tiered.BusStats) uint64 { return s.Own }},
	{"tiered.bus.garbled", "{message}", "Messages that did not decode, ignored.", func(s *tiered.BusStats) uint64 { return s.Garbled }},
	{"tiered.bus.gaps", "{gap}", "Times the subscription was lost and restored.", func(s *tiered.BusStats) uint64 { return s.Gaps }},
	{"tiered.bus.pings", "{ping}", "PINGs sent on the subscription.", func(s *tiered.BusStats) uint64 { return s.Pings }},
	{"tiered.bus.replaced", "{connection}", "Subscription connections replaced because they went silent or were never confirmed.", func(s *tiered.BusStats) uint64 { return s.Replaced }},
	{"tiered.outbox.queued", "{key}", "Keys put in the outbox.", func(s *tiered.BusStats) uint64 { return s.Queued }},
	{"tiered.outbox.delivered", "{key}", "Outbox keys delivered.", func(s *tiered.BusStats) uint64 { return s.Delivered }},
	{"tiered.outbox.dropped", "{key}", "Outbox keys dropped: expired, folded into a purge, or without a handler.", func(s *tiered.BusStats) uint64 { return s.Dropped }},
	{"tiered.outbox.purges", "{purge}", "Namespace purges the outbox delivered.", func(s *tiered.BusStats) uint64 { return s.Purges }},
}

// Register reports the counters of c, a *tiered.Cache[V], on meter: one
// observable counter per field of tiered.Stats (named in cacheCounters:
// tiered.cache.l1.hits, tiered.cache.loads, ...), all observed from one
// Stats call per collection, with the attribute NamespaceKey=namespace and
// opts.Attributes.
//
// namespace must be the cache's Options.Namespace: a Cache does not expose
// it. It must not be empty. Register does not report the cache's bus; see
// RegisterBus. A second registration of c on meter with the same
// attributes, before the first's Unregister, returns ErrRegistered.
// Register is safe to call concurrently.
func Register(meter metric.Meter, c Source, namespace string, opts *Options) (*Registration, error) {
	if meter == nil {
		return nil, fmt.Errorf("%w: nil meter", ErrInvalid)
	}
	if c == nil {
		return nil, fmt.Errorf("%w: nil cache", ErrInvalid)
	}
	if namespace == "" {
		return nil, fmt.Errorf("%w: empty namespace", ErrInvalid)
	}
	attrs := attributes(opts, NamespaceKey.String(namespace))
	return register(meter, c, cacheCounters, c.Stats, nil, attrs)
}

// RegisterBus reports b, a *tiered.Bus, on meter, with opts.Attributes on
// every observation:
//
//   - one observable counter per counter of tiered.BusStats: tiered.bus.received,
//     .own, .garbled, .gaps, .pings, .replaced, and the outbox's
//     tiered.outbox.queued, .delivered, .dropped, .purges;
//   - tiered.outbox.pending, an observable up-down counter (a gauge in
//     Prometheus): the keys and namespace purges in the outbox now;
//   - tiered.bus.healthy, a gauge: 1 while the subscription is confirmed,
//     else 0;
//   - tiered.bus.proof.age, a gauge in seconds: how old the bus's proof of
//     freshness is (see tiered.Bus.ProofAge); not observed while there is no
//     proof, which tiered.bus.healthy=0 reports. A cache serves from L1 only
//     while it is at most MaxStaleness.
//
// Register a bus once per meter, however many caches share it: a second
// registration of b on meter with the same attributes returns
// ErrRegistered.
func RegisterBus(meter metric.Meter, b BusSource, opts *Options) (*Registration, error) {
	if meter == nil {
		return nil, fmt.Errorf("%w: nil meter", ErrInvalid)
	}
	if b == nil {
		return nil, fmt.Errorf("%w: nil bus", ErrInvalid)
	}
	pending, err := meter.Int64ObservableUpDownCounter("tiered.outbox.pending",
		metric.WithUnit("{key}"),
		metric.WithDescription("Keys (and namespaces to purge) in the outbox now."))
	if err != nil {
		return nil, fmt.Errorf("otelcache: %w", err)
	}
	healthy, err := meter.Int64ObservableGauge("tiered.bus.healthy",
		metric.WithUnit("1"),
		metric.WithDescription("1 while the bus's subscription is confirmed, else 0."))
	if err != nil {
		return nil, fmt.Errorf("otelcache: %w", err)
	}
	age, err := meter.Float64ObservableGauge("tiered.bus.proof.age",
		metric.WithUnit("s"),
		metric.WithDescription("Age of the bus's proof that it applied every invalidation published before it; absent while there is none."))
	if err != nil {
		return nil, fmt.Errorf("otelcache: %w", err)
	}
	gauges := &busGauges{b: b, pending: pending, healthy: healthy, age: age}
	return register(meter, b, busCounters, b.Stats, gauges, attributes(opts))
}

// busGauges are the instruments of RegisterBus that are not counters.
type busGauges struct {
	b       BusSource
	pending metric.Int64ObservableUpDownCounter
	healthy metric.Int64ObservableGauge
	age     metric.Float64ObservableGauge
}

func (g *busGauges) instruments() []metric.Observable {
	return []metric.Observable{g.pending, g.healthy, g.age}
}

func (g *busGauges) observe(o metric.Observer, s *tiered.BusStats, set metric.MeasurementOption) {
	o.ObserveInt64(g.pending, int64(s.Pending), set)
	var up int64
	if g.b.Healthy() {
		up = 1
	}
	o.ObserveInt64(g.healthy, up, set)
	if a := g.b.ProofAge(); a >= 0 {
		o.ObserveFloat64(g.age, a.Seconds(), set)
	}
}

// register creates counters on meter and one callback that takes a
// snapshot and observes them (and extra's instruments, for a bus).
func register[S any](meter metric.Meter, src any, counters []counter[S], snapshot func() S, extra *busGauges, attrs []attribute.KeyValue) (*Registration, error) {
	aset := attribute.NewSet(attrs...)
	id, err := claim(meter, src, aset.Equivalent())
	if err != nil {
		return nil, err
	}
	r, err := build(meter, counters, snapshot, extra, aset)
	if err != nil {
		release(id)
		return nil, err
	}
	r.id = id
	return r, nil
}

// build creates the instruments and the callback of register.
func build[S any](meter metric.Meter, counters []counter[S], snapshot func() S, extra *busGauges, aset attribute.Set) (*Registration, error) {
	insts := make([]metric.Int64ObservableCounter, len(counters))
	all := make([]metric.Observable, 0, len(counters)+3)
	for i, c := range counters {
		inst, err := meter.Int64ObservableCounter(c.name, metric.WithUnit(c.unit), metric.WithDescription(c.desc))
		if err != nil {
			return nil, fmt.Errorf("otelcache: %w", err)
		}
		insts[i] = inst
		all = append(all, inst)
	}
	if extra != nil {
		all = append(all, extra.instruments()...)
	}
	// The attribute set is built once: observing with it allocates nothing.
	set := metric.WithAttributeSet(aset)
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := snapshot()
		for i, c := range counters {
			o.ObserveInt64(insts[i], clamp(c.read(&s)), set)
		}
		if extra != nil {
			// Only RegisterBus passes extra, with S = tiered.BusStats.
			extra.observe(o, any(&s).(*tiered.BusStats), set)
		}
		return nil
	}, all...)
	if err != nil {
		return nil, fmt.Errorf("otelcache: %w", err)
	}
	return &Registration{reg: reg}, nil
}

// attributes returns opts.Attributes followed by more, in a new slice.
func attributes(opts *Options, more ...attribute.KeyValue) []attribute.KeyValue {
	var a []attribute.KeyValue
	if opts != nil {
		a = append(a, opts.Attributes...)
	}
	return append(a, more...)
}

// clamp converts a counter to the int64 the API takes; a counter does not
// reach 2^63 in practice, but it must not wrap to a negative value.
func clamp(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}
