package pubsub

import (
	"context"
	"log/slog"
)

// Handler receives the messages of one namespace. Its methods run on the
// bus's receiving goroutine, one at a time, and must return quickly.
type Handler interface {
	// Invalidate drops keys from L1, advancing their fill guards, and
	// forgets their flights.
	Invalidate(keys []string)
	// Wake tells waiters for keys to look in Redis again.
	Wake(keys []string)
	// Reset drops all of L1 and forgets every flight: the bus lost its
	// subscription, regained it (and may have missed messages in between),
	// or another node purged the namespace.
	Reset()
}

// A Deliverer is a Handler that also delivers its namespace's outbox
// entries. The outbox delivers a namespace's entries through one of the
// Deliverers registered for it, and drops them when there is none. Deliver
// and Purge run on the outbox goroutine.
type Deliverer interface {
	Handler
	// Deliver makes the invalidation of keys happen: it deletes them from
	// Redis and announces it, as a Delete would. It is bounded by ctx.
	Deliver(ctx context.Context, keys []string) error
	// Purge deletes every key of the namespace from Redis and announces a
	// Flush. The outbox calls it for a namespace whose keys overflowed it.
	Purge(ctx context.Context) error
}

type regEntry struct{ h Handler }

// Register adds h for namespace and returns the function that removes it.
// Several handlers may share a namespace.
func (b *Bus) Register(namespace string, h Handler) (unregister func()) {
	e := &regEntry{h: h}
	b.mu.Lock()
	if b.handlers[namespace] == nil {
		b.handlers[namespace] = make(map[*regEntry]bool)
	}
	b.handlers[namespace][e] = true
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.handlers[namespace], e)
		if len(b.handlers[namespace]) == 0 {
			delete(b.handlers, namespace)
		}
		b.mu.Unlock()
	}
}

// deliverer returns one Deliverer registered for namespace, or nil.
func (b *Bus) deliverer(namespace string) Deliverer {
	b.mu.Lock()
	defer b.mu.Unlock()
	for e := range b.handlers[namespace] {
		if d, ok := e.h.(Deliverer); ok {
			return d
		}
	}
	return nil
}

// resetHandlers calls Reset on every handler, or on those of one namespace.
func (b *Bus) resetHandlers(namespace string, all bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ns, hs := range b.handlers {
		if all || ns == namespace {
			for e := range hs {
				e.h.Reset()
			}
		}
	}
}

func (b *Bus) dispatch(payload string) {
	b.received.Add(1)
	m, err := Decode([]byte(payload))
	if err != nil {
		b.garbled.Add(1)
		b.log.Log(slog.LevelWarn, "pubsub: ignoring garbled message", err, slog.String("channel", b.o.Channel))
		return
	}
	if m.NodeID == b.o.NodeID {
		b.own.Add(1)
		return
	}
	if m.Kind == Flush {
		b.resetHandlers(m.Namespace, false)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for e := range b.handlers[m.Namespace] {
		switch m.Kind {
		case Invalidate:
			e.h.Invalidate(m.Keys)
		case Wake:
			e.h.Wake(m.Keys)
		}
	}
}
