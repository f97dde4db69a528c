package tiered

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/tieredcache/tiered/internal/ratelog"
	"github.com/tieredcache/tiered/l1"
	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
)

// entry is what L1 holds for a key: a decoded value or a cached "not found".
// L1 holds pointers so that a hit copies the value once, into the result.
type entry[V any] struct {
	v   V
	neg bool
}

// Cache is a two-tier cache of values of type V: an in-process ristretto L1
// in front of Redis, kept coherent across processes by a [pubsub.Bus].
//
// A Cache is safe for concurrent use by multiple goroutines. Values handed
// out are shared between callers and with L1: do not mutate what a pointer,
// slice or map value points to.
type Cache[V any] struct {
	o   Options
	l1  *l1.Cache[*entry[V]] // nil when Options.DisableL1
	l2  *l2.Store
	bus *pubsub.Bus
	log *ratelog.Limiter

	loads   singleflight.Group // GetOrLoad flights, by key
	fetches singleflight.Group // Get flights, by key

	waitMu  sync.Mutex                            // guards waiters
	waiters map[string]map[chan struct{}]struct{} // flights waiting for a lease, by key

	stats counters

	closeMu    sync.RWMutex   // orders flights.Add before Close's flights.Wait
	closed     atomic.Bool    // set with closeMu held for writing
	closing    chan struct{}  // closed by Close: lease waits end
	flights    sync.WaitGroup // running flights; Close waits for them
	closeOnce  sync.Once
	unregister func()

	// pollMin and pollMax bound the backoff of a flight polling for a lease
	// (see flight.go); tests raise them to prove that wake messages suffice.
	pollMin, pollMax time.Duration

	// beforeFill, set only by tests, runs before a value read from Redis
	// or loaded is offered to L1: the window the fill guard protects.
	beforeFill func(key string)
}

// New returns a Cache over rdb (a single-node, failover or cluster client;
// several caches may share one). It starts the L1 worker goroutines and,
// when opts.Bus is nil, a bus of its own; Close stops them.
func New[V any](rdb redis.UniversalClient, opts *Options) (*Cache[V], error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, invalid("nil redis client")
	}
	store, err := l2.New(rdb, &l2.Options{Namespace: o.Namespace, OpTimeout: o.OpTimeout})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	c := &Cache[V]{
		o:       o,
		l2:      store,
		bus:     o.Bus,
		log:     ratelog.New(o.Logger, 5*time.Second),
		waiters: make(map[string]map[chan struct{}]struct{}),
		pollMin: pollMin,
		pollMax: pollMax,
		closing: make(chan struct{}),
	}
	if !o.DisableL1 {
		c.l1, err = l1.New[*entry[V]](&l1.Options{MaxBytes: o.L1MaxBytes, NumCounters: o.L1NumCounters})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
	}
	if c.bus == nil {
		c.bus, err = pubsub.New(rdb, &pubsub.Options{Logger: o.Logger})
		if err != nil {
			if c.l1 != nil {
				c.l1.Close()
			}
			return nil, err
		}
	}
	c.unregister = c.bus.Register(o.Namespace, busHandler[V]{c})
	if !contextTimeouts(rdb) {
		c.log.Log(slog.LevelWarn, "tiered: the redis client has ContextTimeoutEnabled off; OpTimeout cannot cut a call to a server that does not answer", nil,
			slog.String("namespace", o.Namespace))
	}
	return c, nil
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

// Bus returns the invalidation bus the cache uses.
func (c *Cache[V]) Bus() *pubsub.Bus { return c.bus }

// Stats returns the cache's counters.
func (c *Cache[V]) Stats() Stats { return c.stats.snapshot() }

// Close stops the goroutines New started and drops L1. It is idempotent;
// afterwards every method returns ErrClosed. Flights in progress stop waiting
// for leases (their callers get ErrClosed) and Close waits for them to end,
// so no loader runs after Close returns; a loader that is running is waited
// for (its context ends after Options.LoadTimeout). Close must not be called
// while other methods of the cache are running.
func (c *Cache[V]) Close() error {
	c.closeOnce.Do(func() {
		c.closeMu.Lock()
		c.closed.Store(true)
		close(c.closing)
		c.closeMu.Unlock()
		c.flights.Wait()
		c.unregister()
		if c.o.Bus == nil { // the bus is our own
			_ = c.bus.Close()
		}
		if c.l1 != nil {
			c.l1.Close()
		}
	})
	return nil
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

// fromL1 looks key up in L1. L1 is not consulted while the bus is
// unhealthy: an invalidation published now would not be heard.
func (c *Cache[V]) fromL1(key string) (*entry[V], bool) {
	if c.l1 == nil || !c.bus.Healthy() {
		return nil, false
	}
	e, ok := c.l1.Get(key)
	if !ok {
		return nil, false
	}
	c.stats.l1Hits.Add(1)
	if e.neg {
		c.stats.negativeHits.Add(1)
	}
	return e, true
}

// result returns what an L1 entry means to a caller.
func (e *entry[V]) result() (V, error) {
	if e.neg {
		var zero V
		return zero, ErrNotFound
	}
	return e.v, nil
}

// Get returns the value of key from L1 or Redis. It returns ErrNotFound on
// a miss (or a cached "not found"), an error wrapping ErrUnavailable when
// Redis failed, and ErrKeyEmpty, ErrKeyTooLong or ErrClosed.
func (c *Cache[V]) Get(ctx context.Context, key string) (V, error) {
	if err := c.checkKey(key); err != nil {
		var zero V
		return zero, err
	}
	if e, ok := c.fromL1(key); ok {
		return e.result()
	}
	return c.flight(ctx, &c.fetches, key, func(fctx context.Context) (V, error) {
		return c.fetch(fctx, key)
	})
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
// ErrKeyEmpty, ErrKeyTooLong or ErrClosed. A loaded value too large to cache
// (ErrValueTooLarge) or that the codec cannot encode is still returned, and
// counted in Stats.Rejected.
//
// All callers of GetOrLoad for one key should pass equivalent loaders: a
// caller may receive the result of another caller's loader.
func (c *Cache[V]) GetOrLoad(ctx context.Context, key string, loader Loader[V]) (V, error) {
	if err := c.checkKey(key); err != nil {
		var zero V
		return zero, err
	}
	if e, ok := c.fromL1(key); ok {
		return e.result()
	}
	if loader == nil {
		var zero V
		return zero, errors.New("tiered: nil loader")
	}
	return c.flight(ctx, &c.loads, key, func(fctx context.Context) (V, error) {
		return c.load(fctx, key, loader)
	})
}

// flight runs fn once for all concurrent callers of key in g. fn runs on a
// context that keeps ctx's values but not its cancellation, so that one
// caller leaving does not fail the others.
//
// A caller whose ctx can be cancelled waits through DoChan on its own ctx
// and may leave early; the flight then runs on a goroutine of its own. A
// caller whose ctx can never be cancelled (ctx.Done() == nil) has no reason
// to leave, so it uses Do, which runs the flight on the caller's goroutine
// when it leads and saves a goroutine hand-off (measured in
// docs/benchmarks.md). Both kinds join the same flights.
func (c *Cache[V]) flight(ctx context.Context, g *singleflight.Group, key string, fn func(context.Context) (V, error)) (V, error) {
	run := func() (any, error) {
		c.closeMu.RLock()
		if c.closed.Load() {
			c.closeMu.RUnlock()
			return nil, ErrClosed
		}
		c.flights.Add(1)
		c.closeMu.RUnlock()
		defer c.flights.Done()
		// fn recovers loader panics itself, so Do and DoChan never re-panic.
		return fn(context.WithoutCancel(ctx))
	}
	if ctx.Done() == nil {
		r, err, _ := g.Do(key, run)
		v, _ := r.(V)
		return v, err
	}
	ch := g.DoChan(key, run)
	select {
	case r := <-ch:
		v, _ := r.Val.(V)
		return v, r.Err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// Set stores v for key in Redis, then in this process's L1, and has every
// other node drop key from its L1. A load of key in flight anywhere is
// discarded rather than written after v.
//
// On a Redis failure it returns an error wrapping ErrUnavailable, drops
// key from the local L1 and, as after a write, lets no later caller join a
// load of key already running: whether the write reached Redis is unknown.
func (c *Cache[V]) Set(ctx context.Context, key string, v V) error {
	if err := c.checkKey(key); err != nil {
		return err
	}
	env, ttl, err := c.encode(v, false)
	if err != nil {
		return err
	}
	t := c.begin(key)
	ann, err := c.announce(pubsub.Invalidate, key)
	if err != nil {
		return err
	}
	if err := c.l2.Set(ctx, key, env, ttl, ann); err != nil {
		c.l2Failed("set", err)
		// The write may have reached Redis: treat it as one, as Delete does.
		c.dropL1(key)
		c.written(key)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if c.l1 != nil {
		c.l1.Replace(t, key, &entry[V]{v: v}, int64(len(env)), min(c.o.L1TTL, ttl))
	}
	c.written(key)
	return nil
}

// Delete deletes keys from Redis, then from this process's L1, and has every
// other node drop them from its L1, with one message for the whole batch. A
// load of any of them in flight anywhere is discarded.
//
// If any key is invalid nothing is deleted. On a Redis failure it returns an
// error wrapping ErrUnavailable; the keys are dropped from the local L1 in
// any case.
func (c *Cache[V]) Delete(ctx context.Context, keys ...string) error {
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
	err = c.l2.Delete(ctx, keys, ann)
	c.dropL1(keys...)
	c.written(keys...)
	if err != nil {
		c.l2Failed("delete", err)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

func (c *Cache[V]) announce(kind pubsub.Kind, keys ...string) (l2.Announce, error) {
	msgs, err := c.bus.Encode(kind, c.o.Namespace, keys)
	if err != nil {
		return l2.Announce{}, fmt.Errorf("tiered: cannot encode announcement: %w", err)
	}
	return l2.Announce{Channel: c.bus.Channel(), Messages: msgs}, nil
}

// encode returns the envelope for v (or for "not found") and its Redis TTL.
func (c *Cache[V]) encode(v V, negative bool) ([]byte, time.Duration, error) {
	ttl := c.o.NegativeTTL
	var payload []byte
	if !negative {
		var err error
		if payload, err = c.o.Codec.Marshal(v); err != nil {
			c.stats.rejected.Add(1)
			return nil, 0, fmt.Errorf("%w: %w", ErrEncode, err)
		}
		if len(payload) > c.o.MaxValueBytes {
			c.stats.rejected.Add(1)
			return nil, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(payload), c.o.MaxValueBytes)
		}
		ttl = c.o.TTL
		if c.o.Jitter > 0 {
			ttl += rand.N(c.o.Jitter)
		}
	}
	env := l2.Envelope{Negative: negative, Expiry: time.Now().Add(ttl), Payload: payload}
	return env.AppendBinary(make([]byte, 0, l2.HeaderSize+len(payload))), ttl, nil
}

// written is called after keys were written or deleted (here or, through
// the bus, on another node). Flights of keys that are in progress began
// before the write and may return what was there before it: forget them, so
// that a caller arriving after the write starts a flight of its own instead
// of joining one of those. And wake flights waiting for a lease of keys: the
// write deleted it.
func (c *Cache[V]) written(keys ...string) {
	for _, k := range keys {
		c.loads.Forget(k)
		c.fetches.Forget(k)
	}
	c.wake(keys...)
}

func (c *Cache[V]) l2Failed(op string, err error) {
	c.stats.l2Errors.Add(1)
	c.log.Log(slog.LevelWarn, "tiered: redis unavailable", err,
		slog.String("namespace", c.o.Namespace), slog.String("op", op))
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

func (h busHandler[V]) Reset() {
	h.c.stats.resets.Add(1)
	if h.c.l1 != nil {
		h.c.l1.Clear()
	}
}
