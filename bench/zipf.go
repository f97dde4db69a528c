package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The zipf workload: -zipfg goroutines on one node each make -zipfreads
// reads of keys drawn from a Zipf distribution (math/rand/v2, exponent
// -zipfs, over -zipfkeys keys), through Get (local cache, Redis, then the
// loader, which sleeps -zipfload). Every library reads the same keys in
// the same order (each goroutine's generator has a fixed seed), so all
// meet the same first reads of each key; a run of fixed length would give
// a faster library more reads of keys it already holds. Each run starts on
// an empty server and a new node (empty local cache); with Redis warm the
// library's own encoding of every key is written first (Prefill, not
// measured), with Redis cold nothing is. Figures: reads per second (all
// reads over the time the last goroutine took), the p99 of a read's
// latency (a histogram with 3% buckets), the loader calls, and the CPU time
// per read of this process and of redis-server (cpu.go): with every core
// busy, throughput follows it. Nothing is excluded: the local cache fills
// during the run.

func runZipf(ctx context.Context, e *env, rep *report) error {
	cfg := e.cfg
	keys := make([]string, cfg.zipfKeys)
	for i := range keys {
		keys[i] = "z" + strconv.Itoa(i)
	}
	for _, warm := range []bool{true, false} {
		mode := "Redis cold"
		if warm {
			mode = "Redis warm"
		}
		ops := rep.row("Zipf, "+mode, "reads/s (p99 latency); loader calls")
		ops.chart = &chart{title: "Zipf, " + mode + ": reads/s"}
		cpu := rep.row("Zipf, "+mode, "CPU per read: this process + redis-server")
		for _, k := range cfg.kinds {
			r, err := zipfRun(ctx, e, k, keys, warm)
			if err != nil {
				return fmt.Errorf("%s %s: %w", k.name, mode, err)
			}
			logf("zipf %s %s: %.0f reads/s p50 %.1f µs p99 %.1f µs loads %d errors %d; CPU per read: process %.1f µs, redis-server %.1f µs",
				mode, k.name, r.rate, us(r.p50), us(r.p99), r.loads, r.errors, r.cpuProc/1e3, r.cpuRedis/1e3)
			text := fmt.Sprintf("%s/s (%s); %s", num(r.rate), fmtLatency(r.p99), num(float64(r.loads)))
			if r.errors > 0 {
				text += fmt.Sprintf("; **%d errors**", r.errors)
			}
			ops.set(k.name, text, r.rate)
			cpu.set(k.name, fmt.Sprintf("%s + %s µs", num(r.cpuProc/1e3), num(r.cpuRedis/1e3)), (r.cpuProc+r.cpuRedis)/1e3)
		}
	}
	return nil
}

type zipfResult struct {
	rate          float64
	p50, p99      time.Duration
	loads, errors int64
	// CPU per read, ns: this process's (the readers, the library's
	// goroutines, the runtime) and redis-server's.
	cpuProc, cpuRedis float64
}

func zipfRun(ctx context.Context, e *env, k kind, keys []string, warm bool) (zipfResult, error) {
	cfg := e.cfg
	var res zipfResult
	if err := e.flush(ctx); err != nil {
		return res, err
	}
	src := newSource(cfg.zipfLoad)
	p, err := k.open(ctx, e.addr, "zipf")
	if err != nil {
		return res, err
	}
	defer p.Close()
	if warm {
		if err := p.Prefill(ctx, keys, src); err != nil {
			return res, fmt.Errorf("prefill: %w", err)
		}
	}
	loadsBefore := src.loads.Load()
	runtime.GC()
	meter := cpuMeter{admin: e.admin}
	cpu0 := meter.read(ctx)
	hists := make([]hist, cfg.zipfGoroutines)
	var reads, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := range cfg.zipfGoroutines {
		wg.Go(func() {
			z := rand.NewZipf(rand.New(rand.NewPCG(1, uint64(g))), cfg.zipfS, 1, uint64(len(keys)-1))
			h := &hists[g]
			var n, failed int64
			now := time.Now()
			for range cfg.zipfReads {
				key := keys[z.Uint64()]
				_, err := p.Get(ctx, key, src)
				end := time.Now()
				h.add(end.Sub(now))
				n++
				if err != nil {
					failed++
				}
				now = end
				if ctx.Err() != nil {
					break
				}
			}
			reads.Add(n)
			errs.Add(failed)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := meter.read(ctx).sub(cpu0)
	logDiagnostics("zipf "+k.name, p)
	var all hist
	for i := range hists {
		all.merge(&hists[i])
	}
	res.rate = float64(reads.Load()) / elapsed.Seconds()
	res.p50, res.p99 = all.quantile(0.5), all.quantile(0.99)
	res.loads = src.loads.Load() - loadsBefore
	res.errors = errs.Load()
	n := float64(reads.Load())
	res.cpuProc, res.cpuRedis = float64(cpu.proc.Nanoseconds())/n, float64(cpu.redis.Nanoseconds())/n
	if !cpu.procOK {
		res.cpuProc = math.NaN()
	}
	return res, nil
}

// fmtLatency formats a latency with its unit: ns, µs, ms or s.
func fmtLatency(d time.Duration) string {
	switch {
	case d >= time.Second:
		return num(d.Seconds()) + " s"
	case d < time.Microsecond:
		return num(float64(d)) + " ns"
	case d < time.Millisecond:
		return num(us(d)) + " µs"
	default:
		return num(ms(d)) + " ms"
	}
}

// fmtDur formats a parameter's duration: "10 min", "1 s", "50 ms", "50 µs".
func fmtDur(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return num(d.Minutes()) + " min"
	}
	return fmtLatency(d)
}
