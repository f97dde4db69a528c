package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
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

// coldBurst sends cfg.Burst concurrent GETs of one product through every
// node at once, and returns how many times the fleet loaded it from the
// database, as counted by the nodes' loaders.
func (d *driver) coldBurst(ctx context.Context) (uint64, error) {
	id := int64(d.cfg.Products) // the least popular product: nobody read it yet
	key := strconv.FormatInt(id, 10)
	before := d.snapshot(ctx, key)
	if err := before.firstErr(); err != nil {
		return 0, err
	}
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range d.nodes {
		for range d.cfg.Burst {
			wg.Go(func() {
				<-gate
				d.read(ctx, n, id)
			})
		}
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	took := time.Since(t0)
	after := d.snapshot(ctx, key)
	if err := after.firstErr(); err != nil {
		return 0, err
	}
	var loads, waits uint64
	for i := range d.nodes {
		loads += after.stats[i].KeyLoads - before.stats[i].KeyLoads
		waits += after.stats[i].Cache.LeaseWaits - before.stats[i].Cache.LeaseWaits
	}
	d.out.printf("cold burst: %d concurrent GETs of product %d through %d nodes in %v: %d database load(s), %d lease wait(s)",
		len(d.nodes)*d.cfg.Burst, id, len(d.nodes), took.Round(time.Millisecond), loads, waits)
	return loads, nil
}

// reader reads Zipf-distributed products through random nodes until ctx is
// done.
func (d *driver) reader(ctx context.Context) {
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	z := rand.NewZipf(r, zipfS, 1, uint64(d.cfg.Products-1))
	for ctx.Err() == nil {
		id := int64(z.Uint64()) + 1
		if r.IntN(1000) < absentPermille {
			id = int64(d.cfg.Products + 1 + r.IntN(100))
		}
		d.read(ctx, d.nodes[r.IntN(len(d.nodes))], id)
	}
}

// read GETs product id through n, checks the answer, and returns the
// product (zero when absent or on error).
func (d *driver) read(ctx context.Context, n *nodeProc, id int64) Product {
	start := time.Now()
	var p Product
	status, err := d.do(ctx, n, http.MethodGet, "/products/"+strconv.FormatInt(id, 10), nil, &p)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			d.fail("%s GET product %d: %v", n.name, id, err)
		}
		return Product{}
	case status == http.StatusNotFound && id > int64(d.cfg.Products):
		d.reads.Add(1)
		return Product{}
	case status != http.StatusOK || p.ID != id:
		d.fail("%s GET product %d: status %d, id %d", n.name, id, status, p.ID)
		return Product{}
	}
	d.reads.Add(1)
	d.checkVia(n, "", p, start)
	return p
}

// checkVia judges a read of p through n that started at start, counts it
// if it was stale, and reports whether it was. via names the request when
// it was not a GET /products/{id}.
func (d *driver) checkVia(n *nodeProc, via string, p Product, start time.Time) bool {
	done, queued := d.acks.lateness(p.ID, p.Version, start)
	if done > 0 || queued > 0 {
		d.mu.Lock()
		if done > d.maxStale {
			d.maxStale, d.maxStaleAt = done, start
		}
		if queued > d.maxStaleQueued {
			d.maxStaleQueued, d.maxQueuedAt = queued, start
		}
		d.mu.Unlock()
	}
	staleDone, staleQueued := done > d.cfg.Bound, queued > d.cfg.ErrorBound
	if !staleDone && !staleQueued {
		return false
	}
	c := d.stale.Add(1)
	if !staleDone {
		d.staleAfterError.Add(1)
	}
	if c <= maxReported {
		what := fmt.Sprintf("%s after a newer version was acknowledged", ms(done))
		if !staleDone {
			what = fmt.Sprintf("%s after a write of a newer version returned with its invalidation queued", ms(queued))
		}
		if via != "" {
			via = " (" + via + ")"
		}
		d.out.printf("STALE: a read through %s%s started at %s returned version %d of product %d %s",
			n.name, via, start.Sub(d.start).Round(time.Millisecond), p.Version, p.ID, what)
	}
	return true
}

// writer changes the price of a Zipf-distributed product through a random
// node, cfg.WriteRate times a second, until done is closed, without waiting
// for one write to end before the next begins. Each write runs to its end
// on ctx and starts a probe.
func (d *driver) writer(ctx context.Context, done <-chan struct{}) {
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	z := rand.NewZipf(r, zipfS, 1, uint64(d.cfg.Products-1))
	tick := time.NewTicker(time.Duration(float64(time.Second) / d.cfg.WriteRate))
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, id, price := d.nodes[r.IntN(len(d.nodes))], int64(z.Uint64())+1, 100+r.Int64N(10000)
		d.inflight.Go(func() { d.write(ctx, n, id, price) })
	}
}

// write PUTs a new price for product id through n and, once answered,
// logs the new version (acknowledged, or with its invalidation queued) and
// probes the other nodes for it.
func (d *driver) write(ctx context.Context, n *nodeProc, id, price int64) {
	body, _ := json.Marshal(map[string]int64{"price": price})
	var a putAnswer
	status, err := d.do(ctx, n, http.MethodPut, "/products/"+strconv.FormatInt(id, 10), body, &a)
	ackAt := time.Now()
	if err != nil || status != http.StatusOK {
		if ctx.Err() == nil {
			d.fail("%s PUT product %d: status %d, %v", n.name, id, status, err)
		}
		return
	}
	d.writes.Add(1)
	if a.InvalidationQueued {
		d.queued.Add(1)
	}
	d.acks.add(id, a.Version, ackAt, a.InvalidationQueued)
	d.probes.Go(func() { d.probe(ctx, n, a.Product, ackAt, a.InvalidationQueued) })
	d.probes.Go(func() { d.probeHTTP(ctx, n, a.Product, ackAt, a.InvalidationQueued) })
}

// probe reads want through every node but the writer, every probeInterval,
// until each returns want's version or a newer one, and records how long
// after the answer that read started.
func (d *driver) probe(ctx context.Context, writer *nodeProc, want Product, ackAt time.Time, queued bool) {
	conv := &d.conv
	if queued {
		conv = &d.convQueued
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range d.nodes {
		if n == writer {
			continue
		}
		wg.Go(func() {
			for {
				start := time.Now()
				p := d.read(ctx, n, want.ID)
				if p.Version >= want.Version {
					conv.add(max(start.Sub(ackAt), 0))
					return
				}
				t := time.NewTimer(probeInterval)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					d.unconverged.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
}

// finalCheck waits until -bound has passed since the last acknowledgment
// and -error-bound since the last write answered with its invalidation
// queued, then reads every written product through every node and compares
// it with the database. A node answering an older version than the
// database is a stale read, even if no answer said so (a write that failed
// after its commit).
func (d *driver) finalCheck(ctx context.Context) error {
	ids, lastDone, lastQueued := d.acks.written()
	if wait := time.Until(later(lastDone.Add(d.cfg.Bound), lastQueued.Add(d.cfg.ErrorBound))); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	behind := 0
	for _, id := range ids {
		want, err := d.cat.get(ctx, id)
		if err != nil {
			return fmt.Errorf("final check: %w", err)
		}
		for _, n := range d.nodes {
			start := time.Now()
			p := d.read(ctx, n, id)
			if p.ID == 0 || p.Version >= want.Version {
				continue
			}
			behind++
			if done, queued := d.acks.lateness(p.ID, p.Version, start); done > d.cfg.Bound || queued > d.cfg.ErrorBound {
				continue // read counted it as stale already
			}
			if d.stale.Add(1) <= maxReported {
				d.out.printf("STALE: %s returned version %d of product %d; the database has version %d",
					n.name, p.Version, id, want.Version)
			}
		}
	}
	d.out.printf("final check: %d written products read through %d nodes: %d reads behind the database",
		len(ids), len(d.nodes), behind)
	return nil
}

// waitRecovered waits up to recoverWithin for every node's invalidation bus
// to be subscribed and its outbox empty (after -chaos a bus may still be
// reconnecting, an outbox delivering), and fails the run for each node
// that is not. It returns ctx's error if ctx ends.
func (d *driver) waitRecovered(ctx context.Context) error {
	deadline := time.Now().Add(recoverWithin)
	for {
		s := d.snapshot(ctx, "")
		var down []string
		for i, n := range d.nodes {
			switch {
			case s.errs[i] != nil:
				down = append(down, fmt.Sprintf("%s: %v", n.name, s.errs[i]))
			case !s.stats[i].BusHealthy:
				down = append(down, n.name+": invalidation bus down")
			case s.stats[i].Bus.Pending > 0:
				down = append(down, fmt.Sprintf("%s: %d invalidations in the outbox", n.name, s.stats[i].Bus.Pending))
			}
		}
		if len(down) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, why := range down {
				d.fail("%s, %v after the load", why, recoverWithin)
			}
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// fail counts an error and prints the first few.
func (d *driver) fail(format string, args ...any) {
	if d.errors.Add(1) <= maxReported {
		d.out.printf("ERROR: "+format, args...)
	}
}

// do sends one request to n and decodes a 200 answer's JSON into v.
func (d *driver) do(ctx context.Context, n *nodeProc, method, path string, body []byte, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+n.addr+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode >= 500 {
			return resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
		}
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return resp.StatusCode, fmt.Errorf("decoding answer: %w", err)
	}
	return resp.StatusCode, nil
}

// snapshot is every node's /stats at one time.
type snapshot struct {
	at    time.Time
	stats []nodeStats
	errs  []error
}

func (s snapshot) firstErr() error {
	return errors.Join(s.errs...)
}

// snapshot fetches every node's /stats (with ?key=key when key is not
// empty) in parallel.
func (d *driver) snapshot(ctx context.Context, key string) snapshot {
	s := snapshot{stats: make([]nodeStats, len(d.nodes)), errs: make([]error, len(d.nodes))}
	path := "/stats"
	if key != "" {
		path += "?key=" + key
	}
	var wg sync.WaitGroup
	for i, n := range d.nodes {
		wg.Go(func() { s.stats[i], s.errs[i] = d.nodeStats(ctx, n, path) })
	}
	wg.Wait()
	s.at = time.Now()
	return s
}

// nodeStats fetches one node's /stats at path (with a query, maybe).
func (d *driver) nodeStats(ctx context.Context, n *nodeProc, path string) (nodeStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var s nodeStats
	status, err := d.do(ctx, n, http.MethodGet, path, nil, &s)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d", status)
	}
	if err != nil {
		return s, fmt.Errorf("%s %s: %w", n.name, path, err)
	}
	return s, nil
}

// at says when a read late by late started, relative to the load phase.
func (d *driver) at(late time.Duration, start time.Time) string {
	if late == 0 {
		return ""
	}
	return fmt.Sprintf(" by a read at %.1fs", start.Sub(d.start).Seconds())
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
