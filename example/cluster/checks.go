package main

import (
	"context"
	"fmt"
	"time"
)

// The driver's checks: every read is judged against the log of answered
// writes (probe.go) as it is made; after the load, the nodes must recover
// and every written product must read as the database has it.

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
