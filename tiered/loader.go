package tiered

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// A Loader loads the value of a key from the source of truth (a database, a
// service) when neither tier has it.
//
// Load runs once per key per process at a time (one flight), and, while
// Redis is healthy, once per key per fleet (the lease). Its context carries
// the values of the first caller's context but not its cancellation, and it
// is cancelled after Options.LoadTimeout; a loader that returns later is
// not waited for (its callers get ErrLoadTimeout). A loader may choose the
// TTL of its result with OverrideTTL. Return ErrNotFound (or an error
// wrapping it) when the key does not exist: that result is cached for
// Options.NegativeTTL. Any other error is returned to the waiting callers and
// not cached. A panic is recovered and returned as a *PanicError.
type Loader[V any] interface {
	Load(ctx context.Context, key string) (V, error)
}

// A LoaderFunc implements Loader with a function.
type LoaderFunc[V any] func(ctx context.Context, key string) (V, error)

// Load calls f(ctx, key).
func (f LoaderFunc[V]) Load(ctx context.Context, key string) (V, error) {
	return f(ctx, key)
}

// loadKey is the context key of a running load's state (loadState).
type loadKey struct{}

// loadState is what a loader may tell the cache through its context.
type loadState struct {
	ttl atomic.Int64 // OverrideTTL; 0: the cache's own
	// addTags records tags for the load's keys (AddTags); nil for a cache
	// that cannot (none so far).
	addTags func(ctx context.Context, tags []string) error
	// untracked is set when AddTags failed: the result is cached nowhere.
	untracked atomic.Bool
}

// OverrideTTL sets the TTL of what the running load returns. Call it from
// a Loader or BulkLoader with the context the cache passed in; elsewhere it
// does nothing. The TTL applies to the value (or the "not found") the load
// returns, or, for a BulkLoad, to every key of the call; zero or negative
// means the cache's own (Options.TTL or Options.NegativeTTL). It is capped
// at Options.MaxTTL, and Options.Jitter and Options.Fresh scale with it
// (see Options.MaxTTL). The last call wins.
//
// It is rueidisaside's OverrideCacheTTL: a loader that reads an expiry
// from the source (a token's lifetime, a price valid until midnight) can
// cache the result for exactly as long.
func OverrideTTL(ctx context.Context, ttl time.Duration) {
	if st, ok := ctx.Value(loadKey{}).(*loadState); ok {
		st.ttl.Store(int64(ttl))
	}
}

// loaded is the outcome of one loader call.
type loaded[V any] struct {
	v   V
	err error
	ttl time.Duration // set by OverrideTTL; 0 means the cache's own
	// untracked: the loader's AddTags failed, so an invalidation of its
	// tags could miss the result: it must be cached nowhere.
	untracked bool
}

// outcome returns r to a flight.
func (r loaded[V]) outcome() outcome[V] {
	return outcome[V]{v: r.v, err: r.err, from: OriginLoader}
}

// runLoader runs load on a goroutine of its own with a context that ends
// after LoadTimeout, and returns what it returned, or, if it has not
// returned when that context ends (a loader that ignores its context), an
// error wrapping ErrLoadTimeout at once; the goroutine's result is then
// dropped when it comes. A panic becomes a *PanicError, and a loader
// goroutine that exits (runtime.Goexit) errAbandoned. The goroutine counts
// as running, so Close waits for it.
//
// op is OpLoad (keys is one key) or OpLoadMany: the span of the call, when
// the cache has a Tracer, ends when runLoader returns.
//
// ctx must not be cancellable before LoadTimeout other than by the cache:
// flights pass one without their callers' cancellation.
func (c *Cache[V]) runLoader(ctx context.Context, op Op, keys []string, load func(context.Context) (V, error)) (r loaded[V]) {
	c.stats.loads.Add(1)
	if c.o.Tracer != nil {
		key := ""
		if op == OpLoad {
			key = keys[0]
		}
		var end func(SpanEnd)
		ctx, end = c.startSpan(ctx, op, key, len(keys))
		defer func() { end(SpanEnd{Err: r.err}) }()
	}
	st := &loadState{addTags: func(ctx context.Context, tags []string) error { return c.addTags(ctx, keys, tags) }}
	lctx, cancel := context.WithTimeout(context.WithValue(ctx, loadKey{}, st), c.o.LoadTimeout)
	defer cancel() // only once the loader returned or LoadTimeout passed
	ch := make(chan loaded[V], 1)
	c.running.Add(1) // the caller is a running flight: the count is > 0
	go func() {
		defer c.running.Done()
		r := loaded[V]{err: errAbandoned}
		defer func() {
			if p := recover(); p != nil {
				r = loaded[V]{err: &PanicError{Value: p, Stack: debug.Stack()}}
			}
			ch <- r
		}()
		v, err := load(lctx)
		r = loaded[V]{v: v, err: err, ttl: time.Duration(st.ttl.Load()), untracked: st.untracked.Load()}
	}()
	select {
	case r = <-ch:
	case <-lctx.Done():
		r.err = lctx.Err()
		r.untracked = true // what the loader does from now on is not waited for
	}
	if r.err != nil && lctx.Err() != nil && errors.Is(r.err, context.DeadlineExceeded) {
		r.err = fmt.Errorf("%w after %v: %w", ErrLoadTimeout, c.o.LoadTimeout, r.err)
	}
	if r.err != nil && !errors.Is(r.err, ErrNotFound) && !errors.Is(r.err, ErrPassThrough) {
		c.stats.loadErrors.Add(1)
	}
	return r
}
