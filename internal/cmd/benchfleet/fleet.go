package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// runFleet runs the stampede and invalidate workloads, those of them that
// cfg selects, on one fleet of nodes over one redis-server; with -cluster,
// on a local Cluster instead, once with each bus mode.
func runFleet(ctx context.Context, cfg config) error {
	if cfg.cluster {
		return runClusterFleets(ctx, cfg)
	}
	srv, err := redistest.StartProcess()
	if err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "benchfleet: redis-server on %s, GOMAXPROCS=%d\n", srv.Addr, runtime.GOMAXPROCS(0))
	return runFleetOn(ctx, cfg, target{addrs: []string{srv.Addr}})
}

// runFleetOn runs the stampede and invalidate workloads on tg, prints
// their lines and compares them with the targets.
func runFleetOn(ctx context.Context, cfg config, tg target) error {
	nodes := make([]*node, 0, cfg.nodes)
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	for i := range cfg.nodes {
		n, err := newNode(ctx, i, tg, cfg)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}

	// Building the nodes allocated about 20 MB (mostly the ristretto caches'
	// admission counters); collect that garbage now, as testing.B does
	// before a benchmark runs, so that the cycle it would trigger does not
	// land in a measured stampede. Cycles that still do are counted.
	if cfg.setupGC {
		runtime.GC()
	}
	var (
		st  *stampedeResult
		inv *invalidateResult
	)
	if cfg.workloads["stampede"] {
		r, err := stampede(ctx, cfg, nodes)
		if err != nil {
			return fmt.Errorf("stampede: %w", err)
		}
		st = &r
		fmt.Printf("workload=stampede%s nodes=%d callers=%d keys=%d warmup_keys=%d loader_ms=%s loads_per_key_mean=%.2f loads_per_key_max=%d follower_p50_ms=%.2f follower_p99_ms=%.2f\n",
			tg.fields(), cfg.nodes, cfg.nodes*cfg.callers, cfg.keys, cfg.warmup, strconv.FormatFloat(msf(cfg.loader), 'f', -1, 64),
			st.loadsMean, st.loadsMax, msf(st.followerP50), msf(st.followerP99))
	}

	if cfg.workloads["invalidate"] {
		r, err := invalidate(ctx, cfg, nodes, tg)
		if err != nil {
			return fmt.Errorf("invalidate: %w", err)
		}
		inv = &r
		fmt.Printf("workload=invalidate%s nodes=%d trials=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f stale_after_2s=%d ryw_stale=%d publish_p99_ms=%.2f reload_p99_ms=%.2f\n",
			tg.fields(), cfg.nodes, cfg.trials, msf(inv.p50), msf(inv.p99), msf(inv.max), inv.staleAfter2s, inv.rywStale, msf(inv.publishP99), msf(inv.reloadP99))
	}

	report(cfg, st, inv, nodes)
	if inv != nil && inv.unconverged > 0 {
		return fmt.Errorf("invalidate: %d reads never saw the new version within %v", inv.unconverged, convergeLimit)
	}
	return nil
}

// report compares the figures of the workloads that ran (st, inv: nil if
// not) with the targets, on stderr.
func report(cfg config, st *stampedeResult, inv *invalidateResult, nodes []*node) {
	if st != nil {
		fmt.Fprintf(os.Stderr, "benchfleet: stampede: loads_per_key_max=%d (target 1): %s\n",
			st.loadsMax, verdict(st.loadsMax == 1))
		lim := cfg.loader + 5*time.Millisecond
		fmt.Fprintf(os.Stderr, "benchfleet: stampede: follower_p99=%.2fms (target ≤ loader+5ms = %.2fms): %s; follower max=%.2fms, leader p50=%.2fms\n",
			msf(st.followerP99), msf(lim), verdict(st.followerP99 <= lim), msf(st.followerMax), msf(st.leaderP50))
	}
	if inv != nil {
		budget := 2*inv.publishP99 + inv.reloadP99
		fmt.Fprintf(os.Stderr, "benchfleet: invalidate: p99=%.2fms (target ≤ 2×publish_p99 + one reload = 2×%.2f + %.2f = %.2fms; one reload = p99 of a cold GetOrLoad measured in this run, PING p99 %.2fms): %s\n",
			msf(inv.p99), msf(inv.publishP99), msf(inv.reloadP99), msf(budget), msf(inv.rttP99), verdict(inv.p99 <= budget))
		fmt.Fprintf(os.Stderr, "benchfleet: invalidate: stale_after_2s=%d ryw_stale=%d (targets 0): %s; publish p50=%.2fms max=%.2fms; flip-backs after convergence=%d\n",
			inv.staleAfter2s, inv.rywStale, verdict(inv.staleAfter2s == 0 && inv.rywStale == 0),
			msf(inv.publishP50), msf(inv.publishMax), inv.flipBacks)
	}
	for _, n := range nodes {
		s, b := n.cache.Stats(), n.bus.Stats()
		fmt.Fprintf(os.Stderr, "benchfleet: node %d: cache %+v bus %+v\n", n.id, s, b)
	}
}
