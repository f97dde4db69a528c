package tiered

import (
	"context"
	"log/slog"
	"time"
)

// This file is the cache's maintenance goroutine: the server check that
// must pass before Redis is read in a bus session, and the breaker's probe.
// New starts it; Close stops it.
//
// The server check. A Redis restarted from an RDB or AOF file, or a replica
// promoted by a failover, can bring back values that acknowledged writes
// had removed; no invalidation will ever come for them. The bus reads the
// server's run_id (INFO server) on every subscription, before it reports
// healthy, and exposes it as its session. Before this cache reads Redis in a
// session it compares the run_id with the namespace's run marker in Redis
// (l2.Store.CheckRun): a different run ID means the server changed since
// the namespace was last checked, and the namespace is purged. A missing
// marker (a new namespace, or a server that came back empty) is just set.
// Servers that report no run_id (miniredis, and Cluster clients, which have
// one per shard) are not checked.

// resyncTimeout bounds one server check, purge included.
const resyncTimeout = 30 * time.Second

func (c *Cache[V]) kickMaintenance() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Cache[V]) maintain() {
	defer close(c.maintDone)
	probe := time.NewTicker(c.o.BreakerCooldown)
	defer probe.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-c.kick:
		case <-probe.C:
		}
		if sess := c.bus.Session(); sess != nil && c.bus.Healthy() && c.synced.Load() != sess {
			c.resync(sess)
		}
		if !c.brk.allow() {
			ctx, cancel := context.WithTimeout(context.Background(), c.o.OpTimeout)
			c.l2Done("breaker probe", c.l2.Ping(ctx))
			cancel()
		}
	}
}

// resync checks the server of bus session sess (see above) and records
// that it was checked.
func (c *Cache[V]) resync(sess *string) {
	ctx, cancel := context.WithTimeout(context.Background(), resyncTimeout)
	defer cancel()
	go func() { // Close must not wait for a purge
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	if *sess != "" {
		purged, err := c.l2.CheckRun(ctx, *sess)
		c.l2Done("server check", err)
		if err != nil {
			return // the next kick or tick tries again; reads skip Redis meanwhile
		}
		if purged {
			c.stats.purges.Add(1)
			c.log.Log(slog.LevelWarn, "tiered: redis server changed since the namespace was last checked (restart with persistence, or failover): namespace purged", nil,
				slog.String("namespace", c.o.Namespace), slog.String("run_id", *sess))
		}
	}
	if !c.warned {
		c.warned = true
		if p := c.l2.Persistence(ctx); p != "" {
			c.log.Log(slog.LevelWarn, "tiered: redis persistence is on ("+p+"); a restart brings back values that later writes removed, and the cache purges its namespace when it sees one (docs/operations.md)", nil,
				slog.String("namespace", c.o.Namespace))
		}
	}
	c.syncMu.Lock()
	c.synced.Store(sess)
	close(c.syncedCh)
	c.syncedCh = make(chan struct{})
	c.syncMu.Unlock()
}

// waitSynced reports whether the bus is healthy and the cache has checked
// its current session, waiting for both at most OpTimeout (and ctx) if
// not: a read fails fast, and then falls through to the loader. A bus that
// has been down for longer than OpTimeout is not waited for at all: Redis
// is probably down with it, and every read would pay OpTimeout.
func (c *Cache[V]) waitSynced(ctx context.Context) bool {
	if sess := c.bus.Session(); sess != nil && c.bus.Healthy() && c.synced.Load() == sess {
		return true
	}
	if c.bus.DownFor() > c.o.OpTimeout {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, c.o.OpTimeout)
	defer cancel()
	for {
		if c.bus.WaitHealthy(ctx) != nil {
			return false
		}
		sess := c.bus.Session()
		c.syncMu.Lock()
		ok, ch := c.synced.Load() == sess, c.syncedCh
		c.syncMu.Unlock()
		if ok {
			return true
		}
		c.kickMaintenance()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-c.closing:
			return false
		}
	}
}
