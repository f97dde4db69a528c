package main

import (
	"slices"
	"sync"
	"time"

	"github.com/tieredcache/tiered/internal/stats"
)

// The consistency probe. Every write the nodes answered 200 is logged with
// the time the driver received the answer, and whether the answer said the
// invalidation was queued (the node's Delete returned tiered.ErrQueued);
// every read the driver makes, of any kind, is checked against that log by
// the time the read started:
//
//   - a write is missed by a read that returned an older version of its
//     product and started after the write's answer; the read is late by
//     start − answer;
//   - a read late by more than -bound after an acknowledged write (answered
//     without invalidation_queued), or by more than -error-bound after a
//     write answered with invalidation_queued, is a stale read;
//   - max_staleness_ms is the largest lateness of any read after an
//     acknowledged write it missed, stale or not; the same after queued
//     writes is reported apart.
//
// A read's lateness with respect to a class of writes is measured from the
// earliest answer, in that class, of a version newer than the one it got:
// the largest lateness over every write it missed.

// ack is one write answered 200.
type ack struct {
	version int64
	at      time.Time
	queued  bool // answered with invalidation_queued
}

// ackLog is the log of answered writes. It is safe for concurrent use.
type ackLog struct {
	mu         sync.Mutex      // guards the fields below
	byID       map[int64][]ack // answers by product id
	lastDone   time.Time       // the latest acknowledgment
	lastQueued time.Time       // the latest answer with invalidation_queued
}

func (l *ackLog) add(id, version int64, at time.Time, queued bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byID == nil {
		l.byID = make(map[int64][]ack)
	}
	l.byID[id] = append(l.byID[id], ack{version: version, at: at, queued: queued})
	last := &l.lastDone
	if queued {
		last = &l.lastQueued
	}
	if at.After(*last) {
		*last = at
	}
}

// lateness returns how late a read of version got of id that started at
// start is with respect to the acknowledged writes it missed (done) and
// the queued ones (queued): start − the earliest answer of a newer
// version, or 0 if there is none before start.
func (l *ackLog) lateness(id, got int64, start time.Time) (done, queued time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.byID[id] {
		if a.version <= got {
			continue
		}
		late := &done
		if a.queued {
			late = &queued
		}
		*late = max(*late, start.Sub(a.at))
	}
	return done, queued
}

// written returns the ids written, in order, the latest acknowledgment and
// the latest answer with invalidation_queued.
func (l *ackLog) written() (ids []int64, lastDone, lastQueued time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids = make([]int64, 0, len(l.byID))
	for id := range l.byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, l.lastDone, l.lastQueued
}

// durations collects samples. It is safe for concurrent use.
type durations struct {
	mu sync.Mutex // guards d
	d  []time.Duration
}

func (s *durations) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

// quantiles returns the count and the given quantiles (0 to 1, by
// stats.Percentile) of the samples.
func (s *durations) quantiles(qs ...float64) (int, []time.Duration) {
	s.mu.Lock()
	d := slices.Clone(s.d)
	s.mu.Unlock()
	slices.Sort(d)
	out := make([]time.Duration, len(qs))
	for i, q := range qs {
		out[i] = stats.Percentile(d, q)
	}
	return len(d), out
}
