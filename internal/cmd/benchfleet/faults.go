package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/tiered"
)

// The faults workload: readers and writers on every node while Redis and
// the network misbehave, and a checker that counts the reads that returned
// a version older than a write acknowledged long enough before them.
//
// Each run starts its own redis-server and builds -nodes fresh nodes for it
// (own client with ContextTimeoutEnabled, own bus, own L1, default
// Options: MaxStaleness 100ms, WriteTimeout 1s, breaker on). The last node's
// bus has a client of its own that reaches Redis through a faultproxy; its
// cache reads and writes Redis directly.
//
// The database is an in-memory version per key (faultDB), which every
// node's loader reads. On each node faultReadersPerNode readers call
// GetOrLoad on Zipf-distributed keys out of faultKeys, paced (-pace before
// each read) or flat out, and one writer, faultWritesPerSec/nodes times a
// second, bumps the version of a Zipf-distributed key in the database and
// then calls Delete on its node. A writer skips the ticks it misses while a
// Delete blocks (up to WriteTimeout during a pause) or while it waits for
// a CPU, so writes_s, the measured rate, is below faultWritesPerSec.
//
// Faults, at fractions of the run's length d (20s by default):
//
//	d/6        the silent node's bus: the proxy goes Silent for silenceFor
//	           (2s), then its connections are cut and it forwards new ones
//	           (with -silenceresume, it forwards the silenced ones again)
//	d/3        CLIENT KILL TYPE pubsub, then CLIENT KILL TYPE normal
//	d/2        CLIENT PAUSE 1000 WRITE
//	2d/3       CLIENT PAUSE 1000 ALL
//
// and the last sixth is recovery.
//
// Why the silenced connections are cut when the silence ends: a TCP
// connection delivers its bytes in order, all of them, or breaks. One that
// went silent and comes back (a partition that heals) delivers what it held
// (faultproxy's Frozen); one that never comes back (a dead NAT entry) is
// reset once anything reaches the other end. Forwarding again after
// dropping bytes, as Resume does, makes a stream with a hole in it, which
// no TCP connection can: messages lost without a gap the bus could see.
// The library's proof of freshness assumes the subscription's stream has
// no hole (a PONG vouches for every message sent before it), so with
// -silenceresume the node serves from L1 the values of writes invalidated
// during the silence whenever the bus did not replace the connection
// within the silence (it replaces one silent for two health intervals, 2s,
// and later when its goroutine waits for a CPU, as with flat-out readers
// on 2 cores); the flag is there to show that.
//
// The checker, and the figures it counts, are described in faultcheck.go;
// the database in faultdb.go, a node in faultnode.go, the injection in
// faultinject.go.

const (
	minFaultDur         = 12 * time.Second
	faultNamespace      = "faults"
	faultKeys           = 2000
	faultReadersPerNode = 4
	faultWritesPerSec   = 100
	faultZipfS          = 1.1 // P(key k) ∝ (1+k)^-s: the hottest key gets 1 read or write in 6, the 20 hottest over half
	staleBound          = 100 * time.Millisecond
	errorBound          = time.Second
	silenceFor          = 2 * time.Second
	sampleEvery         = 5 * time.Millisecond
)

// faultResult is what one fault run counted.
type faultResult struct {
	elapsed     time.Duration
	reads       int64
	readErrors  int64
	writes      int64
	writeErrors int64 // errors that do not wrap ErrQueued
	queued      int64 // Deletes that returned ErrQueued
	firstErrs   []string

	old, stale100, staleErr1s int
	maxStaleness              time.Duration // see faultcheck.go
	worst                     int           // index in reads of the read with maxStaleness; -1
	maxOverwriteAge           time.Duration // against the oldest missed acknowledged write
	staleIdx                  []int         // reads counted in stale100 or staleErr1s

	breakerOpens, l1Hits, outboxed uint64
	pingsPerSec                    []float64
}

// runFaults runs the faults workload once per reader mode and prints a
// line for each. It returns an error if a run could not be made, or if a
// run counted stale reads or errors.
func runFaults(ctx context.Context, cfg config) error {
	// go-redis logs every connection it drops, and the faults make it drop
	// many; the library's own reports go to stderr with -v.
	redis.SetLogger(quietRedisLog{verbose: cfg.verbose})
	var failed []string
	for _, mode := range cfg.faultReaders {
		r, err := faults(ctx, cfg, mode)
		if err != nil {
			return fmt.Errorf("faults readers=%s: %w", mode, err)
		}
		pings := make([]string, len(r.pingsPerSec))
		for i, p := range r.pingsPerSec {
			pings[i] = fmt.Sprintf("%.1f", p)
		}
		hitRatio := 0.0
		if r.reads > 0 {
			hitRatio = float64(r.l1Hits) / float64(r.reads)
		}
		fmt.Printf("workload=faults readers=%s nodes=%d readers_per_node=%d keys=%d duration_s=%.1f stale_100ms=%d stale_after_error_1s=%d max_staleness_ms=%.2f reads_s=%.0f writes_s=%.1f read_errors=%d write_errors=%d queued_writes=%d outboxed_keys=%d breaker_opens=%d l1_hit_ratio=%.3f pings_s=%s\n",
			mode, cfg.nodes, faultReadersPerNode, faultKeys, r.elapsed.Seconds(),
			r.stale100, r.staleErr1s, msf(r.maxStaleness), float64(r.reads)/r.elapsed.Seconds(), float64(r.writes)/r.elapsed.Seconds(),
			r.readErrors, r.writeErrors, r.queued, r.outboxed, r.breakerOpens, hitRatio, strings.Join(pings, "/"))
		ok := r.stale100 == 0 && r.staleErr1s == 0
		fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: stale_100ms=%d stale_after_error_1s=%d (targets 0): %s\n",
			mode, r.stale100, r.staleErr1s, verdict(ok))
		if !ok {
			failed = append(failed, fmt.Sprintf("readers=%s: %d reads stale at %v after an acknowledged write, %d reads stale at %v after a failed one",
				mode, r.stale100, staleBound, r.staleErr1s, errorBound))
		}
		if r.readErrors > 0 || r.writeErrors > 0 {
			failed = append(failed, fmt.Sprintf("readers=%s: %d read errors, %d write errors (not ErrQueued); first: %s",
				mode, r.readErrors, r.writeErrors, strings.Join(r.firstErrs, "; ")))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("faults: %s", strings.Join(failed, "; "))
	}
	return nil
}

// quietRedisLog drops go-redis's log lines unless verbose.
type quietRedisLog struct{ verbose bool }

func (l quietRedisLog) Printf(_ context.Context, format string, v ...any) {
	if l.verbose {
		fmt.Fprintf(os.Stderr, "benchfleet: go-redis: "+format+"\n", v...)
	}
}

// faults makes one fault run with readers in mode ("paced" or "flat").
func faults(ctx context.Context, cfg config, mode string) (faultResult, error) {
	res := faultResult{worst: -1}
	srv, err := redistest.StartProcess()
	if err != nil {
		return res, fmt.Errorf("starting redis-server: %w", err)
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: redis-server on %s, GOMAXPROCS=%d, %v\n",
		mode, srv.Addr, runtime.GOMAXPROCS(0), cfg.faultDur)

	admin := faultClient(srv.Addr)
	defer admin.Close()
	nodes, err := newFaultNodes(ctx, cfg, srv.Addr)
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	if err != nil {
		return res, err
	}
	silent := nodes[len(nodes)-1]
	fr := newFaultRun(cfg, nodes)
	runtime.GC() // the nodes' setup garbage, as in the other workloads

	before := make([]tiered.Stats, len(nodes))
	pingsBefore := make([]uint64, len(nodes))
	for i, n := range nodes {
		before[i], pingsBefore[i] = n.cache.Stats(), n.bus.Stats().Pings
	}
	fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: seed %d\n", mode, fr.seed)
	fr.base = time.Now()
	var wg sync.WaitGroup
	fr.start(ctx, &wg, mode == "paced")
	wg.Go(func() { fr.events = injectFaults(ctx, fr.stopCh, fr.base, cfg, admin, silent) })

	select {
	case <-time.After(time.Until(fr.base.Add(cfg.faultDur))):
	case <-ctx.Done():
	}
	fr.stop.Store(true)
	res.elapsed = time.Since(fr.base)
	close(fr.stopCh)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}

	fr.tally(&res, mode, before, pingsBefore)
	all := slices.Concat(fr.olds...)
	check(&res, fr.db, all)
	explain(mode, &res, fr.db, all, fr.samples, fr.events)
	return res, nil
}
