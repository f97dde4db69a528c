package tiered

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/tieredcache/tiered/l1"
	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
)

// Defaults for [Options].
const (
	// DefaultL1TTL caps the L1 TTL when Options.L1TTL is zero.
	DefaultL1TTL = time.Minute
	// DefaultNegativeTTL caps the TTL of cached "not found" results when
	// Options.NegativeTTL is zero.
	DefaultNegativeTTL = 30 * time.Second
	// DefaultLoadTimeout bounds a loader call.
	DefaultLoadTimeout = 5 * time.Second
	// DefaultLeaseTTL is how long a node may hold the lease on a key it loads.
	DefaultLeaseTTL = 5 * time.Second
	// DefaultMaxKeyBytes bounds a key.
	DefaultMaxKeyBytes = 1 << 10
	// DefaultMaxValueBytes bounds an encoded value.
	DefaultMaxValueBytes = 1 << 20
	// MaxKeyBytesLimit is the largest MaxKeyBytes accepted; longer keys would
	// not fit an invalidation message.
	MaxKeyBytesLimit = 64 << 10
	// DefaultMaxStaleness is the staleness bound of L1: see
	// Options.MaxStaleness.
	DefaultMaxStaleness = pubsub.DefaultMaxStaleness
	// DefaultL1MaxBytes is the default byte budget of a cache's L1.
	DefaultL1MaxBytes = l1.DefaultMaxBytes
	// DefaultOpTimeout bounds each Redis call of a read: see
	// Options.OpTimeout.
	DefaultOpTimeout = l2.DefaultOpTimeout
	// DefaultWriteTimeout bounds how long Set and Delete wait for Redis.
	DefaultWriteTimeout = time.Second
	// DefaultBreakerFailures is how many consecutive Redis failures open
	// the breaker.
	DefaultBreakerFailures = 3
	// DefaultFailSafeThrottle is how long a value served by fail-safe is
	// served again before the loader is retried: see
	// Options.FailSafeThrottle.
	DefaultFailSafeThrottle = time.Second
	// DefaultBreakerCooldown is how often an open breaker probes Redis.
	DefaultBreakerCooldown = 250 * time.Millisecond
)

// Options configures a [Cache]. Namespace and TTL are required; every other
// field has the default its comment states.
type Options struct {
	// Namespace prefixes the cache's Redis keys and scopes its invalidation
	// messages. Required; must not contain '{' or '}'. Caches of different
	// value types must use different namespaces.
	Namespace string

	// TTL is the Redis TTL of every value. Required, > 0: a key without a
	// TTL would serve stale data forever after a missed invalidation.
	TTL time.Duration

	// MaxTTL is the longest TTL a value may have: SetWithTTL rejects a
	// longer one and OverrideTTL is capped at it. It bounds how long a
	// copy of a key can live, which the outbox relies on. Jitter and Fresh
	// are set for TTL; for an entry with a TTL of its own they scale in
	// proportion (half the TTL, half the jitter). Default TTL; must not be
	// less than TTL.
	MaxTTL time.Duration

	// Jitter adds a random duration in [0, Jitter) to every value's Redis
	// TTL, so that keys filled together do not expire together. Default
	// TTL/10; negative means none.
	Jitter time.Duration

	// L1TTL is the longest an entry lives in L1; an entry's L1 TTL is also
	// never longer than what is left of its Redis TTL. It is the last
	// backstop against a lost invalidation. Default min(TTL, DefaultL1TTL).
	L1TTL time.Duration

	// NegativeTTL is the TTL of a cached "not found" (a loader returning
	// ErrNotFound). Default min(TTL, DefaultNegativeTTL); negative turns
	// negative caching off.
	NegativeTTL time.Duration

	// L1MaxBytes bounds L1 by the encoded size of its values. Default
	// DefaultL1MaxBytes (64 MiB).
	L1MaxBytes int64

	// L1NumCounters is ristretto's number of access-frequency counters,
	// ideally ten times the entries L1 holds when full. Default: ten per
	// 512 bytes of L1MaxBytes, at least 1000.
	L1NumCounters int64

	// DisableL1 turns the in-process tier off: every read goes to Redis.
	// Default false.
	DisableL1 bool

	// Codec encodes values for Redis. Default Raw for a cache of
	// []byte or string (their bytes as they are), JSON otherwise.
	Codec Codec

	// OpTimeout bounds every Redis call of a read through its context: a
	// read fails fast and falls through to the loader. Default
	// DefaultOpTimeout (200ms). go-redis honours a context deadline on the
	// socket only when the client has ContextTimeoutEnabled set; without it
	// a call to a server that does not answer lasts the client's
	// ReadTimeout (3s by default). New logs a warning for such a client.
	OpTimeout time.Duration

	// WriteTimeout bounds how long Set and Delete wait for Redis, beside
	// their context: the Redis call is given the whole of it, so that it
	// waits out a paused server, and a call that fails is retried by the
	// outbox while the writer waits. A write that is not done by then
	// returns an error wrapping ErrQueued, and the outbox goes on
	// delivering its invalidation. Default DefaultWriteTimeout.
	WriteTimeout time.Duration

	// MaxStaleness is the staleness bound of L1: no read returns from L1 a
	// value whose overwrite was acknowledged more than MaxStaleness before
	// the read began. A node serves from L1 only while its bus can prove
	// that it has applied every invalidation published up to MaxStaleness
	// ago (see Bus); otherwise it reads through. With a Bus
	// of your own, leave it zero or equal to the bus's MaxStaleness.
	// Default DefaultMaxStaleness (100ms).
	MaxStaleness time.Duration

	// BreakerFailures is how many consecutive Redis failures open the
	// breaker, which then sends reads straight to the loader and writes to
	// the outbox until a probe finds Redis back (see breaker.go). Default
	// DefaultBreakerFailures; negative turns the breaker off.
	BreakerFailures int

	// BreakerCooldown is how often an open breaker probes Redis. Default
	// DefaultBreakerCooldown.
	BreakerCooldown time.Duration

	// Fresh turns refresh-ahead on: a value read more than Fresh after it
	// was stored is returned at once and reloaded in the background, once
	// per key per fleet (under the lease), so that a hot key is replaced
	// before it expires and no caller waits for the loader. The refreshed
	// value goes through the same compare-and-set as any load: a write
	// during the refresh wins. Only GetOrLoad and GetMany refresh (Get has
	// no loader). Must be less than TTL; scales with a per-entry TTL (see
	// MaxTTL). Default 0: off. See fresh.go.
	Fresh time.Duration

	// MaxStale turns fail-safe on: Redis keeps every value MaxStale past
	// its logical expiry, and when a load of an expired key fails (an
	// error, a panic, LoadTimeout), the callers get the expired value
	// instead of the error, with a nil error; ReadInfo and
	// Stats.StaleServed tell them. A value that a Set or Delete removed is
	// never served: fail-safe serves a value only after Redis confirmed
	// that it still holds it. Default 0: off. See failsafe.go.
	MaxStale time.Duration

	// FailSafeThrottle is how long a value served by fail-safe is served
	// again, from L1, before the loader is tried again for that key on
	// this node. Like every L1 entry it lives at most L1TTL, which caps it
	// (L1TTL defaults to at most TTL). Without L1 (DisableL1) there is no
	// throttle. Default DefaultFailSafeThrottle; negative: retry at once.
	FailSafeThrottle time.Duration

	// SoftTimeout, with MaxStale, bounds how long callers wait for the load
	// of an expired key: after SoftTimeout they get the expired value
	// (ReadInfo says so, with ErrSoftTimeout), and the load goes on in the
	// background and fills both tiers when it ends. It also bounds their
	// wait for another node's load. Default 0: callers wait for the load
	// (up to LoadTimeout).
	SoftTimeout time.Duration

	// LoadTimeout bounds every loader call; the loader's context is
	// cancelled after it. Default DefaultLoadTimeout.
	LoadTimeout time.Duration

	// LeaseTTL is how long a node may hold the lease on a key it loads
	// before another node may take over. Set it above the loader's usual
	// duration: a lease that expires mid-load makes a second node load too.
	// Default DefaultLeaseTTL.
	LeaseTTL time.Duration

	// MaxKeyBytes bounds a key. Default DefaultMaxKeyBytes; at most
	// MaxKeyBytesLimit.
	MaxKeyBytes int

	// MaxValueBytes bounds a value's encoded size. Default
	// DefaultMaxValueBytes.
	MaxValueBytes int

	// Bus is the invalidation bus (see NewBus). Share one Bus between all
	// caches of a process to use one subscription; each cache on it needs
	// a namespace of its own. Default: the cache creates its own and Close
	// closes it.
	Bus *Bus

	// Logger receives rate-limited reports of Redis failures, corrupt
	// values and rejected inputs, and the warnings about a misconfiguration
	// (a client without ContextTimeoutEnabled, Redis persistence on).
	// Default: the reports are discarded, and the warnings go to
	// slog.Default(), so that a service that set no Logger still sees them.
	Logger *slog.Logger

	// Tracer, if set, gets a span around every operation that gets past
	// L1 and every loader call (see Tracer and Op), and the context it
	// returns is passed to the loader and to every Redis call of the
	// operation, so that a tracing hook on the redis client nests its
	// spans under the cache's. otelcache.Tracer implements it with
	// OpenTelemetry. Default nil: no tracing, at the cost of a nil check
	// per read.
	Tracer Tracer

	// TraceL1Hits makes reads answered by L1 traced too (with Tracer), as
	// spans with Origin OriginL1. It costs an L1 hit what a span costs,
	// several times the hit itself (docs/benchmarks.md). Default false:
	// L1 hits are not traced, and cost what they cost without a Tracer.
	TraceL1Hits bool
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
}

// withDefaults validates o and fills in defaults.
func (o *Options) withDefaults() (Options, error) {
	if o == nil {
		return Options{}, invalid("nil *Options: Namespace and TTL are required")
	}
	r := *o
	if r.Namespace == "" {
		return r, invalid("Namespace is required")
	}
	if len(r.Namespace) > pubsub.MaxNamespaceBytes {
		return r, invalid("Namespace longer than %d bytes", pubsub.MaxNamespaceBytes)
	}
	if r.TTL <= 0 {
		return r, invalid("TTL must be > 0, got %v", r.TTL)
	}
	for name, d := range map[string]time.Duration{
		"L1TTL": r.L1TTL, "OpTimeout": r.OpTimeout, "LoadTimeout": r.LoadTimeout, "LeaseTTL": r.LeaseTTL,
		"WriteTimeout": r.WriteTimeout, "MaxStaleness": r.MaxStaleness, "BreakerCooldown": r.BreakerCooldown,
		"Fresh": r.Fresh, "MaxStale": r.MaxStale, "SoftTimeout": r.SoftTimeout, "MaxTTL": r.MaxTTL,
	} {
		if d < 0 {
			return r, invalid("%s must not be negative, got %v", name, d)
		}
	}
	if r.MaxKeyBytes < 0 || r.MaxValueBytes < 0 || r.L1MaxBytes < 0 || r.L1NumCounters < 0 {
		return r, invalid("sizes must not be negative")
	}
	if r.MaxKeyBytes > MaxKeyBytesLimit {
		return r, invalid("MaxKeyBytes %d is over MaxKeyBytesLimit %d", r.MaxKeyBytes, MaxKeyBytesLimit)
	}
	if r.Fresh >= r.TTL {
		return r, invalid("Fresh %v must be less than TTL %v", r.Fresh, r.TTL)
	}
	if r.SoftTimeout > 0 && r.MaxStale == 0 {
		return r, invalid("SoftTimeout needs MaxStale: there is no expired value to serve without it")
	}
	if r.FailSafeThrottle == 0 {
		r.FailSafeThrottle = DefaultFailSafeThrottle
	}
	if r.MaxTTL == 0 {
		r.MaxTTL = r.TTL
	}
	if r.MaxTTL < r.TTL {
		return r, invalid("MaxTTL %v is less than TTL %v", r.MaxTTL, r.TTL)
	}
	if r.Jitter == 0 {
		r.Jitter = r.TTL / 10
	}
	if r.L1TTL == 0 {
		r.L1TTL = min(r.TTL, DefaultL1TTL)
	}
	if r.NegativeTTL == 0 {
		r.NegativeTTL = min(r.TTL, DefaultNegativeTTL)
	}
	if r.L1MaxBytes == 0 {
		r.L1MaxBytes = DefaultL1MaxBytes
	}
	if r.Codec == nil {
		r.Codec = JSON{}
	}
	if r.OpTimeout == 0 {
		r.OpTimeout = DefaultOpTimeout
	}
	if r.LoadTimeout == 0 {
		r.LoadTimeout = DefaultLoadTimeout
	}
	if r.LeaseTTL == 0 {
		r.LeaseTTL = DefaultLeaseTTL
	}
	if r.MaxKeyBytes == 0 {
		r.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if r.MaxValueBytes == 0 {
		r.MaxValueBytes = DefaultMaxValueBytes
	}
	if r.WriteTimeout == 0 {
		r.WriteTimeout = DefaultWriteTimeout
	}
	if r.Bus != nil {
		if r.Bus.owned {
			return r, invalid("Bus is the one another cache made for itself, which its Close closes; share a Bus made by NewBus")
		}
		if r.MaxStaleness != 0 && r.MaxStaleness != r.Bus.MaxStaleness() {
			return r, invalid("MaxStaleness %v differs from the Bus's %v", r.MaxStaleness, r.Bus.MaxStaleness())
		}
		r.MaxStaleness = r.Bus.MaxStaleness()
	}
	if r.MaxStaleness == 0 {
		r.MaxStaleness = DefaultMaxStaleness
	}
	if r.BreakerFailures == 0 {
		r.BreakerFailures = DefaultBreakerFailures
	}
	if r.BreakerCooldown == 0 {
		r.BreakerCooldown = DefaultBreakerCooldown
	}
	return r, nil
}
