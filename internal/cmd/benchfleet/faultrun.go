package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// faultRun is what the goroutines of one fault run share: its readers,
// one writer and one sampler per node, and the injector.
type faultRun struct {
	cfg        config
	nodes      []*faultNode
	db         *faultDB
	seed       uint64
	writeEvery time.Duration // between two writes of a node's writer
	base       time.Time     // the run's start; every time is since base

	stop   atomic.Bool   // set to stop the readers
	stopCh chan struct{} // closed to stop the writers, the samplers and the injector

	// By reader, each written by its reader only.
	reads, readErrs []int64
	olds            [][]oldRead
	samples         [][]sample // by node, each written by its sampler
	events          []event    // written by the injector; read after the run

	writes, writeErrs, queued atomic.Int64

	errMu     sync.Mutex // guards firstErrs
	firstErrs []string
}

func newFaultRun(cfg config, nodes []*faultNode) *faultRun {
	nr := len(nodes) * faultReadersPerNode
	return &faultRun{
		cfg: cfg, nodes: nodes, db: newFaultDB(),
		seed:       uint64(time.Now().UnixNano()),
		writeEvery: time.Duration(len(nodes)) * time.Second / faultWritesPerSec,
		stopCh:     make(chan struct{}),
		reads:      make([]int64, nr),
		readErrs:   make([]int64, nr),
		olds:       make([][]oldRead, nr),
		samples:    make([][]sample, len(nodes)),
	}
}

// noteErr keeps the first few errors, for the run's failure message.
func (fr *faultRun) noteErr(s string) {
	fr.errMu.Lock()
	defer fr.errMu.Unlock()
	if len(fr.firstErrs) < 3 {
		fr.firstErrs = append(fr.firstErrs, s)
	}
}

// start starts the readers, writers and samplers of every node on wg.
func (fr *faultRun) start(ctx context.Context, wg *sync.WaitGroup, paced bool) {
	nr := len(fr.nodes) * faultReadersPerNode
	for ni, n := range fr.nodes {
		for r := range faultReadersPerNode {
			ri := ni*faultReadersPerNode + r
			z := rand.NewZipf(rand.New(rand.NewPCG(fr.seed, uint64(ri))), faultZipfS, 1, faultKeys-1)
			wg.Go(func() { fr.reader(ctx, n, ri, r, z, paced) })
		}
		wg.Go(func() {
			z := rand.NewZipf(rand.New(rand.NewPCG(fr.seed, uint64(nr+ni))), faultZipfS, 1, faultKeys-1)
			fr.writer(ctx, n, ni, z)
		})
		wg.Go(func() { fr.sampler(n, ni) })
	}
}

// reader is reader r of node n (ri among all readers): it reads keys drawn
// from z until the run stops, and keeps the reads that returned a version
// below the database's.
func (fr *faultRun) reader(ctx context.Context, n *faultNode, ri, r int, z *rand.Zipf, paced bool) {
	var nreads, nerrs int64
	var old []oldRead
	for !fr.stop.Load() {
		if paced {
			time.Sleep(fr.cfg.pace)
		}
		k := int(z.Uint64())
		key := fr.db.names[k]
		start := time.Since(fr.base)
		v, err := n.cache.GetOrLoad(ctx, key, fr.db)
		end := time.Since(fr.base)
		nreads++
		if err == nil && v.Key != key {
			err = fmt.Errorf("got %+v for %s", v, key)
		}
		if err != nil {
			nerrs++
			fr.noteErr(fmt.Sprintf("node %d read %s at %.1fms: %v", n.id, key, msf(start), err))
			continue
		}
		if v.Version < fr.db.versions[k].Load() {
			old = append(old, oldRead{
				key: int32(k), node: int16(n.id), reader: int8(r), version: v.Version,
				start: start, end: end, healthy: n.bus.Healthy(), proofAge: n.bus.ProofAge(),
			})
		}
	}
	fr.reads[ri], fr.readErrs[ri], fr.olds[ri] = nreads, nerrs, old
}

// writer is node n's writer (the ni-th): every writeEvery, phased by node,
// it bumps a key drawn from z in the database, calls Delete and logs the
// write, until the run stops.
func (fr *faultRun) writer(ctx context.Context, n *faultNode, ni int, z *rand.Zipf) {
	phase := time.NewTimer(time.Duration(ni) * fr.writeEvery / time.Duration(len(fr.nodes)))
	select {
	case <-phase.C:
	case <-fr.stopCh:
		phase.Stop()
		return
	}
	tick := time.NewTicker(fr.writeEvery)
	defer tick.Stop()
	for {
		k := int(z.Uint64())
		v := fr.db.versions[k].Add(1)
		err := n.cache.Delete(ctx, fr.db.names[k])
		ret := time.Since(fr.base)
		fr.db.logWrite(k, writeRec{version: v, ret: ret, node: n.id, err: err})
		fr.writes.Add(1)
		switch {
		case errors.Is(err, tiered.ErrQueued):
			fr.queued.Add(1)
		case err != nil:
			fr.writeErrs.Add(1)
			fr.noteErr(fmt.Sprintf("node %d Delete %s at %.1fms: %v", n.id, fr.db.names[k], msf(ret), err))
		}
		select {
		case <-tick.C:
		case <-fr.stopCh:
			return
		}
	}
}

// sampler records node n's state (the ni-th) every sampleEvery until the
// run stops, for the traces.
func (fr *faultRun) sampler(n *faultNode, ni int) {
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		s, bs := n.cache.Stats(), n.bus.Stats()
		fr.samples[ni] = append(fr.samples[ni], sample{
			at: time.Since(fr.base), healthy: n.bus.Healthy(), proofAge: n.bus.ProofAge(), pending: bs.Pending,
			l1Hits: s.L1Hits, l1Unproven: s.L1Unproven, resets: s.Resets, invalidations: s.Invalidations,
			breakerOpen: s.BreakerOpens, l2Errors: s.L2Errors,
		})
		select {
		case <-tick.C:
		case <-fr.stopCh:
			return
		}
	}
}

// tally adds the run's counts to res, the nodes' counters since before
// and pingsBefore among them, and prints the nodes' counters and the
// faults injected on stderr.
func (fr *faultRun) tally(res *faultResult, mode string, before []tiered.Stats, pingsBefore []uint64) {
	for ri := range fr.reads {
		res.reads += fr.reads[ri]
		res.readErrors += fr.readErrs[ri]
	}
	res.writes, res.writeErrors, res.queued = fr.writes.Load(), fr.writeErrs.Load(), fr.queued.Load()
	res.firstErrs = fr.firstErrs
	for i, n := range fr.nodes {
		s, bs := n.cache.Stats(), n.bus.Stats()
		res.breakerOpens += s.BreakerOpens - before[i].BreakerOpens
		res.l1Hits += s.L1Hits - before[i].L1Hits
		res.outboxed += s.Queued - before[i].Queued
		res.pingsPerSec = append(res.pingsPerSec, float64(bs.Pings-pingsBefore[i])/res.elapsed.Seconds())
		fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: node %d: cache %+v bus %+v\n", mode, n.id, s, bs)
	}
	for _, e := range fr.events {
		fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: fault at %8.1fms (done %8.1fms): %s: %s\n",
			mode, msf(e.at), msf(e.done), e.what, e.result)
	}
}
