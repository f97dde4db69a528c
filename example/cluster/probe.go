package main

import (
	"slices"
	"sync"
	"time"
)

// The consistency probe. Every acknowledged write is logged with the time
// the driver received the acknowledgment; every read the driver makes, of
// any kind, is checked against that log by the time the read started:
//
//   - the read is late by start − ack, where ack is the earliest
//     acknowledgment of a version newer than the one the read returned (no
//     such acknowledgment: the read is up to date);
//   - a read late by more than -bound is a stale read;
//   - the staleness window is the largest lateness of any read that
//     returned an older version, stale or not.

// ack is one acknowledged write.
type ack struct {
	version int64
	at      time.Time
}

// ackLog is the log of acknowledged writes. It is safe for concurrent use.
type ackLog struct {
	mu   sync.Mutex      // guards the fields below
	byID map[int64][]ack // acknowledgments by product id
	last time.Time       // the latest acknowledgment
}

func (l *ackLog) add(id, version int64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byID == nil {
		l.byID = make(map[int64][]ack)
	}
	l.byID[id] = append(l.byID[id], ack{version: version, at: at})
	if at.After(l.last) {
		l.last = at
	}
}

// lateness returns start − the earliest acknowledgment of a version of id
// newer than got, and whether there was one.
func (l *ackLog) lateness(id, got int64, start time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.byID[id] {
		if a.version > got && (first.IsZero() || a.at.Before(first)) {
			first = a.at
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return start.Sub(first), true
}

// written returns the ids written, in order, and the latest acknowledgment.
func (l *ackLog) written() ([]int64, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]int64, 0, len(l.byID))
	for id := range l.byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, l.last
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

// quantiles returns the count and the given quantiles (0 to 1) of the
// samples.
func (s *durations) quantiles(qs ...float64) (int, []time.Duration) {
	s.mu.Lock()
	d := slices.Clone(s.d)
	s.mu.Unlock()
	slices.Sort(d)
	out := make([]time.Duration, len(qs))
	if len(d) == 0 {
		return 0, out
	}
	for i, q := range qs {
		out[i] = d[min(int(q*float64(len(d))), len(d)-1)]
	}
	return len(d), out
}
