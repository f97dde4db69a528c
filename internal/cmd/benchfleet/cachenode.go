package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/tiered"
)

// This file holds what the multiget, hotexpiry, dbdown and http workloads
// share: a node of any value type, a redis-server per run, and (hotexpiry,
// dbdown) a pair of runs with an option off and on.

// cacheNode is one node of the multiget, hotexpiry and dbdown workloads:
// its own client (ContextTimeoutEnabled, as a tiered user is told to
// configure it), bus and cache; nodes share nothing but the server.
type cacheNode[V any] struct {
	rdb   *redis.Client
	bus   *tiered.Bus
	cache *tiered.Cache[V]
}

// newCacheNode builds a node on addr with opts (its Bus is set here) and
// waits until its cache is ready.
func newCacheNode[V any](ctx context.Context, addr string, opts tiered.Options) (*cacheNode[V], error) {
	n := &cacheNode[V]{rdb: faultClient(addr)}
	var err error
	if n.bus, err = tiered.NewBus(n.rdb, nil); err != nil {
		n.close()
		return nil, err
	}
	opts.Bus = n.bus
	if n.cache, err = tiered.New[V](n.rdb, &opts); err != nil {
		n.close()
		return nil, err
	}
	if err := waitUpTo(ctx, nodeReadyTimeout, n.cache.WaitReady); err != nil {
		n.close()
		return nil, fmt.Errorf("node never ready: %w", err)
	}
	return n, nil
}

// nodeReadyTimeout bounds how long a new node of any workload may take to
// become ready.
const nodeReadyTimeout = 10 * time.Second

// waitUpTo calls wait (a node's WaitReady or WaitHealthy) with ctx
// bounded by d.
func waitUpTo(ctx context.Context, d time.Duration, wait func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return wait(wctx)
}

func (n *cacheNode[V]) close() {
	if n.cache != nil {
		n.cache.Close()
	}
	if n.bus != nil {
		n.bus.Close()
	}
	n.rdb.Close()
}

// newCacheNodes builds count nodes on addr with opts; close them with
// closeNodes, also when it fails.
func newCacheNodes[V any](ctx context.Context, addr string, count int, opts tiered.Options) ([]*cacheNode[V], error) {
	nodes := make([]*cacheNode[V], 0, count)
	for i := range count {
		n, err := newCacheNode[V](ctx, addr, opts)
		if err != nil {
			return nodes, fmt.Errorf("node %d: %w", i, err)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// statsOf returns each node's cache Stats now: the baseline a workload
// subtracts from its final figures.
func statsOf[V any](nodes []*cacheNode[V]) []tiered.Stats {
	s := make([]tiered.Stats, len(nodes))
	for i, n := range nodes {
		s[i] = n.cache.Stats()
	}
	return s
}

func closeNodes[V any](nodes []*cacheNode[V]) {
	for _, n := range nodes {
		n.close()
	}
}

// withServer runs f on a redis-server started for it and stopped when f
// returns, after collecting the garbage of earlier runs.
func withServer(what string, f func(addr string) error) error {
	srv, err := redistest.StartProcess()
	if err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "benchfleet: %s: redis-server on %s, GOMAXPROCS=%d\n", what, srv.Addr, runtime.GOMAXPROCS(0))
	runtime.GC()
	return f(srv.Addr)
}

// offOn runs a workload twice, each on a redis-server of its own: with
// its option off (0), then on (the value on). run prints the run's line;
// it returns the run's missed targets (a figure the workload checks) and
// its error (the run itself failed). offOn reports the missed targets of
// both runs together, after both ran.
func offOn(ctx context.Context, workload, option string, on time.Duration, run func(addr, name string, d time.Duration) (missed, err error)) error {
	var failed []error
	for _, d := range []time.Duration{0, on} {
		name := map[bool]string{false: "off", true: "on"}[d > 0]
		var missed error
		err := withServer(workload+" "+option+"="+name, func(addr string) error {
			var err error
			missed, err = run(addr, name, d)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s %s=%s: %w", workload, option, name, err)
		}
		if missed != nil {
			failed = append(failed, missed)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s: %w", workload, errors.Join(failed...))
	}
	return nil
}
