package tiered

import (
	"bytes"
	"context"
	"math"

	"github.com/tieredcache/tiered/l1"
)

// This file is fail-safe: serving a value that expired when the loader
// cannot give a fresh one (Options.MaxStale, Options.SoftTimeout).

// ReadInfo reports how a read was served, for a caller that wants to know.
// Put a pointer to one in the read's context with WithReadInfo; GetOrLoad,
// GetMany, Get and GetManyCached fill it in before they return. One ReadInfo
// serves one read at a time.
//
// A read that served an expired value returns it with a nil error (that is
// the point of fail-safe: callers carry on), so ReadInfo and Stats.StaleServed
// are how a service notices, for example to mark a response as stale.
type ReadInfo struct {
	// Stale lists the keys the read answered with an expired value
	// through fail-safe (see Options.MaxStale), in no particular order.
	Stale []string
	// StaleCause is why the first of them was served stale: the loader's
	// error, or an error wrapping ErrLoadTimeout or ErrSoftTimeout.
	StaleCause error
}

type readInfoKey struct{}

// WithReadInfo returns a context that makes a read fill in info.
func WithReadInfo(ctx context.Context, info *ReadInfo) context.Context {
	return context.WithValue(ctx, readInfoKey{}, info)
}

// noteStale records in ctx's ReadInfo, if any, that key was served stale.
func noteStale(ctx context.Context, key string, cause error) {
	info, ok := ctx.Value(readInfoKey{}).(*ReadInfo)
	if !ok || info == nil {
		return
	}
	if info.StaleCause == nil {
		info.StaleCause = cause
	}
	info.Stale = append(info.Stale, key)
}

// staleCandidate returns f if fail-safe may serve it: MaxStale is on and f
// is a value, not a "not found" nor the zero found of a corrupt read.
func (c *Cache[V]) staleCandidate(f found[V]) *found[V] {
	if c.o.MaxStale <= 0 || f.e == nil || f.env.Negative {
		return nil
	}
	return &f
}

// serveStale answers a flight whose load failed (cause) with stale, an
// expired value read from Redis, if Redis still holds exactly those bytes:
// a Set or a Delete since would have replaced or removed them, and fail-safe
// never serves a value that a write invalidated, only one that expired.
// Without that confirmation (Redis failed too) the flight fails with cause.
//
// A stale value served goes into L1, marked, for FailSafeThrottle: the
// callers of the next FailSafeThrottle get it from there instead of calling
// a failing loader again. The fill guard keeps it out if an invalidation of
// key came after t, the ticket taken before stale was read.
func (c *Cache[V]) serveStale(ctx context.Context, t l1.Ticket, key string, stale *found[V], cause error) outcome[V] {
	raw, err := c.l2.Get(ctx, key)
	c.l2Done("fail-safe check", err)
	if err != nil || !bytes.Equal(raw, stale.raw) {
		return outcome[V]{err: cause}
	}
	if c.o.FailSafeThrottle > 0 {
		m := metaOf(stale.env)
		m.stale, m.refresh = cause, math.MaxInt64
		c.fill(t, key, stale.e.v, m, len(raw), c.o.FailSafeThrottle)
	}
	return outcome[V]{v: stale.e.v, stale: cause, from: OriginStale}
}

// servedStale counts a call answered with an expired value and tells its
// ReadInfo.
func (c *Cache[V]) servedStale(ctx context.Context, key string, cause error) {
	c.stats.staleServed.Add(1)
	noteStale(ctx, key, cause)
}
