package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/cache/v9"
)

// The l1hit workload: a read of a key every library holds in its local
// cache, through the same call the other workloads use (tiered GetOrLoad,
// go-redis/cache Once, rueidis DoCache of a GET then json.Unmarshal; plain
// go-redis has no local cache, so its figure is a Redis GET and decode).
// Each node first reads -hitkeys keys three times, and every iteration
// reads the next of them. testing.Benchmark runs each function with its
// usual b.N ramp up to -benchtime and b.ReportAllocs; serial is one
// goroutine, parallel b.RunParallel (GOMAXPROCS goroutines). The libraries
// run interleaved, -rounds times, and the table gives each one's median
// ns/op and its allocs/op. allocs/op counts every allocation of the
// process during the run (testing's MemStats), background goroutines'
// included.
//
// tiered's L1 holds decoded values; the others hold bytes and decode them
// on every hit. So that a reader can tell the cache from the codec, each
// round also times decoding the value alone with the codec the library
// uses (go-redis/cache: its msgpack and s2 Unmarshal; rueidis and
// go-redis: encoding/json, as this program's adapters use).

// hitSink keeps the compiler from dropping the values read: each run adds
// the versions it read (a store per run, not per read, which would
// allocate).
var hitSink atomic.Int64

func runL1Hit(ctx context.Context, e *env, rep *report) error {
	cfg := e.cfg
	if err := e.flush(ctx); err != nil {
		return err
	}
	keys := make([]string, cfg.hitKeys)
	for i := range keys {
		keys[i] = "h" + strconv.Itoa(i)
	}
	src := newSource(0)
	nodes, err := openEach(ctx, cfg.kinds, e.addr, "hit-")
	defer closeNodes(nodes)
	if err != nil {
		return err
	}
	for i, k := range cfg.kinds {
		p := nodes[i]
		for range 3 {
			for _, key := range keys {
				if _, err := p.Get(ctx, key, src); err != nil {
					return fmt.Errorf("%s: warming: %w", k.name, err)
				}
			}
			time.Sleep(10 * time.Millisecond) // ristretto applies its buffered sets
		}
	}
	type res struct{ ns, allocs []float64 }
	serial := make([]res, len(cfg.kinds))
	parallel := make([]res, len(cfg.kinds))
	decoders := map[string]func(*testing.B){}
	decoded := map[string]*res{}
	for _, k := range cfg.kinds {
		if d := decodeBench(k.name); d != nil {
			decoders[k.name] = d
			decoded[k.name] = &res{}
		}
	}
	loadsBefore := src.loads.Load()
	for round := range cfg.rounds {
		for i, k := range cfg.kinds {
			for _, par := range []bool{false, true} {
				r, err := benchHit(ctx, nodes[i], keys, src, par)
				if err != nil {
					return fmt.Errorf("%s: %w", k.name, err)
				}
				dst := &serial[i]
				if par {
					dst = &parallel[i]
				}
				ns := float64(r.T.Nanoseconds()) / float64(r.N)
				dst.ns = append(dst.ns, ns)
				dst.allocs = append(dst.allocs, float64(r.AllocsPerOp()))
				logf("l1hit round %d %s parallel=%v: %.0f ns/op %d allocs/op (N=%d)", round, k.name, par, ns, r.AllocsPerOp(), r.N)
			}
			if d := decoders[k.name]; d != nil {
				r := testing.Benchmark(d)
				ns := float64(r.T.Nanoseconds()) / float64(r.N)
				decoded[k.name].ns = append(decoded[k.name].ns, ns)
				decoded[k.name].allocs = append(decoded[k.name].allocs, float64(r.AllocsPerOp()))
				logf("l1hit round %d %s decoding alone: %.0f ns/op %d allocs/op", round, k.name, ns, r.AllocsPerOp())
			}
		}
	}
	if n := src.loads.Load() - loadsBefore; n != 0 {
		return fmt.Errorf("the loader ran %d times during the hit benchmarks: a key left a local cache", n)
	}
	for _, par := range []bool{false, true} {
		label, rs := "warm L1 hit, serial", serial
		if par {
			label, rs = "warm L1 hit, parallel (GOMAXPROCS goroutines)", parallel
		}
		row := rep.row(label, "ns/op (allocs/op), median of rounds")
		row.chart = &chart{title: label + ": ns/op", log: true, lowerBetter: true}
		for i, k := range cfg.kinds {
			ns, allocs := median(rs[i].ns), median(rs[i].allocs)
			text := fmt.Sprintf("%s (%s)", num(ns), num(allocs))
			if !k.local {
				text += " ¹"
			}
			row.set(k.name, text, ns)
		}
	}
	dec := rep.row("of which: decoding the value alone", "ns/op (allocs/op), median of rounds")
	for _, k := range cfg.kinds {
		if d := decoded[k.name]; d != nil {
			dec.set(k.name, fmt.Sprintf("%s (%s)", num(median(d.ns)), num(median(d.allocs))), median(d.ns))
		} else {
			dec.setNone(k.name, "none: L1 holds decoded values", "")
		}
	}
	rep.note("¹ go-redis has no local cache: its \"hit\" is a Redis GET and a JSON decode.")
	return nil
}

// decodeBench returns a benchmark of decoding the value with the codec
// library's adapter uses, or nil for tiered (its L1 holds decoded values).
func decodeBench(library string) func(*testing.B) {
	v := Value{ID: "h1", Version: 1, Payload: payload}
	marshal, unmarshal := json.Marshal, json.Unmarshal
	switch library {
	case "tiered":
		return nil
	case "go-redis/cache":
		c := cache.New(&cache.Options{})
		marshal, unmarshal = c.Marshal, c.Unmarshal
	}
	b, err := marshal(v)
	if err != nil {
		panic(err)
	}
	return func(tb *testing.B) {
		tb.ReportAllocs()
		for tb.Loop() {
			var out Value
			if err := unmarshal(b, &out); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// benchHit runs one testing.Benchmark of p's hits.
func benchHit(ctx context.Context, p peer, keys []string, src *source, parallel bool) (testing.BenchmarkResult, error) {
	var mu sync.Mutex
	var failed error // guarded by mu: the first error of a read
	read := func(i int) int64 {
		v, err := p.Get(ctx, keys[i%len(keys)], src)
		if err != nil {
			mu.Lock()
			failed = cmp.Or(failed, err)
			mu.Unlock()
		}
		return v.Version
	}
	r := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		if !parallel {
			var i int
			var sum int64
			for b.Loop() {
				sum += read(i)
				i++
			}
			hitSink.Add(sum)
			return
		}
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(int64(len(keys) / 7))) // goroutines start apart
			var sum int64
			for pb.Next() {
				sum += read(i)
				i++
			}
			hitSink.Add(sum)
		})
	})
	if failed != nil {
		return r, failed
	}
	if r.N == 0 {
		return r, fmt.Errorf("benchmark did not run")
	}
	return r, nil
}

// median returns the median of xs (NaN for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
