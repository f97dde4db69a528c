package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/internal/stats"
	"github.com/tieredcache/tiered/tiered"
)

// convergeLimit bounds how long a reader polls for the new version before
// the trial counts it as never converged (a failure of the run).
const convergeLimit = 10 * time.Second

// staleWindow: a read of the old version later than this after the Delete is
// counted in stale_after_2s.
const staleWindow = 2 * time.Second

type invalidateResult struct {
	p50, p99, max          time.Duration
	staleAfter2s           int64
	rywStale               int
	flipBacks              int64
	unconverged            int
	publishP50, publishP99 time.Duration
	publishMax             time.Duration
	rttP99                 time.Duration
	reloadP99              time.Duration // a cold GetOrLoad: Redis miss, lease, load, fill
}

// invalidateRun holds the samples of the invalidate workload's trials.
type invalidateRun struct {
	cfg   config
	nodes []*node
	src   *source
	probe *publishProbe

	res                     invalidateResult
	lat, pubLat, rtt        []time.Duration
	staleAfter2s, flipBacks atomic.Int64 // counted by the readers
	lastDelete              time.Time
	keys                    []string
	warmTime                time.Duration
	byPath                  map[string][]time.Duration
	delivery                []time.Duration            // Delete returned → reader's bus handled the invalidation
	afterDelivery           map[string][]time.Duration // handled → reader converged, by path
	writerReload            []time.Duration            // the writer's own read after Delete
}

// invalidate runs cfg.trials trials. In each, on a fresh key, every node
// holds the key in L1; node A (rotating) bumps the source version and calls
// Delete; A reads the key at once (read-your-writes), while every other node
// polls GetOrLoad until it returns the new version. The latency of a reader
// runs from Delete's return to the read that returned the new version.
//
// Between trials, on separate clients, it measures a raw PUBLISH → receive
// latency and a PING round trip, so that the baseline is taken in the same
// run and under the same conditions.
//
// After the last trial it waits until staleWindow has passed since the last
// Delete and reads every trial key on every node once more: any old version
// then is counted in stale_after_2s too (a late stale fill of L1 or Redis).
func invalidate(ctx context.Context, cfg config, nodes []*node, tg target) (invalidateResult, error) {
	probe, err := newPublishProbe(ctx, tg)
	if err != nil {
		return invalidateResult{}, err
	}
	defer probe.close()
	r := &invalidateRun{
		cfg: cfg, nodes: nodes, src: &source{versions: map[string]int64{}}, probe: probe,
		byPath: map[string][]time.Duration{}, afterDelivery: map[string][]time.Duration{},
	}
	for trial := range cfg.trials {
		if err := ctx.Err(); err != nil {
			return r.res, err
		}
		if err := r.trial(ctx, trial); err != nil {
			return r.res, err
		}
		if err := r.baseline(ctx); err != nil {
			return r.res, err
		}
		if (trial+1)%50 == 0 {
			fmt.Fprintf(os.Stderr, "benchfleet: invalidate: %d/%d trials\n", trial+1, cfg.trials)
		}
	}
	fmt.Fprintf(os.Stderr, "benchfleet: invalidate: warming L1 took %v in total\n", r.warmTime.Round(time.Millisecond))
	sweepStale, err := r.sweep(ctx)
	if err != nil {
		return r.res, err
	}
	r.sort()
	r.printPaths()
	return r.result(sweepStale), nil
}

// trialReader is what one reader of a trial saw.
type trialReader struct {
	n    *node
	lat  time.Duration // from Delete's return to the read of the new version
	ok   bool          // it read the new version within convergeLimit
	path string        // how it got it: see reloadPath
	err  error
}

// trialDelete is the writer's Delete of a trial, as its readers see it.
type trialDelete struct {
	key  string
	newV int64         // the version the Delete makes current
	t0   time.Time     // when Delete returned
	done chan struct{} // closed once newV and t0 are set
}

// trial runs trial number i on a fresh key: see invalidate.
func (r *invalidateRun) trial(ctx context.Context, i int) error {
	key := fmt.Sprintf("inv-%d", i)
	r.keys = append(r.keys, key)
	r.src.set(key, 1)
	w0 := time.Now()
	for _, n := range r.nodes {
		if err := warmL1(ctx, n, key, r.src); err != nil {
			return err
		}
	}
	r.warmTime += time.Since(w0)

	a := r.nodes[i%len(r.nodes)]
	readers := make([]*trialReader, 0, len(r.nodes)-1)
	for _, n := range r.nodes {
		if n != a {
			readers = append(readers, &trialReader{n: n})
		}
	}
	// tctx stops the readers early when the trial fails.
	tctx, tcancel := context.WithCancel(ctx)
	del := &trialDelete{key: key, done: make(chan struct{})}
	var wg, ready sync.WaitGroup
	for _, rd := range readers {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			r.read(tctx, del, rd, &ready)
		}()
	}
	ready.Wait()

	del.newV = r.src.bump(key)
	if err := a.cache.Delete(ctx, key); err != nil {
		tcancel()
		close(del.done)
		wg.Wait()
		return fmt.Errorf("node %d: Delete: %w", a.id, err)
	}
	del.t0 = time.Now()
	close(del.done)
	r.lastDelete = del.t0
	v, err := a.cache.GetOrLoad(ctx, key, r.src)
	r.writerReload = append(r.writerReload, time.Since(del.t0))
	if err != nil {
		tcancel()
		wg.Wait()
		return fmt.Errorf("node %d: read after own Delete: %w", a.id, err)
	}
	if v.Version < del.newV {
		r.res.rywStale++
	}
	wg.Wait()
	tcancel()
	return r.collect(del, readers)
}

// read is a reader of a trial: it waits for the Delete, then reads until it
// gets the new version (or convergeLimit passes), then reads a few times
// more to catch a flip back to the old version.
func (r *invalidateRun) read(tctx context.Context, del *trialDelete, rd *trialReader, ready *sync.WaitGroup) {
	// Only this goroutine uses rd.n during the trial, so the deltas of
	// its counters tell which path the reload took.
	s0 := rd.n.cache.Stats()
	delivered := rd.n.arr.watch(del.key)
	ready.Done()
	<-del.done
	for {
		v, err := rd.n.cache.GetOrLoad(tctx, del.key, r.src)
		now := time.Now()
		if err != nil {
			rd.err = fmt.Errorf("node %d: %w", rd.n.id, err)
			return
		}
		since := now.Sub(del.t0)
		if v.Version >= del.newV {
			rd.lat, rd.ok = since, true
			rd.path = reloadPath(s0, rd.n.cache.Stats())
			break
		}
		if since > staleWindow {
			r.staleAfter2s.Add(1)
		}
		if since > convergeLimit {
			return
		}
		pause(r.cfg, delivered)
	}
	// Once converged, a reader must not go back to the old version (a
	// late fill of the old value would do that).
	for range 3 {
		v, err := rd.n.cache.GetOrLoad(tctx, del.key, r.src)
		if err != nil {
			rd.err = fmt.Errorf("node %d: %w", rd.n.id, err)
			return
		}
		if v.Version < del.newV {
			r.flipBacks.Add(1)
		}
	}
}

// collect adds the readers' latencies, by reload path, and the delivery
// times of the invalidation to the samples; it returns the readers' errors.
func (r *invalidateRun) collect(del *trialDelete, readers []*trialReader) error {
	var errs []error
	for _, rd := range readers {
		errs = append(errs, rd.err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, rd := range readers {
		if !rd.ok {
			r.res.unconverged++
			continue
		}
		r.lat = append(r.lat, rd.lat)
		r.byPath[rd.path] = append(r.byPath[rd.path], rd.lat)
		if at, ok := rd.n.arr.take(del.key); ok {
			d := at.Sub(del.t0)
			r.delivery = append(r.delivery, d)
			r.afterDelivery[rd.path] = append(r.afterDelivery[rd.path], rd.lat-d)
		}
	}
	return nil
}

// baseline measures one PUBLISH → receive latency and one PING round trip.
func (r *invalidateRun) baseline(ctx context.Context) error {
	d, err := r.probe.publish(ctx)
	if err != nil {
		return err
	}
	r.pubLat = append(r.pubLat, d)
	d, err = r.probe.ping(ctx)
	if err != nil {
		return err
	}
	r.rtt = append(r.rtt, d)
	return nil
}

// sweep waits until staleWindow has passed since the last Delete, then
// reads every trial key on every node and returns how many reads returned
// an old version.
func (r *invalidateRun) sweep(ctx context.Context) (int64, error) {
	if wait := time.Until(r.lastDelete.Add(staleWindow)); wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	var stale int64
	for _, key := range r.keys {
		want := r.src.get(key)
		for _, n := range r.nodes {
			v, err := n.cache.GetOrLoad(ctx, key, r.src)
			if err != nil {
				return 0, fmt.Errorf("node %d: sweep: %w", n.id, err)
			}
			if v.Version < want {
				stale++
			}
		}
	}
	if stale > 0 {
		fmt.Fprintf(os.Stderr, "benchfleet: invalidate: %d stale reads in the final sweep\n", stale)
	}
	return stale, nil
}

// sort sorts every sample list, for their percentiles.
func (r *invalidateRun) sort() {
	for _, ds := range [][]time.Duration{r.delivery, r.lat, r.pubLat, r.rtt, r.writerReload} {
		slices.Sort(ds)
	}
	for _, m := range []map[string][]time.Duration{r.byPath, r.afterDelivery} {
		for _, ds := range m {
			slices.Sort(ds)
		}
	}
}

// printPaths prints, on stderr, where the time went: the delivery of the
// invalidations, the readers' latencies by reload path, the writer's own
// reload and the PING round trip.
func (r *invalidateRun) printPaths() {
	p := stats.Percentile
	// Delivery may be negative: Redis can push the message to a reader
	// before the writer has read its reply.
	fmt.Fprintf(os.Stderr, "benchfleet: invalidate: delivery (Delete returned → reader's bus handled it) n=%d p50=%.2fms p99=%.2fms max=%.2fms\n",
		len(r.delivery), msf(p(r.delivery, 0.5)), msf(p(r.delivery, 0.99)), msf(p(r.delivery, 1)))
	for _, path := range slices.Sorted(maps.Keys(r.byPath)) {
		ds, ad := r.byPath[path], r.afterDelivery[path]
		fmt.Fprintf(os.Stderr, "benchfleet: invalidate: reload path %-10s n=%3d total p50=%.2fms p99=%.2fms max=%.2fms; after delivery p50=%.2fms p99=%.2fms\n",
			path, len(ds), msf(p(ds, 0.5)), msf(p(ds, 0.99)), msf(p(ds, 1)), msf(p(ad, 0.5)), msf(p(ad, 0.99)))
	}
	fmt.Fprintf(os.Stderr, "benchfleet: invalidate: writer's own read after Delete (L1 miss, Redis miss, lease, load, fill) p50=%.2fms p99=%.2fms; PING p50=%.2fms p99=%.2fms\n",
		msf(p(r.writerReload, 0.5)), msf(p(r.writerReload, 0.99)), msf(p(r.rtt, 0.5)), msf(p(r.rtt, 0.99)))
	fmt.Fprintf(os.Stderr, "benchfleet: invalidate: %d latency samples, %d publish samples\n", len(r.lat), len(r.pubLat))
}

// result returns the workload's figures from the sorted samples, with
// sweepStale the old reads of the final sweep.
func (r *invalidateRun) result(sweepStale int64) invalidateResult {
	p := stats.Percentile
	res := r.res
	res.p50, res.p99, res.max = p(r.lat, 0.50), p(r.lat, 0.99), p(r.lat, 1)
	res.staleAfter2s = r.staleAfter2s.Load() + sweepStale
	res.flipBacks = r.flipBacks.Load()
	res.publishP50, res.publishP99, res.publishMax = p(r.pubLat, 0.50), p(r.pubLat, 0.99), p(r.pubLat, 1)
	res.rttP99 = p(r.rtt, 0.99)
	res.reloadP99 = p(r.writerReload, 0.99)
	return res
}

// reloadPath names how a reader got the new version, from its counters
// before and after: it waited for another node's lease, loaded itself, read
// Redis, or (none of these) was never invalidated.
func reloadPath(before, after tiered.Stats) string {
	switch {
	case after.LeaseWaits > before.LeaseWaits:
		return "lease-wait"
	case after.Loads > before.Loads:
		return "loaded"
	case after.L2Hits > before.L2Hits:
		return "redis-hit"
	}
	return "none"
}
