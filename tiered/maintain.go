package tiered

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file is the cache's maintenance goroutine: the server check that
// must pass before Redis is read in a bus session, and the breaker's probe.
// New starts it; Close stops it.
//
// The server check. A Redis restarted from an RDB or AOF file, or a replica
// promoted by a failover, can bring back values that acknowledged writes
// had removed; no invalidation will ever come for them. Before this cache
// reads Redis in a bus session, and again after the client opened any new
// connection, the maintenance goroutine reads the server's run_id (INFO
// server) and compares it with the namespace's run marker in Redis
// (l2.Store.CheckRun): a different run ID means the server changed since
// the namespace was last checked, and the namespace is purged. A missing
// marker (a new namespace, or a server that came back empty) is just set.
// On a Cluster every master has a run ID and a marker of its own, in a slot
// it serves (l2.Store.CheckShards), and a master that changed (a replica
// promoted by a failover) has its part of the namespace purged. Servers
// that report no run_id (miniredis) are not checked.
//
// Why new connections too: after a restart every connection is new, and a
// pool connection can reach the restarted server before the bus goroutine
// has seen its own connection drop (it may be starved of CPU, or its
// connection may hang). A dial hook counts the client's connections; a
// read that saw one since the last check waits for the next, and a read
// during which one was made discards what it read.

// dialCounter is a go-redis hook that counts successful dials.
type dialCounter struct{ n *atomic.Uint64 }

func (d dialCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err == nil {
			d.n.Add(1)
		}
		return conn, err
	}
}

func (d dialCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (d dialCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// checked reports whether the current bus session and every connection
// made so far have been checked.
func (c *Cache[V]) checked(sess uint64) bool {
	return sess != 0 && c.synced.Load() == sess && c.checkedDials.Load() == c.dials.Load()
}

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
		if sess := c.bus.Session(); sess != 0 && c.bus.Healthy() && !c.checked(sess) {
			c.resync(sess)
		}
		if !c.brk.allow() {
			ctx, cancel := context.WithTimeout(context.Background(), c.o.OpTimeout)
			c.l2Done("breaker probe", c.l2.Ping(ctx))
			cancel()
		}
	}
}

// resync checks the server (see above) and records that bus session sess,
// and the connections made before the check began, were checked.
func (c *Cache[V]) resync(sess uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), resyncTimeout)
	defer cancel()
	go func() { // Close must not wait for a purge
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	dials := c.dials.Load()
	runID, err := c.l2.RunID(ctx)
	c.l2Done("server check", err)
	if err != nil {
		return // the next kick or tick tries again; reads skip Redis meanwhile
	}
	if runID != "" {
		purged, err := c.l2.CheckRun(ctx, runID)
		c.l2Done("server check", err)
		if err != nil {
			return
		}
		if purged {
			c.stats.purges.Add(1)
			c.log.Log(slog.LevelWarn, "tiered: redis server changed since the namespace was last checked (restart with persistence, or failover): namespace purged", nil,
				slog.String("namespace", c.o.Namespace), slog.String("run_id", runID))
		}
	}
	// On a Cluster, one marker per master (the run ID above is "").
	n, err := c.l2.CheckShards(ctx)
	c.l2Done("server check", err)
	if n > 0 {
		c.stats.purges.Add(uint64(n))
		c.log.Log(slog.LevelWarn, "tiered: a Redis Cluster master changed since the namespace was last checked (failover, or restart with persistence): its part of the namespace purged", nil,
			slog.String("namespace", c.o.Namespace), slog.Int("masters", n))
	}
	if err != nil {
		return
	}
	if !c.warned {
		c.warned = true
		if p := c.l2.Persistence(ctx); p != "" {
			c.warn("tiered: redis persistence is on (" + p + "); a restart brings back values that later writes removed, and the cache purges its namespace when it sees one (docs/operations.md)")
		}
	}
	c.syncMu.Lock()
	c.synced.Store(sess)
	c.checkedDials.Store(dials)
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
	if c.bus.Healthy() && c.checked(c.bus.Session()) {
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
		c.syncMu.Lock()
		ok, ch := c.checked(c.bus.Session()), c.syncedCh
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
