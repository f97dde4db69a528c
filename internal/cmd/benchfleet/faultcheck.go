package main

import (
	"fmt"
	"os"
	"slices"
	"time"
)

// The faults workload's checker. Every time is taken with
// time.Since(base), monotonic, in one process: a write's return right after
// Delete returns, a read's start right before GetOrLoad is called. A reader
// keeps the reads that returned a version lower than the database's version
// of the key read right after the read (a superset of every read that can
// be stale: a write that returned before the read began had bumped the
// database before that); after the run they are checked against the
// complete log of writes:
//
//   - stale_100ms counts the reads that returned a version older than a
//     write whose Delete returned nil more than 100ms (staleBound) before the
//     read started;
//   - stale_after_error_1s counts the reads that returned a version older
//     than a write whose Delete returned an error more than 1s (errorBound)
//     before the read started;
//   - an *old* read returned a version older than some write (acknowledged
//     or failed) that had returned before the read started; its staleness is
//     the read's start minus the return of the newest such write, the most
//     recent write it missed, and max_staleness_ms is the largest over all
//     old reads. A read that missed several writes is measured against the
//     last one; stderr also gives the age of the oldest missed acknowledged
//     write (how long the returned value had been overwritten), which is
//     the figure Options.MaxStaleness bounds. Failed writes count, so
//     max_staleness_ms may pass 100ms with no read stale: until the outbox
//     delivers a failed write's invalidation, other nodes may read the old
//     value from Redis.
//
// A read is counted once however many writes it missed.

// oldRead is a read that returned a version lower than the database's
// right after it: a candidate for the checker.
type oldRead struct {
	key        int32
	node       int16
	reader     int8
	healthy    bool // the node's bus, right after the read
	version    int64
	start, end time.Duration
	proofAge   time.Duration // the node's bus's ProofAge right after the read; -1: none
}

// sample is one node's state, taken every sampleEvery, for the traces.
type sample struct {
	at            time.Duration
	healthy       bool
	proofAge      time.Duration
	pending       int
	l1Hits        uint64
	l1Unproven    uint64
	resets        uint64
	invalidations uint64
	breakerOpen   uint64
	l2Errors      uint64
}

// check counts, among the candidate reads, the stale and the old ones (see
// the file comment) against the complete log of writes.
func check(res *faultResult, db *faultDB, reads []oldRead) {
	for i, r := range reads {
		var (
			newest      = time.Duration(-1) // return of the newest write missed
			oldestAcked = time.Duration(-1) // return of the oldest acknowledged write missed
			stale       bool
			staleErr    bool
		)
		for _, w := range db.writes[r.key] {
			if w.version <= r.version || w.ret >= r.start {
				continue
			}
			gap := r.start - w.ret
			if w.err == nil {
				if gap > staleBound {
					stale = true
				}
				if oldestAcked < 0 || w.ret < oldestAcked {
					oldestAcked = w.ret
				}
			} else if gap > errorBound {
				staleErr = true
			}
			newest = max(newest, w.ret)
		}
		if newest < 0 {
			continue // every write it missed was still in progress
		}
		res.old++
		if s := r.start - newest; s > res.maxStaleness {
			res.maxStaleness, res.worst = s, i
		}
		if oldestAcked >= 0 {
			res.maxOverwriteAge = max(res.maxOverwriteAge, r.start-oldestAcked)
		}
		if stale {
			res.stale100++
		}
		if staleErr {
			res.staleErr1s++
		}
		if stale || staleErr {
			res.staleIdx = append(res.staleIdx, i)
		}
	}
}

// phaseOf names the last fault injected before t.
func phaseOf(events []event, t time.Duration) string {
	p := "before any fault"
	for _, e := range events {
		if e.at <= t {
			p = e.what
		}
	}
	return p
}

// explain prints, on stderr, where the old reads were, and a trace of the
// worst stale reads (or, with none, of the read with the largest
// staleness).
func explain(mode string, res *faultResult, db *faultDB, reads []oldRead, samples [][]sample, events []event) {
	pre := "benchfleet: faults readers=" + mode + ": "
	fmt.Fprintf(os.Stderr, "%s%d candidate reads (version below the database's right after), %d old (missed a write that had returned), max staleness %.2fms (newest missed write), max age of the oldest missed acknowledged write %.2fms\n",
		pre, len(reads), res.old, msf(res.maxStaleness), msf(res.maxOverwriteAge))
	type phase struct {
		n   int
		max time.Duration
	}
	phases := map[string]*phase{}
	order := []string{phaseOf(nil, 0)}
	for _, e := range events {
		order = append(order, e.what)
	}
	for _, r := range reads {
		newest := time.Duration(-1)
		for _, w := range db.writes[r.key] {
			if w.version > r.version && w.ret < r.start {
				newest = max(newest, w.ret)
			}
		}
		if newest < 0 {
			continue
		}
		p := phaseOf(events, r.start)
		if phases[p] == nil {
			phases[p] = &phase{}
		}
		phases[p].n++
		phases[p].max = max(phases[p].max, r.start-newest)
	}
	for _, p := range order {
		if ph := phases[p]; ph != nil {
			fmt.Fprintf(os.Stderr, "%sold reads after %q: %d, max staleness %.2fms\n", pre, p, ph.n, msf(ph.max))
		}
	}
	idx := res.staleIdx
	slices.SortFunc(idx, func(a, b int) int { return int(reads[a].start - reads[b].start) })
	if len(idx) > 3 {
		fmt.Fprintf(os.Stderr, "%s%d stale reads; tracing the first 3\n", pre, len(idx))
		idx = idx[:3]
	}
	if len(idx) == 0 && res.worst >= 0 {
		idx = []int{res.worst}
	}
	for _, i := range idx {
		trace(pre, reads, i, db, samples, events, len(res.staleIdx) > 0)
	}
}

// trace prints read i with the writes of its key from the one whose
// version it returned; if full, also the other old reads of its key on its
// node and its node's samples, around it.
func trace(pre string, reads []oldRead, i int, db *faultDB, samples [][]sample, events []event, full bool) {
	r := reads[i]
	to := r.end + 500*time.Millisecond
	fmt.Fprintf(os.Stderr, "%strace: node %d reader %d read %s: version %d, start %.3fms end %.3fms, bus healthy=%v proof age %.2fms, after %q\n",
		pre, r.node, r.reader, db.names[r.key], r.version, msf(r.start), msf(r.end), r.healthy, msf(r.proofAge), phaseOf(events, r.start))
	for _, w := range db.writes[r.key] {
		if w.version < r.version || w.ret > to {
			continue
		}
		res := "nil"
		if w.err != nil {
			res = w.err.Error()
		}
		fmt.Fprintf(os.Stderr, "%strace:   write version %d on node %d returned at %.3fms (%.3fms before the read's start): %s\n",
			pre, w.version, w.node, msf(w.ret), msf(r.start-w.ret), res)
	}
	if !full {
		return
	}
	n := 0
	for _, o := range reads {
		if o.key != r.key || o.node != r.node || o.start < r.start-time.Second || o.start > to {
			continue
		}
		if n++; n > 40 {
			fmt.Fprintf(os.Stderr, "%strace:   (more old reads left out)\n", pre)
			break
		}
		fmt.Fprintf(os.Stderr, "%strace:   old read by reader %d: version %d, start %.3fms end %.3fms, healthy=%v proof age %.2fms\n",
			pre, o.reader, o.version, msf(o.start), msf(o.end), o.healthy, msf(o.proofAge))
	}
	for _, s := range samples[r.node] {
		if s.at < r.start-300*time.Millisecond || s.at > r.end+100*time.Millisecond {
			continue
		}
		fmt.Fprintf(os.Stderr, "%strace:   node %d at %.1fms: healthy=%v proof age %.1fms pending=%d l1 hits %d unproven %d resets %d invalidations %d breaker opens %d l2 errors %d\n",
			pre, r.node, msf(s.at), s.healthy, msf(s.proofAge), s.pending, s.l1Hits, s.l1Unproven, s.resets, s.invalidations, s.breakerOpen, s.l2Errors)
	}
}
