package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The driver's load: a cold burst of reads of one product, readers of
// Zipf-distributed products, and a writer whose every answered write starts
// probes of the other nodes.

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
	d.pollOthers(ctx, writer, ackAt, func(n *nodeProc) func(context.Context) bool {
		return func(ctx context.Context) bool { return d.read(ctx, n, want.ID).Version >= want.Version }
	}, conv.add, &d.unconverged)
}

// pollOthers polls every node but writer, in parallel, every probeInterval
// for up to probeTimeout: newPoll(n) returns node n's poll, one read that
// reports whether n shows the write answered at ackAt. When a poll says
// it does, converged gets how long after ackAt that read started; each
// node that never does counts in unconverged.
func (d *driver) pollOthers(ctx context.Context, writer *nodeProc, ackAt time.Time, newPoll func(n *nodeProc) func(context.Context) bool, converged func(time.Duration), unconverged *atomic.Uint64) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range d.nodes {
		if n == writer {
			continue
		}
		poll := newPoll(n)
		wg.Go(func() {
			for {
				start := time.Now()
				if poll(ctx) {
					converged(max(start.Sub(ackAt), 0))
					return
				}
				t := time.NewTimer(probeInterval)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					unconverged.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
}
