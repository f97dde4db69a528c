package tiered

import "context"

// A Loader loads the value of a key from the source of truth (a database, a
// service) when neither tier has it.
//
// Load runs once per key per process at a time (singleflight), and, while
// Redis is healthy, once per key per fleet (the lease). Its context carries
// the values of the first caller's context but not its cancellation, and it
// is cancelled after Options.LoadTimeout. Return ErrNotFound (or an error
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
