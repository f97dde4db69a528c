package pubsub

import (
	"context"
	"log/slog"
	"time"

	"github.com/tieredcache/tiered/internal/mono"
)

// batch is one delivery: a namespace to purge, or keys of one namespace.
type batch struct {
	ns    string
	purge bool
	keys  []string
	seqs  []uint64
}

// next drops expired entries and picks the next batch; ok is false when the
// outbox is empty.
func (o *outbox) next() (b batch, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now, expired := mono.Now(), false
	for nk, e := range o.keys {
		if now > e.until {
			delete(o.keys, nk)
			o.dropped.Add(1)
			expired = true
		}
	}
	if expired {
		o.changedLocked()
	}
	for ns := range o.purge {
		return batch{ns: ns, purge: true}, true
	}
	for nk, e := range o.keys {
		if b.keys == nil {
			b.ns = nk.ns
		} else if nk.ns != b.ns {
			continue
		}
		b.keys, b.seqs = append(b.keys, nk.key), append(b.seqs, e.seq)
		if len(b.keys) == deliverBatch {
			break
		}
	}
	return b, b.keys != nil
}

// deliveredLocked removes the entries of b, except those queued again since.
func (o *outbox) deliveredLocked(b batch) {
	if b.purge {
		delete(o.purge, b.ns)
		o.purges.Add(1)
	}
	for i, k := range b.keys {
		nk := nsKey{b.ns, k}
		if e, ok := o.keys[nk]; ok && e.seq == b.seqs[i] {
			delete(o.keys, nk)
			o.delivered.Add(1)
		}
	}
	o.changedLocked()
}

// dropLocked removes everything of namespace b.ns: it has no handler left.
func (o *outbox) dropLocked(b batch) {
	if o.purge[b.ns] {
		delete(o.purge, b.ns)
		o.dropped.Add(1)
	}
	for nk := range o.keys {
		if nk.ns == b.ns {
			delete(o.keys, nk)
			o.dropped.Add(1)
		}
	}
	o.changedLocked()
}

// run delivers the outbox until close; see the rules in outbox.go.
func (o *outbox) run() {
	defer close(o.done)
	wait := backoffMin
	for {
		b, ok := o.next()
		o.mu.Lock()
		closing, until := o.closing, o.until
		o.mu.Unlock()
		if closing && (!ok || time.Now().After(until)) {
			o.mu.Lock()
			n := len(o.keys) + len(o.purge)
			clear(o.keys)
			clear(o.purge)
			o.dropped.Add(uint64(n))
			o.changedLocked()
			o.mu.Unlock()
			if n > 0 {
				o.b.log.Log(slog.LevelError, "pubsub: closed with undelivered invalidations", nil, slog.Int("keys", n))
			}
			return
		}
		if !ok {
			select {
			case <-o.kick:
			case <-o.closeCh:
			}
			continue
		}
		h := o.b.deliverer(b.ns)
		if h == nil {
			o.mu.Lock()
			o.dropLocked(b)
			o.mu.Unlock()
			continue
		}
		timeout := deliverTimeout
		if closing {
			timeout = min(timeout, time.Until(until))
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		var err error
		if b.purge {
			err = h.Purge(ctx)
		} else {
			err = h.Deliver(ctx, b.keys)
		}
		cancel()
		if err == nil {
			o.mu.Lock()
			o.deliveredLocked(b)
			o.mu.Unlock()
			wait = backoffMin
			continue
		}
		o.b.log.Log(slog.LevelWarn, "pubsub: outbox delivery failed, retrying", err,
			slog.String("namespace", b.ns), slog.Int("keys", len(b.keys)), slog.Bool("purge", b.purge))
		closeCh := o.closeCh // cut a backoff short once, when Close begins
		if closing {
			closeCh = nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-o.retry:
			t.Stop()
		case <-closeCh:
			t.Stop()
		}
		wait = min(2*wait, o.maxWait)
	}
}
