package main

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"time"
)

// The invalidate workload: two nodes of one library, a writer and a
// reader, both holding the key in their local caches (each read it three
// times). The reader reads the key in a loop, pausing -poll between reads
// (pause_linux.go: a nanosleep, which lasts about 110 µs for 50 µs here). The writer
// bumps the key in the source and calls Invalidate (tiered Delete,
// go-redis/cache Delete, a DEL for rueidis and go-redis), then reads the
// key at once on its own node: an old value there is a read-your-write
// violation. The propagation time runs from just before Invalidate to the
// end of the reader's first read that returned the new value. A reader
// gives up after -invcap; a library whose first three trials all reach it
// stops there (go-redis/cache: nothing tells the reader's local cache, so
// it serves the old value until its local TTL).

func runInvalidate(ctx context.Context, e *env, rep *report) error {
	cfg := e.cfg
	w := rep.row("invalidation reaches another node", "p50 / p99 from the write's start; trials seen / run")
	w.chart = &chart{title: "invalidation: p99 to another node, µs", lowerBetter: true}
	ryw := rep.row("read-your-write on the writer", "reads of the old value right after the write returned")
	for _, k := range cfg.kinds {
		r, err := invalidateRun(ctx, e, k)
		if err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		logf("invalidate %s: seen %d/%d p50 %.3f ms p99 %.3f ms ryw violations %d; the write itself p50 %.3f ms", k.name, r.seen, r.trials, ms(r.p50), ms(r.p99), r.ryw, ms(r.writeP50))
		switch {
		case r.seen == 0:
			text := fmt.Sprintf("never within %s: 0 / %d", fmtDur(cfg.invCap), r.trials)
			if !k.invalidates {
				text += fmt.Sprintf(" (no cross-node invalidation: the old value until the local TTL, %s)", fmtDur(localTTL))
			}
			note := fmt.Sprintf("never within %s", fmtDur(cfg.invCap))
			if !k.invalidates {
				note += ": no cross-node invalidation"
			}
			w.setNone(k.name, text, note)
		default:
			text := fmt.Sprintf("%s / %s; %d / %d", fmtLatency(r.p50), fmtLatency(r.p99), r.seen, r.trials)
			w.set(k.name, text, us(r.p99))
		}
		ryw.set(k.name, fmt.Sprintf("%d / %d", r.ryw, r.trials), float64(r.ryw))
	}
	return nil
}

type invResult struct {
	trials, seen, ryw int
	p50, p99          time.Duration
	writeP50          time.Duration // the writer's Invalidate call
}

func invalidateRun(ctx context.Context, e *env, k kind) (invResult, error) {
	cfg := e.cfg
	var res invResult
	if err := e.flush(ctx); err != nil {
		return res, err
	}
	src := newSource(0)
	nodes, err := openNodes(ctx, k, e.addr, "inv", 2)
	defer closeNodes(nodes)
	if err != nil {
		return res, err
	}
	writer, reader := nodes[0], nodes[1]
	runtime.GC()
	var lats, writes []time.Duration
	for t := range cfg.trials {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		key := "i" + strconv.Itoa(t)
		for range 3 {
			for _, p := range nodes {
				if _, err := p.Get(ctx, key, src); err != nil {
					return res, err
				}
			}
			time.Sleep(time.Millisecond) // ristretto applies its buffered sets
		}
		want := int64(2) // the version the writer's Bump makes
		seen := make(chan time.Time, 1)
		started := make(chan struct{})
		go func() {
			deadline := time.Now().Add(cfg.invCap + 100*time.Millisecond)
			close(started)
			for time.Now().Before(deadline) {
				v, err := reader.Get(ctx, key, src)
				now := time.Now()
				if err == nil && v.Version >= want {
					seen <- now
					return
				}
				pause(cfg.poll)
			}
			seen <- time.Time{}
		}()
		<-started
		time.Sleep(time.Millisecond) // the reader reads the old value a few times
		if v := src.Bump(key); v != want {
			return res, fmt.Errorf("bump made version %d, want %d", v, want)
		}
		start := time.Now()
		if err := writer.Invalidate(ctx, key); err != nil {
			return res, err
		}
		writes = append(writes, time.Since(start))
		if v, err := writer.Get(ctx, key, src); err != nil {
			return res, err
		} else if v.Version < want {
			res.ryw++
		}
		res.trials++
		if at := <-seen; !at.IsZero() && at.Sub(start) <= cfg.invCap {
			res.seen++
			lats = append(lats, at.Sub(start))
		}
		if res.trials == 3 && res.seen == 0 {
			break
		}
	}
	logDiagnostics("invalidate "+k.name+" writer", writer)
	logDiagnostics("invalidate "+k.name+" reader", reader)
	res.p50, res.p99 = quantile(lats, 0.5), quantile(lats, 0.99)
	res.writeP50 = quantile(writes, 0.5)
	return res, nil
}
