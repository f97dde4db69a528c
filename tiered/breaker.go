package tiered

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/l2"
)

// The breaker makes a Redis that is known to be down cost nothing per read.
// After Options.BreakerFailures consecutive Redis failures (network errors,
// timeouts, "not now" replies such as LOADING; a miss or a rejected command
// is not a failure) it opens: reads skip Redis and go to the loader, writes
// go to the outbox. While it is open the cache's maintenance goroutine
// probes Redis with a PING every Options.BreakerCooldown; the first answer
// closes it. Any Redis call that succeeds meanwhile (the outbox delivering,
// a probe) closes it too.
//
// A breaker is safe for concurrent use. Its state is two atomics; a closed
// breaker costs a read one atomic load.
type breaker struct {
	threshold int64
	fails     atomic.Int64 // consecutive failures
	open      atomic.Bool
	openedAt  atomic.Int64 // mono time of the last opening
}

// allow reports whether a Redis call may be made now.
func (b *breaker) allow() bool { return !b.open.Load() }

// success records a call that Redis answered and closes the breaker; it
// reports whether the breaker was open.
func (b *breaker) success() bool {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	return b.open.Load() && b.open.CompareAndSwap(true, false)
}

// failure records a failed call and reports whether it opened the breaker.
func (b *breaker) failure() bool {
	if b.fails.Add(1) < b.threshold || b.open.Load() {
		return false
	}
	if b.open.CompareAndSwap(false, true) {
		b.openedAt.Store(mono.Now())
		return true
	}
	return false
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
