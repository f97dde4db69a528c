package tiered

import (
	"context"
	"errors"
	"time"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/pubsub"
)

// This file is the cache's lifecycle after New: WaitReady, and Close and
// Shutdown, which may run while every other method does (see Shutdown).

// closeL1 stops L1, if there is one.
func (c *Cache[V]) closeL1() {
	if c.l1 != nil {
		c.l1.Close()
	}
}

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
