package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// The hotexpiry workload: one hot key read flat out by hotReaders
// goroutines on each of -nodes nodes while it expires several times (TTL
// hotTTL, Jitter off, a loader that sleeps hotLoad and logs its calls), for
// hotDur. Two runs, each on a redis-server and nodes of its own: fresh=off,
// and fresh=on with Options.Fresh = TTL/2 (refresh-ahead). Before the
// clock starts every node reads the key once (its first load is not
// counted).
//
// A reader calls GetOrLoad and yields (runtime.Gosched) before the next
// call: flat out, but a call is then not cut in the middle by the Go
// scheduler's 10ms preemption, which would make it wait for the time slices
// of the other readers (150 of them on 2 cores: about 0.75s), a delay that
// has nothing to do with the loader.
//
// Fields of the line:
//
//	reads                  GetOrLoad calls
//	waited                 calls that lasted at least hotLoad/2 (25ms): the
//	                       callers that waited on the loader. Nothing else on
//	                       the read path takes that long here (an L1 hit is
//	                       under 1µs, a Redis round trip under 1ms); stderr
//	                       counts the slow calls that overlapped no load.
//	p50_us, p99_us, max_ms the latency of a call (p50 and p99 from a
//	                       histogram, within 3%; max exact)
//	db_loads               loader calls that began during the run
//	refreshes              the sum of the nodes' Stats.Refreshes
//	periods                the refresh or expiry periods: the loads in start
//	                       order, a load that starts more than TTL/4 after
//	                       the previous one beginning a new period (a key's
//	                       periods are at least Fresh apart)
//	loads_per_period_mean  db_loads / periods
//	loads_per_period_max   the most loads in one period
//	errors                 calls that returned an error
//
// The acceptance, for fresh=on: waited=0 and loads_per_period_max=1; a run
// that misses it makes the exit status non-zero.

const (
	hotReaders = 50 // per node
	hotTTL     = time.Second
	hotFresh   = hotTTL / 2
	hotLoad    = 50 * time.Millisecond
	hotDur     = 6 * time.Second
	hotKey     = "hot"
)

// hotResult is what one hotexpiry run measured.
type hotResult struct {
	lat                  hist
	reads, waited, errs  uint64
	slowNoLoad           int // waited calls that overlapped no load
	loads, refreshes     uint64
	periods, perPeriod   int // perPeriod: the most loads in one period
	elapsed              time.Duration
	firstErr             error
	nodeStats            []tiered.Stats
	loadStarts, loadEnds []time.Duration
}

// span is a call's or a load's start and end, since the run's start.
type span struct{ start, end time.Duration }

func runHotExpiry(ctx context.Context, cfg config) error {
	return offOn(ctx, "hotexpiry", "fresh", hotFresh, func(addr, name string, fresh time.Duration) (error, error) {
		r, err := hotExpiry(ctx, cfg, addr, fresh)
		if err != nil {
			return nil, err
		}
		fmt.Printf("workload=hotexpiry fresh=%s nodes=%d readers=%d ttl_ms=%d fresh_ms=%d loader_ms=%d duration_s=%.1f reads=%d waited=%d p50_us=%.2f p99_us=%.2f max_ms=%.2f db_loads=%d refreshes=%d periods=%d loads_per_period_mean=%.2f loads_per_period_max=%d errors=%d\n",
			name, cfg.nodes, cfg.nodes*hotReaders, hotTTL.Milliseconds(), fresh.Milliseconds(), hotLoad.Milliseconds(), r.elapsed.Seconds(),
			r.reads, r.waited, usf(r.lat.quantile(0.5)), usf(r.lat.quantile(0.99)), msf(r.lat.max),
			r.loads, r.refreshes, r.periods, float64(r.loads)/float64(max(r.periods, 1)), r.perPeriod, r.errs)
		for i, s := range r.nodeStats {
			fmt.Fprintf(os.Stderr, "benchfleet: hotexpiry fresh=%s: node %d: %+v\n", name, i, s)
		}
		fmt.Fprintf(os.Stderr, "benchfleet: hotexpiry fresh=%s: %d waited calls overlapped no load; loads at (ms) %s\n",
			name, r.slowNoLoad, fmtSpans(r.loadStarts, r.loadEnds))
		var failed []error
		if r.firstErr != nil {
			failed = append(failed, fmt.Errorf("fresh=%s: %d errors, first: %w", name, r.errs, r.firstErr))
		}
		if fresh > 0 {
			ok := r.waited == 0 && r.perPeriod == 1
			fmt.Fprintf(os.Stderr, "benchfleet: hotexpiry fresh=on: waited=%d loads_per_period_max=%d (targets 0 and 1): %s\n",
				r.waited, r.perPeriod, verdict(ok))
			if !ok {
				failed = append(failed, fmt.Errorf("fresh=on: %d callers waited on the loader, up to %d loads in a period", r.waited, r.perPeriod))
			}
		}
		return errors.Join(failed...), nil
	})
}

// fmtSpans formats load spans as start–end in ms.
func fmtSpans(starts, ends []time.Duration) string {
	var b []byte
	for i := range starts {
		if i > 0 {
			b = append(b, ' ')
		}
		b = fmt.Appendf(b, "%.0f–%.0f", msf(starts[i]), msf(ends[i]))
	}
	return string(b)
}

// hotExpiry makes one run with Options.Fresh = fresh on a server at addr.
func hotExpiry(ctx context.Context, cfg config, addr string, fresh time.Duration) (hotResult, error) {
	var res hotResult
	nodes, err := newCacheNodes[Item](ctx, addr, cfg.nodes, tiered.Options{
		Namespace: "hotexpiry", TTL: hotTTL, Jitter: -1, Fresh: fresh,
	})
	defer closeNodes(nodes)
	if err != nil {
		return res, err
	}
	loads := &hotLoads{}
	loader := loads.loader()
	for i, n := range nodes {
		if _, err := n.cache.GetOrLoad(ctx, hotKey, loader); err != nil {
			return res, fmt.Errorf("node %d: first read: %w", i, err)
		}
	}
	before := statsOf(nodes)
	runtime.GC()

	rd := readHot(ctx, nodes, loader, loads.startClock())
	res.elapsed = rd.elapsed
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.tally(rd, nodes, before, loads.sorted())
	return res, nil
}

// hotLoads logs the loads of a hotexpiry run that begin once its clock
// has started.
type hotLoads struct {
	mu      sync.Mutex // guards spans and base
	spans   []span
	base    time.Time // zero until the clock starts
	version atomic.Int64
}

// loader returns the run's loader: it logs the load's span, sleeps hotLoad
// and returns the next version.
func (l *hotLoads) loader() tiered.Loader[Item] {
	return tiered.LoaderFunc[Item](func(lctx context.Context, key string) (Item, error) {
		i := -1 // the load's index in spans; -1 before the clock starts
		l.mu.Lock()
		if !l.base.IsZero() {
			i = len(l.spans)
			l.spans = append(l.spans, span{time.Since(l.base), -1})
		}
		l.mu.Unlock()
		defer func() {
			if i >= 0 {
				l.mu.Lock()
				l.spans[i].end = time.Since(l.base)
				l.mu.Unlock()
			}
		}()
		t := time.NewTimer(hotLoad)
		defer t.Stop()
		select {
		case <-t.C:
		case <-lctx.Done():
			return Item{}, lctx.Err()
		}
		return Item{Key: key, Version: l.version.Add(1)}, nil
	})
}

// startClock starts the clock the loads are logged against and returns
// its start.
func (l *hotLoads) startClock() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.base = time.Now()
	return l.base
}

// sorted returns the loads logged so far in start order; a load still
// running has end -1.
func (l *hotLoads) sorted() []span {
	l.mu.Lock()
	ls := slices.Clone(l.spans)
	l.mu.Unlock()
	slices.SortFunc(ls, func(a, b span) int { return int(a.start - b.start) })
	return ls
}

// hotReads is what the readers of a hotexpiry run measured, by reader.
type hotReads struct {
	elapsed  time.Duration // from the clock's start to the readers' stop
	hists    []hist
	slow     [][]span // the calls that lasted at least hotLoad/2
	errCount []uint64
	firstErr []error
}

// readHot runs hotReaders readers on each node for hotDur (or until ctx
// is done), timing each call since b0.
func readHot(ctx context.Context, nodes []*cacheNode[Item], loader tiered.Loader[Item], b0 time.Time) hotReads {
	nr := len(nodes) * hotReaders
	rd := hotReads{hists: make([]hist, nr), slow: make([][]span, nr), errCount: make([]uint64, nr), firstErr: make([]error, nr)}
	var (
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	for ni, n := range nodes {
		for r := range hotReaders {
			ri := ni*hotReaders + r
			wg.Go(func() {
				h := &rd.hists[ri]
				for !stop.Load() {
					t0 := time.Now()
					v, err := n.cache.GetOrLoad(ctx, hotKey, loader)
					d := time.Since(t0)
					h.add(d)
					if err == nil && v.Key != hotKey {
						err = fmt.Errorf("got %+v", v)
					}
					if err != nil {
						if rd.errCount[ri]++; rd.firstErr[ri] == nil {
							rd.firstErr[ri] = err
						}
					}
					if d >= hotLoad/2 {
						s := t0.Sub(b0)
						rd.slow[ri] = append(rd.slow[ri], span{s, s + d})
					}
					runtime.Gosched()
				}
			})
		}
	}
	select {
	case <-time.After(hotDur):
	case <-ctx.Done():
	}
	stop.Store(true)
	rd.elapsed = time.Since(b0)
	wg.Wait()
	return rd
}

// tally sets res's figures from the readers' measures, the nodes' counters
// since before and the loads ls, in start order.
func (res *hotResult) tally(rd hotReads, nodes []*cacheNode[Item], before []tiered.Stats, ls []span) {
	for ri := range rd.hists {
		res.lat.merge(&rd.hists[ri])
		res.errs += rd.errCount[ri]
		if res.firstErr == nil {
			res.firstErr = rd.firstErr[ri]
		}
	}
	res.reads = res.lat.n
	for i, n := range nodes {
		s := n.cache.Stats()
		res.refreshes += s.Refreshes - before[i].Refreshes
		res.nodeStats = append(res.nodeStats, s)
	}
	for _, l := range ls {
		if l.start > res.elapsed {
			continue // began after the run
		}
		res.loads++
		res.loadStarts, res.loadEnds = append(res.loadStarts, l.start), append(res.loadEnds, l.end)
	}
	res.periods, res.perPeriod = periods(res.loadStarts, hotTTL/4)
	for _, ss := range rd.slow {
		for _, s := range ss {
			res.waited++
			if !slices.ContainsFunc(ls, func(l span) bool { return l.start < s.end && (l.end < 0 || s.start < l.end) }) {
				res.slowNoLoad++
			}
		}
	}
}

// periods groups sorted load starts into periods (a start more than gap
// after the previous one begins a new one) and returns how many there are
// and the most loads in one.
func periods(starts []time.Duration, gap time.Duration) (n, most int) {
	cur := 0
	for i, s := range starts {
		if i == 0 || s-starts[i-1] > gap {
			n++
			cur = 0
		}
		cur++
		most = max(most, cur)
	}
	return n, most
}
