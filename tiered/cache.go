package tiered

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
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
// in front of Redis, kept coherent across processes by a [pubsub.Bus].
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
	bus *pubsub.Bus // pub's subscription
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
	// (see flight.go); tests raise them to prove that wake messages suffice.
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

// closeL1 stops L1, if there is one.
func (c *Cache[V]) closeL1() {
	if c.l1 != nil {
		c.l1.Close()
	}
}

// Stats returns the cache's counters.
func (c *Cache[V]) Stats() Stats { return c.stats.snapshot() }

// WaitReady blocks until the cache uses both tiers: its bus is subscribed,
// the server has been checked for a restart with old data, and the bus has
// proved L1 fresh once. It returns ctx's error if ctx ends first, and
// ErrClosed. A cache answers reads before it is ready (from the loader), so
// calling WaitReady is optional: a service may use it in its readiness
// probe.
func (c *Cache[V]) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // Shutdown ends the wait, even on a shared bus
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		if err := c.bus.WaitHealthy(ctx); err != nil {
			if c.closed.Load() || errors.Is(err, pubsub.ErrClosed) {
				return ErrClosed
			}
			return err
		}
		if c.waitSynced(ctx) && c.bus.Proven(mono.Now()) {
			return nil
		}
		t := time.NewTimer(time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		if c.closed.Load() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// Close is Shutdown with a deadline of the bus's CloseTimeout (2s by
// default) for delivering the outbox.
func (c *Cache[V]) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), pubsub.DefaultCloseTimeout)
	defer cancel()
	return c.Shutdown(ctx)
}

// Shutdown closes the cache. It may be called at any time, from any
// goroutine, while other methods run, and more than once.
//
// From its start, new calls return ErrClosed (Get and GetOrLoad of a key
// in L1 may still answer from it until Shutdown returns). Calls already
// running finish, or return ErrClosed: a flight waiting for another node's
// lease stops waiting. Shutdown waits for them, so no loader runs and no
// method touches L1, Redis or the outbox after it returns; a loader that
// is running is waited for (its context ends after Options.LoadTimeout),
// and a write for at most Options.WriteTimeout.
//
// Then Shutdown delivers what the outbox holds of this cache's namespace,
// until ctx ends; if ctx ends first, it returns an error wrapping ErrQueued
// and ctx's error, and those invalidations are lost with the process: the
// other nodes drop those keys when their TTLs end. Last, it stops the
// goroutines New started and drops L1, and closes the bus if the cache
// made it. Every call returns the result of the first.
func (c *Cache[V]) Shutdown(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.closeMu.Lock()
		c.closed.Store(true)
		close(c.closing)
		c.closeMu.Unlock()
		c.running.Wait()
		<-c.maintDone
		c.bus.Redeliver() // the load that made deliveries back off is gone
		if err := c.bus.Flush(ctx, c.o.Namespace); err != nil {
			c.closeErr = wrap(err, ErrQueued)
		}
		c.detach()
		if c.pub.owned {
			c.pub.close()
		}
		c.closeL1()
	})
	return c.closeErr
}

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

// Get returns the value of key from L1 or Redis. It returns ErrNotFound on
// a miss (or a cached "not found"), an error wrapping ErrUnavailable when
// Redis failed, and ErrKeyEmpty, ErrKeyTooLong or ErrClosed.
func (c *Cache[V]) Get(ctx context.Context, key string) (V, error) {
	if reserved(key) {
		var zero V
		c.stats.rejected.Add(1)
		return zero, ErrKeyReserved
	}
	return c.get(ctx, key)
}

func (c *Cache[V]) get(ctx context.Context, key string) (V, error) {
	if c.o.Tracer != nil { // the only cost of tracing when it is off
		return c.getTraced(ctx, key)
	}
	if err := c.checkKey(key); err != nil {
		var zero V
		return zero, err
	}
	now := mono.Now()
	proven := c.bus.Proven(now)
	if e, ok := c.fromL1(key, now, proven); ok {
		c.stats.hits.add(e.neg)
		if e.stale != nil {
			c.servedStale(ctx, key, e.stale)
		}
		return e.result()
	}
	v, _, _, err := c.fetchFlight(ctx, key, now, proven)
	return v, err
}

// getTraced is get with a Tracer: a span once L1 did not answer, or from
// the start with Options.TraceL1Hits.
func (c *Cache[V]) getTraced(ctx context.Context, key string) (V, error) {
	if err := c.checkKey(key); err != nil {
		var zero V
		return zero, err
	}
	var end func(SpanEnd)
	if c.o.TraceL1Hits {
		ctx, end = c.startSpan(ctx, OpGet, key, 1)
	}
	now := mono.Now()
	proven := c.bus.Proven(now)
	if e, ok := c.fromL1(key, now, proven); ok {
		c.stats.hits.add(e.neg)
		if e.stale != nil {
			c.servedStale(ctx, key, e.stale)
		}
		v, err := e.result()
		if end != nil {
			end(readEnd(err, l1Origin(e), false))
		}
		return v, err
	}
	if end == nil {
		ctx, end = c.startSpan(ctx, OpGet, key, 1)
	}
	v, from, shared, err := c.fetchFlight(ctx, key, now, proven)
	end(readEnd(err, from, shared))
	return v, err
}

// fetchFlight is the miss path of get: the flight of key, at now.
func (c *Cache[V]) fetchFlight(ctx context.Context, key string, now int64, proven bool) (V, Origin, bool, error) {
	return c.flight(ctx, &c.flightsFor(now, proven).fetches, key, func(fctx context.Context) outcome[V] {
		return c.fetch(fctx, key)
	})
}

// l1Origin is the origin of an answer from the L1 entry e: a value that
// fail-safe served (and L1 keeps for FailSafeThrottle) is still stale.
func l1Origin[V any](e *entry[V]) Origin {
	if e.stale != nil {
		return OriginStale
	}
	return OriginL1
}

// GetOrLoad returns the value of key from L1, Redis, or loader, in that
// order, and caches what loader returns in both tiers.
//
// Concurrent calls for one key share one flight: one Redis read and at most
// one loader call per process, and, through the Redis lease, one loader
// call per fleet. A caller whose ctx ends leaves with ctx's error; the flight
// goes on for the others. If Redis fails, GetOrLoad falls through to loader:
// a read never fails only because Redis did.
//
// Errors: ErrNotFound when loader returned it or a cached "not found" says
// so; the loader's error; a *PanicError if it panicked; ctx's error;
// ErrKeyEmpty, ErrKeyTooLong, ErrNilLoader or ErrClosed. A loaded value too
// large to cache (ErrValueTooLarge) or that the codec cannot encode is
// still returned, and counted in Stats.Rejected.
//
// All callers of GetOrLoad for one key should pass equivalent loaders: a
// caller may receive the result of another caller's loader.
func (c *Cache[V]) GetOrLoad(ctx context.Context, key string, loader Loader[V]) (V, error) {
	if reserved(key) {
		var zero V
		c.stats.rejected.Add(1)
		return zero, ErrKeyReserved
	}
	return c.getOrLoad(ctx, key, loader)
}

func (c *Cache[V]) getOrLoad(ctx context.Context, key string, loader Loader[V]) (V, error) {
	if loader == nil {
		var zero V
		return zero, ErrNilLoader
	}
	if c.o.Tracer != nil { // the only cost of tracing when it is off
		return c.getOrLoadTraced(ctx, key, loader)
	}
	if err := c.checkKey(key); err != nil {
		var zero V
		return zero, err
	}
	now := mono.Now()
	proven := c.bus.Proven(now)
	if e, ok := c.fromL1(key, now, proven); ok {
		c.stats.hits.add(e.neg)
		if now >= e.refresh || e.stale != nil { // rare: Fresh or MaxStale on
			c.l1Special(ctx, key, e, now, loader)
		}
		return e.result()
	}
	v, _, _, err := c.loadFlight(ctx, key, loader, now, proven)
	return v, err
}

// getOrLoadTraced is getOrLoad with a Tracer: a span once L1 did not
// answer, or from the start with Options.TraceL1Hits.
func (c *Cache[V]) getOrLoadTraced(ctx context.Context, key string, loader Loader[V]) (V, error) {
	if err := c.checkKey(key); err != nil {
		var zero V
		return zero, err
	}
	var end func(SpanEnd)
	if c.o.TraceL1Hits {
		ctx, end = c.startSpan(ctx, OpGetOrLoad, key, 1)
	}
	now := mono.Now()
	proven := c.bus.Proven(now)
	if e, ok := c.fromL1(key, now, proven); ok {
		c.stats.hits.add(e.neg)
		if now >= e.refresh || e.stale != nil { // rare: Fresh or MaxStale on
			c.l1Special(ctx, key, e, now, loader)
		}
		v, err := e.result()
		if end != nil {
			end(readEnd(err, l1Origin(e), false))
		}
		return v, err
	}
	if end == nil {
		ctx, end = c.startSpan(ctx, OpGetOrLoad, key, 1)
	}
	v, from, shared, err := c.loadFlight(ctx, key, loader, now, proven)
	end(readEnd(err, from, shared))
	return v, err
}

// loadFlight is the miss path of getOrLoad: the flight of key, at now.
func (c *Cache[V]) loadFlight(ctx context.Context, key string, loader Loader[V], now int64, proven bool) (V, Origin, bool, error) {
	return c.flight(ctx, &c.flightsFor(now, proven).loads, key, func(fctx context.Context) outcome[V] {
		return c.load(fctx, key, loader)
	})
}

// flights is one generation of the flights callers may join.
type flights[V any] struct {
	loads   group[V] // GetOrLoad and GetMany flights, by key
	fetches group[V] // Get and GetManyCached flights, by key
	born    int64    // mono time of the generation's creation
}

func newFlights[V any](now int64) *flights[V] {
	return &flights[V]{born: now}
}

// flightsFor returns the flights a caller arriving at now may join.
//
// A caller must not join a flight that began before a write it should see:
// the flight may return what was there before. Every write this node hears
// of forgets its keys' flights (see written), and while the bus proves L1
// fresh it has heard of every write acknowledged more than MaxStaleness
// ago. Without that proof it may have missed some, so a generation of
// flights is then joinable for at most MaxStaleness after it was created:
// a flight in it began less than MaxStaleness before the caller, and saw
// every write acknowledged before that. An older generation is replaced,
// and its flights finish for the callers they have.
func (c *Cache[V]) flightsFor(now int64, proven bool) *flights[V] {
	f := c.flights.Load()
	if proven || now-f.born <= int64(c.o.MaxStaleness) {
		return f
	}
	if nf := newFlights[V](now); c.flights.CompareAndSwap(f, nf) {
		return nf
	}
	return c.flights.Load()
}

// flight runs fn once for all concurrent callers of key in g (see
// group.go). fn runs on a context that keeps ctx's values but not its
// cancellation, so that one caller leaving does not fail the others.
//
// A caller whose ctx can be cancelled waits on its own ctx and may leave
// early, so when it leads, the flight runs on a goroutine of its own. A
// caller whose ctx can never be cancelled (ctx.Done() == nil) has no reason
// to leave, so when it leads it runs the flight on its own goroutine, which
// saves a goroutine hand-off (measured in docs/benchmarks.md). Both kinds
// join the same flights.
//
// It counts the caller's read (Stats counts reads, not flights) and returns
// where the answer came from and whether the caller joined a flight another
// caller led (shared), for its span.
func (c *Cache[V]) flight(ctx context.Context, g *group[V], key string, fn func(context.Context) outcome[V]) (V, Origin, bool, error) {
	cl, lead := g.join(key)
	if lead {
		if ctx.Done() == nil {
			c.lead(ctx, g, key, cl, fn)
		} else {
			go c.lead(ctx, g, key, cl, fn)
		}
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.stats.misses.Add(1)
		var zero V
		return zero, OriginNone, !lead, ctx.Err()
	}
	c.stats.read(cl.from, cl.miss, cl.err)
	if cl.stale != nil {
		c.servedStale(ctx, key, cl.stale)
	}
	return cl.v, cl.from, !lead, cl.err
}

// lead runs fn for cl, the flight of key in g that the caller leads, and
// finishes it whatever happens: a closed cache finishes it with ErrClosed,
// and a goroutine that exits inside fn with errAbandoned.
func (c *Cache[V]) lead(ctx context.Context, g *group[V], key string, cl *call[V], fn func(context.Context) outcome[V]) {
	o := outcome[V]{err: errAbandoned}
	defer func() { g.finish(key, cl, o) }()
	if !c.enter() {
		o.err = ErrClosed
		return
	}
	defer c.running.Done()
	o = fn(context.WithoutCancel(ctx))
}

// enter counts a write, a flight or a background load as running, so that
// Shutdown waits for it; it reports false once the cache is closed. The
// caller calls c.running.Done when it ends.
func (c *Cache[V]) enter() bool {
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed.Load() {
		return false
	}
	c.running.Add(1)
	return true
}

// Set stores v for key in Redis, then in this process's L1, and has every
// other node drop key from its L1. A load of key in flight anywhere is
// discarded rather than written after v.
//
// The Redis call is bounded by ctx and Options.WriteTimeout, not by
// OpTimeout: a paused server is waited out. If it fails, whether it
// reached Redis is unknown, so Set drops key from the local L1, lets no
// later caller join a load of key already running, and queues key's
// invalidation in the bus's outbox (see Delete). It then returns an error
// wrapping ErrUnavailable: one that also wraps ErrQueued if the outbox has
// not delivered the invalidation by the deadline; v was not stored.
func (c *Cache[V]) Set(ctx context.Context, key string, v V) error {
	if reserved(key) {
		c.stats.rejected.Add(1)
		return ErrKeyReserved
	}
	return c.traced(ctx, OpSet, key, 1, func(ctx context.Context) error { return c.set(ctx, key, v, 0) })
}

// SetWithTTL is Set with a TTL of its own for this value instead of
// Options.TTL. ttl must be > 0 and at most Options.MaxTTL; otherwise it
// returns an error wrapping ErrInvalidTTL and writes nothing. Jitter and
// Fresh scale with ttl (see Options.MaxTTL).
func (c *Cache[V]) SetWithTTL(ctx context.Context, key string, v V, ttl time.Duration) error {
	if ttl <= 0 || ttl > c.o.MaxTTL {
		c.stats.rejected.Add(1)
		return fmt.Errorf("%w: %v, want > 0 and ≤ MaxTTL %v", ErrInvalidTTL, ttl, c.o.MaxTTL)
	}
	if reserved(key) {
		c.stats.rejected.Add(1)
		return ErrKeyReserved
	}
	return c.traced(ctx, OpSet, key, 1, func(ctx context.Context) error { return c.set(ctx, key, v, ttl) })
}

func (c *Cache[V]) set(ctx context.Context, key string, v V, ttl time.Duration) error {
	if err := c.checkKey(key); err != nil {
		return err
	}
	s, err := c.encode(v, false, ttl)
	if err != nil {
		return err
	}
	t := c.begin(key)
	ann, err := c.announce(pubsub.Invalidate, key)
	if err != nil {
		return err
	}
	keys := []string{key}
	delivered, cause := c.write(ctx, "set", keys, func(wctx context.Context) error {
		return c.l2.Set(wctx, key, s.env, s.redisTTL, ann)
	})
	switch {
	case cause == nil:
		if c.l1 != nil {
			c.l1.Replace(t, key, newEntry(s.v, s.meta()), int64(len(s.env)), min(c.o.L1TTL, s.ttl))
		}
		c.written(key)
		return nil
	case delivered:
		return wrap(cause, ErrUnavailable)
	}
	return wrap(cause, ErrQueued, ErrUnavailable)
}

// Delete deletes keys from Redis, then from this process's L1, and has every
// other node drop them from its L1, with one message for the whole batch. A
// load of any of them in flight anywhere is discarded.
//
// If any key is invalid nothing is deleted. The Redis call is bounded by
// ctx and Options.WriteTimeout. If it fails, the keys' invalidation goes to
// the bus's outbox, which retries it with backoff until Redis answers;
// until it is delivered this node serves the keys from neither L1 nor
// Redis. Delete waits for the delivery within the same deadline (not when
// the breaker is open: Redis is known to be down) and returns nil if it
// happened; otherwise an error wrapping ErrQueued and ErrUnavailable, and
// the outbox goes on. A write that reached Redis but
// lost its reply is harmless to deliver again.
func (c *Cache[V]) Delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if reserved(k) {
			c.stats.rejected.Add(1)
			return ErrKeyReserved
		}
	}
	return c.tracedDelete(ctx, keys)
}

// tracedDelete is delete in a span of OpDelete, when the cache has a Tracer.
func (c *Cache[V]) tracedDelete(ctx context.Context, keys []string) error {
	key := ""
	if len(keys) == 1 {
		key = keys[0]
	}
	return c.traced(ctx, OpDelete, key, len(keys), func(ctx context.Context) error { return c.delete(ctx, keys...) })
}

func (c *Cache[V]) delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if err := c.checkKey(k); err != nil {
			return err
		}
	}
	if len(keys) == 0 {
		return nil
	}
	ann, err := c.announce(pubsub.Invalidate, keys...)
	if err != nil {
		return err
	}
	delivered, cause := c.write(ctx, "delete", keys, func(wctx context.Context) error {
		return c.l2.Delete(wctx, keys, ann)
	})
	switch {
	case cause == nil:
		c.dropL1(keys...)
		c.written(keys...)
		return nil
	case delivered: // write dropped and forgot the keys when it queued them
		return nil
	}
	return wrap(cause, ErrQueued, ErrUnavailable)
}

// Causes wrapped in ErrUnavailable when no Redis call was made.
var (
	errBreakerOpen = errors.New("tiered: breaker open: redis failed repeatedly")
	errNotSynced   = errors.New("tiered: bus not subscribed or server not checked yet")
	errPending     = errors.New("tiered: the key's invalidation is pending in the outbox")
)

// errAnnounce wraps the bus's refusal to encode a write's message.
var errAnnounce = errors.New("tiered: cannot encode announcement")

// write runs do, the Redis side of a Set or Delete of keys, with the
// deadline of ctx and WriteTimeout, unless the breaker is open. If that
// fails (cause != nil), it queues the keys' invalidation in the outbox,
// drops them from L1, forgets their flights, and waits for the delivery
// within the same deadline (delivered), except when the breaker is open.
func (c *Cache[V]) write(ctx context.Context, op string, keys []string, do func(context.Context) error) (delivered bool, cause error) {
	wctx, cancel := context.WithTimeout(ctx, c.o.WriteTimeout)
	defer cancel()
	if c.brk.allow() {
		cause = do(wctx)
		if c.l2Done(op, cause); cause == nil {
			return false, nil
		}
	} else {
		c.stats.breakerSkips.Add(1)
		cause = errBreakerOpen
	}
	c.stats.queued.Add(uint64(len(keys)))
	c.bus.Queue(c.o.Namespace, keys, time.Now().Add(c.copiesOutlive()))
	c.dropL1(keys...)
	c.written(keys...)
	if errors.Is(cause, errBreakerOpen) {
		return false, cause // Redis is known to be down: do not wait for it
	}
	return c.bus.WaitDelivered(wctx, c.o.Namespace, keys) == nil, cause
}

// copiesOutlive bounds how long a copy of a key written before now can
// live: a value in Redis, or one a load that began before now fills into
// Redis or L1 after it. An outbox entry older than that has nothing left
// to invalidate.
func (c *Cache[V]) copiesOutlive() time.Duration {
	return c.o.LoadTimeout + c.o.LeaseTTL + max(c.o.MaxTTL+c.scaled(max(c.o.Jitter, 0), c.o.MaxTTL)+c.o.MaxStale, c.o.NegativeTTL)
}

func (c *Cache[V]) announce(kind pubsub.Kind, keys ...string) (l2.Announce, error) {
	msgs, err := c.bus.Encode(kind, c.o.Namespace, keys)
	if err != nil {
		return l2.Announce{}, wrap(err, errAnnounce)
	}
	return l2.Announce{Channel: c.bus.Channel(), Messages: msgs, Sharded: c.bus.Sharded()}, nil
}

// sealed is a value ready for Redis, and the value every node decodes
// from it.
type sealed[V any] struct {
	v        V             // what the codec gives back (see roundTrip)
	env      []byte        // the envelope
	ttl      time.Duration // until its logical expiry; bounds its L1 TTL
	redisTTL time.Duration // its Redis TTL: ttl, plus MaxStale for a value
	envelope l2.Envelope   // env decoded, without its payload
}

// meta returns the meta of an L1 entry holding s's value.
func (s sealed[V]) meta() meta { return metaOf(s.envelope) }

// encode returns the envelope for v (or for "not found") and its TTLs.
// override, when > 0, replaces the cache's TTL (see OverrideTTL).
func (c *Cache[V]) encode(v V, negative bool, override time.Duration) (sealed[V], error) {
	if negative {
		ttl := c.negativeTTL(override)
		env := l2.Envelope{Negative: true, Expiry: time.Now().Add(ttl)}
		return sealed[V]{env: env.AppendBinary(make([]byte, 0, l2.HeaderSize)), ttl: ttl, redisTTL: ttl, envelope: env}, nil
	}
	payload, err := c.o.Codec.Marshal(v)
	if err != nil {
		c.stats.rejected.Add(1)
		return sealed[V]{}, wrap(err, ErrEncode)
	}
	if len(payload) > c.o.MaxValueBytes {
		c.stats.rejected.Add(1)
		return sealed[V]{}, fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(payload), c.o.MaxValueBytes)
	}
	if v, err = c.roundTrip(v, payload); err != nil {
		c.stats.rejected.Add(1)
		return sealed[V]{}, err
	}
	ttl := c.o.TTL
	if override > 0 {
		ttl = min(override, c.o.MaxTTL)
	}
	base := ttl
	if j := c.scaled(c.o.Jitter, base); j > 0 {
		ttl += rand.N(j)
	}
	now := time.Now()
	env := l2.Envelope{Expiry: now.Add(ttl), Payload: payload}
	if c.o.Fresh > 0 {
		env.Fresh = now.Add(c.scaled(c.o.Fresh, base))
	}
	b := env.AppendBinary(make([]byte, 0, l2.HeaderSize+len(payload)))
	env.Payload = nil
	return sealed[V]{v: v, env: b, ttl: ttl, redisTTL: ttl + c.o.MaxStale, envelope: env}, nil
}

// roundTrip returns the value the other nodes decode from payload, v's
// encoding, so that this node caches and returns the same value as they
// do: a codec may be lossy (JSON turns invalid UTF-8 into U+FFFD and drops
// unexported fields). It costs one Unmarshal per Set and per load (see
// docs/benchmarks.md), skipped for a codec that declares itself lossless.
// A payload that does not decode would be corrupt on every other node: it
// is an encoding error.
func (c *Cache[V]) roundTrip(v V, payload []byte) (V, error) {
	if c.lossless {
		return v, nil
	}
	var rt V
	if err := c.o.Codec.Unmarshal(payload, &rt); err != nil {
		return v, wrap(fmt.Errorf("the codec cannot decode its own encoding: %w", err), ErrEncode)
	}
	return rt, nil
}

// negativeTTL is the TTL of a cached "not found", given a load's override.
func (c *Cache[V]) negativeTTL(override time.Duration) time.Duration {
	if override > 0 {
		return min(override, c.o.MaxTTL)
	}
	return c.o.NegativeTTL
}

// scaled returns d, a duration set for Options.TTL, in proportion for an
// entry whose own TTL is ttl.
func (c *Cache[V]) scaled(d, ttl time.Duration) time.Duration {
	if d <= 0 || ttl == c.o.TTL {
		return d
	}
	return time.Duration(float64(d) * float64(ttl) / float64(c.o.TTL))
}

// written is called after keys were written or deleted (here or, through
// the bus, on another node). Flights of keys that are in progress began
// before the write and may return what was there before it: forget them, so
// that a caller arriving after the write starts a flight of its own instead
// of joining one of those. And wake flights waiting for a lease of keys: the
// write deleted it.
func (c *Cache[V]) written(keys ...string) {
	f := c.flights.Load()
	for _, k := range keys {
		f.loads.forget(k)
		f.fetches.forget(k)
	}
	c.wake(keys...)
}

// l2Done records the outcome of a Redis call: a success (or a miss) closes
// the breaker; a failure is counted and logged, and opens it after
// BreakerFailures in a row, unless Redis rejected the command (it is up).
func (c *Cache[V]) l2Done(op string, err error) {
	if err == nil || errors.Is(err, l2.ErrMiss) {
		if c.brk.success() {
			c.log.Log(slog.LevelInfo, "tiered: redis answers again, breaker closed", nil,
				slog.String("namespace", c.o.Namespace))
			c.bus.Redeliver()
		}
		return
	}
	c.stats.l2Errors.Add(1)
	c.log.Log(slog.LevelWarn, "tiered: redis unavailable", err,
		slog.String("namespace", c.o.Namespace), slog.String("op", op))
	if !l2.Permanent(err) && c.brk.failure() {
		c.stats.breakerOpens.Add(1)
		c.log.Log(slog.LevelError, "tiered: breaker open: reads skip redis, writes go to the outbox", err,
			slog.String("namespace", c.o.Namespace))
		c.kickMaintenance()
	}
}

// l2Ready reports whether a read may use Redis now, and if not, why: the
// breaker is open, or the bus is not subscribed (a gap: the server may have
// restarted with old data) or its server not checked yet; for those it
// waits at most OpTimeout.
func (c *Cache[V]) l2Ready(ctx context.Context) error {
	if !c.brk.allow() {
		c.stats.breakerSkips.Add(1)
		return errBreakerOpen
	}
	if !c.waitSynced(ctx) {
		return errNotSynced
	}
	return nil
}

// dropL1 invalidates keys in L1, if there is one.
func (c *Cache[V]) dropL1(keys ...string) {
	if c.l1 != nil {
		c.l1.Invalidate(keys...)
	}
}

// busHandler receives the bus messages of the cache's namespace.
type busHandler[V any] struct{ c *Cache[V] }

func (h busHandler[V]) Invalidate(keys []string) {
	h.c.stats.invalidations.Add(uint64(len(keys)))
	h.c.dropL1(keys...)
	h.c.written(keys...)
}

func (h busHandler[V]) Wake(keys []string) { h.c.wake(keys...) }

// Reset drops L1 and starts a new generation of flights: no caller after
// it joins a flight that began before it, and no load that began before it
// writes Redis.
func (h busHandler[V]) Reset() {
	c := h.c
	c.stats.resets.Add(1)
	c.resets.Add(1)
	c.flights.Store(newFlights[V](mono.Now()))
	if c.l1 != nil {
		c.l1.Clear()
	}
}

// Deliver is the outbox's delivery of keys: the delete script, as Delete
// runs it. If Redis rejects it for good (the keys can never be deleted one
// by one), the namespace is purged instead: an invalidation is never given
// up.
func (h busHandler[V]) Deliver(ctx context.Context, keys []string) error {
	c := h.c
	ann, err := c.announce(pubsub.Invalidate, keys...)
	if err == nil {
		err = c.l2.Delete(ctx, keys, ann)
		c.l2Done("outbox delivery", err)
	}
	if err != nil && (l2.Permanent(err) || !errors.Is(err, l2.ErrUnavailable)) {
		c.log.Log(slog.LevelError, "tiered: redis rejects the invalidation of keys, purging the namespace", err,
			slog.String("namespace", c.o.Namespace))
		err = h.Purge(ctx)
	}
	if err != nil {
		return err
	}
	c.stats.delivered.Add(uint64(len(keys)))
	c.dropL1(keys...)
	c.written(keys...)
	return nil
}

// Purge deletes the whole namespace from Redis and announces a Flush, which
// makes every other node reset this namespace; this node resets itself.
func (h busHandler[V]) Purge(ctx context.Context) error {
	c := h.c
	msgs, err := c.bus.Encode(pubsub.Flush, c.o.Namespace, nil)
	if err != nil {
		return err
	}
	err = c.l2.Purge(ctx, l2.Announce{Channel: c.bus.Channel(), Messages: msgs, Sharded: c.bus.Sharded()})
	c.l2Done("purge", err)
	if err != nil {
		return err
	}
	c.stats.purges.Add(1)
	h.Reset()
	return nil
}
