package tiered

import (
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/internal/ratelog"
	"github.com/tieredcache/tiered/l1"
	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
)

// entry is what L1 holds for a key: a decoded value or a cached "not found".
// L1 holds pointers so that a hit copies the value once, into the result.
type entry[V any] struct {
	v V
	meta
}

func newEntry[V any](v V, m meta) *entry[V] { return &entry[V]{v: v, meta: m} }

// Cache is a two-tier cache of values of type V: an in-process ristretto L1
// in front of Redis, kept coherent across processes by a [Bus].
//
// A Cache is safe for concurrent use by multiple goroutines. Values handed
// out are shared between callers and with L1: do not mutate what a pointer,
// slice or map value points to. (There is no Options.Clone to copy each
// value handed out: one Options type serves caches of every V, so it
// would take and return any, an allocation on every hit of a value that
// is not a pointer. A caller that must change a value copies it first.)
type Cache[V any] struct {
	o   Options
	l1  *l1.Cache[*entry[V]] // nil when Options.DisableL1
	l2  *l2.Store
	pub *Bus        // Options.Bus, or the cache's own
	bus *pubsub.Bus // pub.pb, held here too: the hit path reads it (Proven)
	log *ratelog.Limiter

	lossless bool // o.Codec says Unmarshal(Marshal(v)) == v (see roundTrip)

	// flights are the flights a caller may join; replaced when the bus
	// resets, and while the bus cannot prove L1 fresh (see flightsFor).
	flights atomic.Pointer[flights[V]]
	// resets counts the bus's resets; a load that saw a reset since it
	// began does not write Redis.
	resets atomic.Uint64

	waitMu  sync.Mutex                            // guards waiters
	waiters map[string]map[chan struct{}]struct{} // flights waiting for a lease, by key

	brk breaker

	refreshing refreshes // refresh-ahead loads running, by key (fresh.go)

	// synced is the bus session (see pubsub.Bus.Session) in which this
	// cache last checked the server for a restart with old data; Redis is
	// read only while it is the current one. syncMu guards syncedCh, closed
	// and replaced whenever synced changes.
	synced   atomic.Uint64
	syncMu   sync.Mutex
	syncedCh chan struct{}
	// dials counts the connections the client made (a dial hook); a read
	// that saw a dial since the last server check, or during its own call,
	// does not trust Redis: the new connection may reach a server that
	// restarted with old data before the bus noticed (see maintain.go).
	// checkedDials is dials when the last check began.
	dials, checkedDials atomic.Uint64
	warned              bool          // persistence warning logged; maintenance goroutine only
	kick                chan struct{} // wakes the maintenance goroutine; capacity 1
	maintDone           chan struct{}

	stats counters

	closeMu   sync.RWMutex   // orders running.Add before Close's running.Wait
	closed    atomic.Bool    // set with closeMu held for writing
	closing   chan struct{}  // closed by Close: lease waits end
	running   sync.WaitGroup // running flights; Close waits for them
	closeOnce sync.Once
	closeErr  error  // Shutdown's result; written in closeOnce
	detach    func() // from pub

	// pollMin and pollMax bound the backoff of a flight polling for a lease
	// (see flight.go, leasewait.go); tests raise them to prove that wake messages suffice.
	pollMin, pollMax time.Duration

	// beforeFill, set only by tests, runs before a value read from Redis
	// or loaded is offered to L1: the window the fill guard protects.
	beforeFill func(key string)
}

// New returns a Cache over rdb (a single-node, failover or cluster client;
// several caches may share one). It starts the L1 worker goroutines, a
// maintenance goroutine (server checks, breaker probes) and, when opts.Bus
// is nil, a bus of its own; Close stops them. New does not wait for Redis:
// until the bus is subscribed, reads go to the loader (see WaitReady).
func New[V any](rdb redis.UniversalClient, opts *Options) (*Cache[V], error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.Codec == nil {
		o.Codec = defaultCodec[V]()
	}
	lossless := false
	if l, ok := o.Codec.(interface{ Lossless() bool }); ok {
		lossless = l.Lossless()
	}
	if rdb == nil {
		return nil, invalid("nil redis client")
	}
	store, err := l2.New(rdb, &l2.Options{Namespace: o.Namespace, OpTimeout: o.OpTimeout})
	if err != nil {
		return nil, wrap(err, ErrInvalidOptions)
	}
	c := &Cache[V]{
		o:         o,
		l2:        store,
		pub:       o.Bus,
		lossless:  lossless,
		log:       ratelog.New(o.Logger, 5*time.Second),
		waiters:   make(map[string]map[chan struct{}]struct{}),
		brk:       breaker{threshold: int64(o.BreakerFailures)},
		syncedCh:  make(chan struct{}),
		kick:      make(chan struct{}, 1),
		maintDone: make(chan struct{}),
		pollMin:   pollMin,
		pollMax:   pollMax,
		closing:   make(chan struct{}),
		stats:     counters{hits: newStripes()},
	}
	if o.BreakerFailures < 0 {
		c.brk.threshold = math.MaxInt64
	}
	c.flights.Store(newFlights[V](mono.Now()))
	if !o.DisableL1 {
		c.l1, err = l1.New[*entry[V]](&l1.Options{MaxBytes: o.L1MaxBytes, NumCounters: o.L1NumCounters})
		if err != nil {
			return nil, wrap(err, ErrInvalidOptions)
		}
	}
	if c.pub == nil {
		// Shutdown delivers the outbox within its ctx: the bus's own
		// Close does not try again (CloseTimeout < 0).
		busOpts := &BusOptions{Logger: o.Logger, MaxStaleness: o.MaxStaleness, CloseTimeout: -1}
		if c.pub, err = NewBus(rdb, busOpts); err != nil {
			c.closeL1()
			return nil, err
		}
		c.pub.owned = true
	}
	c.bus = c.pub.pb
	if c.detach, err = c.pub.attach(o.Namespace, busHandler[V]{c}); err != nil {
		if c.pub.owned {
			c.pub.close()
		}
		c.closeL1()
		return nil, err
	}
	rdb.AddHook(dialCounter{&c.dials})
	go c.maintain()
	c.kickMaintenance()
	if !contextTimeouts(rdb) {
		c.warn("tiered: the redis client has ContextTimeoutEnabled off; OpTimeout cannot cut a call to a server that does not answer")
	}
	return c, nil
}

// warn reports a misconfiguration: to Options.Logger, or to slog.Default()
// when there is none (see Options.Logger). It is called at most once per
// cause, so it is not rate-limited.
func (c *Cache[V]) warn(msg string) {
	l := c.o.Logger
	if l == nil {
		l = slog.Default()
	}
	l.Warn(msg, slog.String("namespace", c.o.Namespace))
}

// defaultCodec is the codec of a cache of V when Options.Codec is nil.
func defaultCodec[V any]() Codec {
	var zero V
	switch any(zero).(type) {
	case []byte, string:
		return Raw{}
	}
	return JSON{}
}

// contextTimeouts reports whether rdb applies context deadlines to its
// sockets, for the client types whose options say.
func contextTimeouts(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}

// Bus returns the invalidation bus the cache uses: Options.Bus, or the
// one it made for itself, which its Close closes (Bus.Close on it fails
// with ErrBusInUse).
func (c *Cache[V]) Bus() *Bus { return c.pub }

// Stats returns the cache's counters.
func (c *Cache[V]) Stats() Stats { return c.stats.snapshot() }

func (c *Cache[V]) checkKey(key string) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if len(key) == 0 {
		c.stats.rejected.Add(1)
		return ErrKeyEmpty
	}
	if len(key) > c.o.MaxKeyBytes {
		c.stats.rejected.Add(1)
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLong, len(key), c.o.MaxKeyBytes)
	}
	return nil
}

// reserved reports whether a key given to the shared (unscoped) API starts
// with the scope mark, which only Scoped keys may.
func reserved(key string) bool { return len(key) > 0 && key[0] == scopeMark[0] }

// fromL1 looks key up in L1 at now (a mono.Now reading), given whether the
// bus proved L1 fresh at now. L1 is not consulted without that proof (an
// invalidation may have been published and not applied), nor for a key
// whose invalidation is pending in the outbox. The caller counts the hit.
func (c *Cache[V]) fromL1(key string, now int64, proven bool) (*entry[V], bool) {
	if c.l1 == nil {
		return nil, false
	}
	if !proven {
		c.stats.l1Unproven.Add(1)
		return nil, false
	}
	if c.bus.Pending(c.o.Namespace, key) {
		return nil, false
	}
	return c.l1.GetAt(key, now)
}

// result returns what an L1 entry means to a caller.
func (e *entry[V]) result() (V, error) {
	if e.neg {
		var zero V
		return zero, ErrNotFound
	}
	return e.v, nil
}

// outcome returns what an L1 entry means to a flight.
func (e *entry[V]) outcome() outcome[V] {
	v, err := e.result()
	return outcome[V]{v: v, err: err, from: OriginL1}
}
