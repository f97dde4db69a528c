package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The faults workload: -nodes nodes of one library; node 0 writes (bumps a
// random key in the source, then Invalidate) -faultwrites times a second,
// and -faultreaders goroutines on each other node read random keys
// (uniform over -faultkeys), sleeping -pace between reads, for -faultdur.
// At a third of the run an admin client sends CLIENT PAUSE -pause (all
// commands of every other client wait). A write is acknowledged when
// Invalidate returned nil; a read is stale if the version it returned is
// older than a write acknowledged more than -stalebound before the read
// began. Every read is checked against the log of acknowledged writes.
// Figures: stale reads (and all reads), the largest staleness (read start
// minus the acknowledgement of the oldest write the read missed), and the
// writes that returned an error (not acknowledged, so not held against
// any read).

func runFaults(ctx context.Context, e *env, rep *report) error {
	cfg := e.cfg
	w := rep.row(fmt.Sprintf("staleness under CLIENT PAUSE %s", fmtDur(cfg.pause)),
		fmt.Sprintf("stale reads (> %s) / reads; max staleness; writes that returned an error / writes", fmtDur(cfg.staleBound)))
	w.chart = &chart{title: fmt.Sprintf("CLIENT PAUSE: reads stale > %s", fmtDur(cfg.staleBound)), log: true, lowerBetter: true}
	for _, k := range cfg.kinds {
		r, err := faultsRun(ctx, e, k)
		if err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		logf("faults %s: stale %d / %d reads, max staleness %.1f ms, writes %d (failed %d), read errors %d",
			k.name, r.stale, r.reads, ms(r.maxStale), r.writes, r.writeErrs, r.readErrs)
		maxStale := "none"
		if r.maxStale > 0 {
			maxStale = fmtLatency(r.maxStale)
		}
		text := fmt.Sprintf("%s / %s; %s; %d / %d", num(float64(r.stale)), num(float64(r.reads)), maxStale, r.writeErrs, r.writes)
		if r.readErrs > 0 {
			text += fmt.Sprintf("; %d read errors", r.readErrs)
		}
		if !k.invalidates {
			text += " (no cross-node invalidation)"
		}
		w.set(k.name, text, float64(r.stale))
	}
	return nil
}

type faultResult struct {
	reads, stale, readErrs int64
	writes, writeErrs      int
	maxStale               time.Duration
}

// ack is an acknowledged write: the version it made and when Invalidate
// returned.
type ack struct {
	version int64
	at      time.Time
}

// writeLog holds the acknowledged writes of every key, in version order.
type writeLog struct {
	mu   sync.Mutex
	acks map[string][]ack // guarded by mu
}

func (l *writeLog) add(key string, a ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acks[key] = append(l.acks[key], a)
}

// staleness returns how long before start the oldest acknowledged write of
// key newer than version was acknowledged (0 if none was).
func (l *writeLog) staleness(key string, version int64, start time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.acks[key] {
		if a.version > version {
			if d := start.Sub(a.at); d > 0 {
				return d
			}
			return 0
		}
	}
	return 0
}

func faultsRun(ctx context.Context, e *env, k kind) (faultResult, error) {
	cfg := e.cfg
	var res faultResult
	if err := e.flush(ctx); err != nil {
		return res, err
	}
	src := newSource(0)
	nodes, err := openNodes(ctx, k, e.addr, "faults", cfg.nodes)
	defer closeNodes(nodes)
	if err != nil {
		return res, err
	}
	keys := make([]string, cfg.faultKeys)
	for i := range keys {
		keys[i] = "f" + strconv.Itoa(i)
	}
	for _, p := range nodes {
		for _, key := range keys {
			if _, err := p.Get(ctx, key, src); err != nil {
				return res, fmt.Errorf("warming: %w", err)
			}
		}
	}
	runtime.GC()
	log := &writeLog{acks: map[string][]ack{}}
	rctx, cancel := context.WithTimeout(ctx, cfg.faultDur)
	defer cancel()
	var wg sync.WaitGroup
	var reads, stale, readErrs atomic.Int64
	var maxStale atomic.Int64
	for n := 1; n < len(nodes); n++ {
		for g := range cfg.faultReaders {
			p := nodes[n]
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(n), uint64(g)))
				for rctx.Err() == nil {
					key := keys[r.IntN(len(keys))]
					start := time.Now()
					v, err := p.Get(ctx, key, src)
					reads.Add(1)
					if err != nil {
						readErrs.Add(1)
					} else if d := log.staleness(key, v.Version, start); d > 0 {
						if d > cfg.staleBound {
							stale.Add(1)
						}
						for old := maxStale.Load(); int64(d) > old && !maxStale.CompareAndSwap(old, int64(d)); old = maxStale.Load() {
						}
					}
					time.Sleep(cfg.pace)
				}
			})
		}
	}
	wg.Go(func() {
		r := rand.New(rand.NewPCG(0, 0))
		interval := time.Second / time.Duration(cfg.faultWrites)
		next := time.Now()
		for rctx.Err() == nil {
			key := keys[r.IntN(len(keys))]
			v := src.Bump(key)
			err := nodes[0].Invalidate(ctx, key)
			res.writes++
			if err != nil {
				res.writeErrs++
			} else {
				log.add(key, ack{version: v, at: time.Now()})
			}
			// Aim at the rate; after a write that waited out the pause,
			// go on from now rather than catch up in a burst.
			if next = next.Add(interval); next.Before(time.Now()) {
				next = time.Now()
			}
			time.Sleep(time.Until(next))
		}
	})
	var pauseErr error
	wg.Go(func() {
		select {
		case <-time.After(cfg.faultDur / 3):
		case <-rctx.Done():
			return
		}
		ms := strconv.FormatInt(cfg.pause.Milliseconds(), 10)
		pauseErr = e.admin.Do(ctx, "CLIENT", "PAUSE", ms, "ALL").Err()
	})
	wg.Wait()
	if pauseErr != nil {
		return res, fmt.Errorf("CLIENT PAUSE: %w", pauseErr)
	}
	// Let the pause end (if the run was shorter) before the next library.
	time.Sleep(max(0, cfg.pause-cfg.faultDur*2/3))
	for i, p := range nodes {
		logDiagnostics(fmt.Sprintf("faults %s node %d", k.name, i), p)
	}
	res.reads, res.stale, res.readErrs = reads.Load(), stale.Load(), readErrs.Load()
	res.maxStale = time.Duration(maxStale.Load())
	return res, nil
}
