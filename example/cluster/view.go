package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// printer writes whole lines to w, one goroutine at a time.
type printer struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

const (
	tableHeader = "  time  node     req/s  L1 hit  L2 hit  DB loads  invalidations  lease waits  resets  unproven  queued  redis errors  bus"
	tableRow    = "%6s  %-6s %6.0f  %6s  %6s  %8d  %13d  %11d  %6d  %8d  %6d  %12d  %s"
)

// monitor prints one row per node every second until ctx is done: the
// increase of its counters over that second, starting from prev.
func (d *driver) monitor(ctx context.Context, start time.Time, prev snapshot) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur := d.snapshot(ctx, "")
		if ctx.Err() != nil {
			return
		}
		if !d.cfg.Quiet && i%10 == 0 {
			d.out.printf("%s", tableHeader)
		}
		for j, n := range d.nodes {
			if err := cur.errs[j]; err != nil {
				d.fail("%v", err)
				continue
			}
			if prev.errs[j] != nil || d.cfg.Quiet {
				continue
			}
			d.out.printf("%s", row(fmt.Sprintf("%ds", int(cur.at.Sub(start).Round(time.Second).Seconds())),
				n.name, prev.stats[j], cur.stats[j], cur.at.Sub(prev.at)))
		}
		prev = cur
	}
}

// row formats the increase of a node's counters from a to b over dt.
func row(label, name string, a, b nodeStats, dt time.Duration) string {
	ac, bc := a.Cache, b.Cache
	gets := b.Gets - a.Gets
	bus := "up"
	switch {
	case !b.BusHealthy:
		bus = "DOWN"
	case !b.BusProven:
		bus = "late"
	}
	return fmt.Sprintf(tableRow, label, name,
		float64(b.Requests-a.Requests)/dt.Seconds(),
		percent(bc.L1Hits-ac.L1Hits, gets), percent(bc.L2Hits-ac.L2Hits, gets),
		bc.Loads-ac.Loads, bc.Invalidations-ac.Invalidations, bc.LeaseWaits-ac.LeaseWaits,
		bc.Resets-ac.Resets, bc.L1Unproven-ac.L1Unproven, bc.Queued-ac.Queued, bc.L2Errors-ac.L2Errors, bus)
}

// printTotals prints the increase of each node's counters from base to
// final, over elapsed.
func printTotals(out *printer, nodes []*nodeProc, base, final snapshot, elapsed time.Duration) {
	out.printf("%s", tableHeader)
	for i, n := range nodes {
		if final.errs[i] != nil {
			out.printf("%6s  %-6s %v", "total", n.name, final.errs[i])
			continue
		}
		out.printf("%s", row("total", n.name, base.stats[i], final.stats[i], elapsed))
	}
}

func percent(n, of uint64) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

// summary is the outcome of a run; String is the last line the command
// prints.
type summary struct {
	Nodes            int
	Seconds          int
	Reads            uint64  // GETs the driver made that were answered 200 or 404
	Writes           uint64  // PUTs answered 200
	L1HitRatio       float64 // L1 hits / GETs served, over all nodes
	L2HitRatio       float64 // Redis hits / GETs served, over all nodes
	DBLoads          uint64  // loader calls, over all nodes
	ColdBurstDBLoads uint64  // loader calls for the cold-burst key
	HTTPReads        uint64  // GETs of the /http/ endpoints answered 200
	HTTPHitRatio     float64 // of those, the share answered X-Cache: hit
	PrivateLeaks     uint64  // /http/me/ answers that named another identity
	StaleReads       uint64  // every stale read, after acknowledged and queued writes
	StaleAfterError  uint64  // of those, the ones stale only after writes answered with the invalidation queued
	MaxStaleness     time.Duration
	Queued           uint64 // PUTs answered 200 with the invalidation queued (ErrQueued)
	Errors           uint64
}

func (s summary) String() string {
	return fmt.Sprintf("summary nodes=%d seconds=%d reads=%d writes=%d l1_hit_ratio=%.3f l2_hit_ratio=%.3f "+
		"db_loads=%d cold_burst_db_loads=%d http_reads=%d http_hit_ratio=%.3f private_leaks=%d "+
		"stale_reads=%d stale_after_error=%d max_staleness_ms=%.1f queued_invalidations=%d errors=%d",
		s.Nodes, s.Seconds, s.Reads, s.Writes, s.L1HitRatio, s.L2HitRatio,
		s.DBLoads, s.ColdBurstDBLoads, s.HTTPReads, s.HTTPHitRatio, s.PrivateLeaks, s.StaleReads, s.StaleAfterError,
		float64(s.MaxStaleness)/float64(time.Millisecond), s.Queued, s.Errors)
}

// OK reports whether the run passed: no stale read, no private leak, no
// error, and the cold burst loaded its key exactly once.
func (s summary) OK() bool {
	return s.StaleReads == 0 && s.PrivateLeaks == 0 && s.Errors == 0 && s.ColdBurstDBLoads == 1
}

func (d *driver) summarize(final snapshot, burstLoads uint64) summary {
	var gets, l1, l2, loads uint64
	for i := range d.nodes {
		if final.errs[i] != nil {
			d.fail("%v", final.errs[i])
			continue
		}
		st := final.stats[i]
		gets += st.Gets
		l1 += st.Cache.L1Hits
		l2 += st.Cache.L2Hits
		loads += st.Cache.Loads
	}
	s := summary{
		Nodes:            len(d.nodes),
		Seconds:          int(d.cfg.Duration.Round(time.Second) / time.Second),
		Reads:            d.reads.Load(),
		Writes:           d.writes.Load(),
		DBLoads:          loads,
		ColdBurstDBLoads: burstLoads,
		StaleReads:       d.stale.Load(),
		StaleAfterError:  d.staleAfterError.Load(),
		Queued:           d.queued.Load(),
		HTTPReads:        d.web.total(),
		PrivateLeaks:     d.web.leaks.Load(),
	}
	if s.HTTPReads > 0 {
		s.HTTPHitRatio = float64(d.web.hits.Load()) / float64(s.HTTPReads)
	}
	if gets > 0 {
		s.L1HitRatio = float64(l1) / float64(gets)
		s.L2HitRatio = float64(l2) / float64(gets)
	}
	d.mu.Lock()
	s.MaxStaleness = d.maxStale
	d.mu.Unlock()
	s.Errors = d.errors.Load() // last: summarize itself may count errors
	return s
}
