package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

const (
	zipfS          = 1.1 // Zipf exponent of the reads: a few products are hot
	absentPermille = 10  // reads of products that do not exist, per thousand
	probeTimeout   = 3 * time.Second
	probeInterval  = 2 * time.Millisecond
	maxReported    = 10               // errors and stale reads printed in full
	recoverWithin  = 10 * time.Second // for the buses and outboxes to be back after the load
)

// driver drives load through the nodes and checks what they answer.
type driver struct {
	cfg     config
	out     *printer
	nodes   []*nodeProc
	proxies []nodeProxies // with -chaos, each node's fault proxies; else nil
	cat     *catalog      // the parent's handle on the database, for the final check
	redis   *redisServer
	http    *http.Client
	start   time.Time // of the load phase, for the times printed
	ns      string    // the nodes' product cache namespace, a label in /metrics

	acks        ackLog
	inflight    sync.WaitGroup // running writes
	probes      sync.WaitGroup // running probes
	conv        durations      // how long after the ack each probe of an acknowledged write converged
	convQueued  durations      // the same for writes whose invalidation was queued
	unconverged atomic.Uint64  // probes that never saw the version they wanted
	web         httpCounters   // the cached HTTP endpoints (httpprobe.go)

	reads           atomic.Uint64 // GETs answered 200, or 404 for an absent id
	writes          atomic.Uint64 // PUTs answered 200
	queued          atomic.Uint64 // of those, answered with the invalidation queued
	errors          atomic.Uint64 // failed requests and wrong answers
	stale           atomic.Uint64 // stale reads
	staleAfterError atomic.Uint64 // of those, stale only with respect to queued writes

	mu             sync.Mutex    // guards the fields below
	maxStale       time.Duration // largest lateness of a read after an acknowledged write
	maxStaleAt     time.Time     // when that read started
	maxStaleQueued time.Duration // largest lateness of a read after a queued write
	maxQueuedAt    time.Time     // when that read started
}

func newDriver(cfg config, out *printer, nodes []*nodeProc, proxies []nodeProxies, cat *catalog, rs *redisServer, ns string) *driver {
	return &driver{
		cfg: cfg, out: out, nodes: nodes, proxies: proxies, cat: cat, redis: rs, ns: ns,
		http: &http.Client{
			// Above the longest a read may wait for a lease left behind by
			// a Redis outage (LeaseTTL).
			Timeout:   15 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: max(cfg.Burst, cfg.Readers) + 16},
		},
	}
}

// close releases the driver's idle connections.
func (d *driver) close() { d.http.CloseIdleConnections() }

// run runs the cold burst, then the load for cfg.Duration (with the live
// table, and chaos if asked), then the final check, and returns the summary.
// It returns early with ctx's error when ctx is done.
func (d *driver) run(ctx context.Context) (summary, error) {
	burst, err := d.coldBurst(ctx)
	if err != nil {
		return summary{}, err
	}

	d.out.printf("load: %d readers (Zipf s=%.1f over %d products, %d‰ absent ids), %.0f writes/s, for %v",
		d.cfg.Readers, zipfS, d.cfg.Products, absentPermille, d.cfg.WriteRate, d.cfg.Duration)
	if d.cfg.Chaos {
		d.out.printf("chaos: every node reaches Redis through two fault proxies (cache, bus); %d faults follow", len(d.faults()))
	}
	base := d.snapshot(ctx, "")
	if err := base.firstErr(); err != nil {
		return summary{}, err
	}
	loadCtx, cancel := context.WithTimeout(ctx, d.cfg.Duration)
	defer cancel()
	start := time.Now()
	d.start = start
	var wg sync.WaitGroup
	for range d.cfg.Readers {
		wg.Go(func() { d.reader(loadCtx) })
	}
	for range d.cfg.HTTPReaders {
		wg.Go(func() { d.httpReader(loadCtx) })
	}
	wg.Go(func() { d.writer(ctx, loadCtx.Done()) })
	wg.Go(func() { d.monitor(loadCtx, start, base) })
	if d.cfg.Chaos {
		wg.Go(func() { d.chaos(ctx, loadCtx, start) })
	}
	wg.Wait()
	d.inflight.Wait() // before probes.Wait: writes start probes
	d.probes.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return summary{}, err
	}

	if err := d.waitRecovered(ctx); err != nil {
		return summary{}, err
	}
	if err := d.finalCheck(ctx); err != nil {
		return summary{}, err
	}
	if err := d.finalCheckHTTP(ctx); err != nil {
		return summary{}, err
	}
	final := d.snapshot(ctx, "")
	var keysQueued, delivered, dropped, opens uint64
	for i := range d.nodes {
		keysQueued += final.stats[i].Cache.Queued
		delivered += final.stats[i].Bus.Delivered
		dropped += final.stats[i].Bus.Dropped
		opens += final.stats[i].Cache.BreakerOpens
	}
	d.out.printf("writes: %d answered, %d with the invalidation queued (ErrQueued); outboxes: %d keys queued "+
		"(a key queued again while pending is one entry), %d delivered, %d dropped; breakers opened %d times",
		d.writes.Load(), d.queued.Load(), keysQueued, delivered, dropped, opens)
	d.mu.Lock()
	d.out.printf("lateness: largest %s after an acknowledged write%s (-bound %v); %s after a queued write%s (-error-bound %v)",
		ms(d.maxStale), d.at(d.maxStale, d.maxStaleAt), d.cfg.Bound,
		ms(d.maxStaleQueued), d.at(d.maxStaleQueued, d.maxQueuedAt), d.cfg.ErrorBound)
	d.mu.Unlock()
	n, q := d.conv.quantiles(0.5, 0.99, 1)
	nq, qq := d.convQueued.quantiles(1)
	d.out.printf("probe: %d (write, other node) pairs converged: p50 %s, p99 %s, max %s after the ack "+
		"(%d more after queued writes: max %s); %d never did",
		n, ms(q[0]), ms(q[1]), ms(q[2]), nq, ms(qq[0]), d.unconverged.Load())
	d.reportHTTP(final)
	d.reportMetrics(ctx, final)
	if !d.cfg.Quiet {
		d.out.printf("")
		d.out.printf("load phase totals (%v):", elapsed.Round(time.Millisecond))
		printTotals(d.out, d.nodes, base, final, elapsed)
	}
	s := d.summarize(final, burst)
	d.out.printf("%s", s)
	return s, nil
}

// fail counts an error and prints the first few.
func (d *driver) fail(format string, args ...any) {
	if d.errors.Add(1) <= maxReported {
		d.out.printf("ERROR: "+format, args...)
	}
}

// ms formats d in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
