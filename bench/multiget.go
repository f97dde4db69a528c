package main

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"time"
)

// The multiget workload: one node of every library at once (each its own
// namespace), reading -mgetkeys keys per call through GetMany (tiered
// GetMany; rueidis MGetCache; go-redis MGET; go-redis/cache, which has no
// batch read, a loop of Once), the libraries interleaved call by call so
// that the machine's noise hits all of them alike. Two cases:
//
//   - local warm: the same keys every call, read twice before measuring;
//   - local cold: every call reads keys that Redis holds (Prefill) and the
//     node has never read, as a node sees a page of items new to it.
//
// Figures: the p50 and the mean of a call's latency.

func runMultiget(ctx context.Context, e *env, rep *report) error {
	cfg := e.cfg
	if err := e.flush(ctx); err != nil {
		return err
	}
	src := newSource(0)
	nodes, err := openEach(ctx, cfg.kinds, e.addr, "mget")
	defer closeNodes(nodes)
	if err != nil {
		return err
	}
	batch := func(prefix string) []string {
		keys := make([]string, cfg.mgetKeys)
		for j := range keys {
			keys[j] = prefix + "-" + strconv.Itoa(j)
		}
		return keys
	}
	// Local warm: one batch, read twice first.
	warm := batch("w")
	cold := make([][]string, cfg.mgetIters)
	for it := range cold {
		cold[it] = batch("c" + strconv.Itoa(it))
	}
	for i, p := range nodes {
		for range 2 {
			if err := checkMany(p.GetMany(ctx, warm, src))(warm); err != nil {
				return fmt.Errorf("%s: warming: %w", cfg.kinds[i].name, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, keys := range cold {
			if err := p.Prefill(ctx, keys, src); err != nil {
				return fmt.Errorf("%s: prefill: %w", cfg.kinds[i].name, err)
			}
		}
	}
	loadsBefore := src.loads.Load()
	runtime.GC()
	for _, c := range []struct {
		name string
		keys func(it int) []string
	}{
		{"local warm", func(int) []string { return warm }},
		{"local cold, Redis warm", func(it int) []string { return cold[it] }},
	} {
		lats := make([][]time.Duration, len(nodes))
		for it := range cfg.mgetIters {
			keys := c.keys(it)
			for i, p := range nodes {
				start := time.Now()
				vals, err := p.GetMany(ctx, keys, src)
				lats[i] = append(lats[i], time.Since(start))
				if err := checkMany(vals, err)(keys); err != nil {
					return fmt.Errorf("%s %s: %w", cfg.kinds[i].name, c.name, err)
				}
			}
		}
		w := rep.row(fmt.Sprintf("%d-key multiget, %s", cfg.mgetKeys, c.name), "p50 / mean per call")
		w.chart = &chart{title: fmt.Sprintf("%d-key multiget, %s: p50 µs", cfg.mgetKeys, c.name), log: true, lowerBetter: true}
		for i, k := range cfg.kinds {
			p50, avg := quantile(lats[i], 0.5), mean(lats[i])
			logf("multiget %s %s: p50 %.1f µs mean %.1f µs", c.name, k.name, us(p50), us(avg))
			text := fmt.Sprintf("%s / %s", fmtLatency(p50), fmtLatency(avg))
			if k.name == "go-redis/cache" {
				text += " ²"
			}
			w.set(k.name, text, us(p50))
		}
	}
	rep.note("² go-redis/cache has no batch read: a loop of `Once`, one Redis round trip per key the local cache lacks.")
	if n := src.loads.Load() - loadsBefore; n != 0 {
		return fmt.Errorf("the loader ran %d times: a batch missed keys Redis held", n)
	}
	return nil
}

// checkMany returns a check that vals holds every one of keys.
func checkMany(vals map[string]Value, err error) func(keys []string) error {
	return func(keys []string) error {
		if err != nil {
			return err
		}
		for _, k := range keys {
			if vals[k].ID != k {
				return fmt.Errorf("key %q: got %+v", k, vals[k].ID)
			}
		}
		return nil
	}
}

func mean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}
