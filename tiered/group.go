package tiered

import (
	"errors"
	"sync"
)

// This file is the in-process flight group: it makes concurrent callers of
// one key share one flight (one Redis read, at most one loader call).
//
// It does what golang.org/x/sync/singleflight does, with one difference the
// batch read needs: join tells its caller whether it leads the flight or
// joined one already running, before anything runs. GetMany joins the
// flights of all its keys first, then runs one batch for the keys it leads
// and waits for the others; with singleflight's Do and DoChan a caller
// cannot know which keys it leads until their functions start, on
// goroutines of their own. The flights are typed, so a result is not boxed
// in an interface either.

// call is one flight of a key. Its leader runs it and calls finish exactly
// once; joiners wait for done.
type call[V any] struct {
	done chan struct{} // closed by finish
	// v, err and stale are written by the leader (finish, or a batch before
	// finishMany) before done is closed, and read only after.
	v     V
	err   error
	stale error // non-nil: v is an expired value served through fail-safe; the cause
	from  Origin
	miss  bool // see outcome.miss
}

// group is one generation of flights of one kind (loads or fetches).
type group[V any] struct {
	mu sync.Mutex          // guards m
	m  map[string]*call[V] // running flights a caller may join, by key
}

// join returns key's running flight, or starts one; lead reports that the
// caller started it and must call finish.
func (g *group[V]) join(key string) (c *call[V], lead bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.m[key]; ok {
		return c, false
	}
	if g.m == nil {
		g.m = make(map[string]*call[V])
	}
	c = &call[V]{done: make(chan struct{})}
	g.m[key] = c
	return c, true
}

// finish records c's outcome, stops new callers from joining it, and wakes
// its waiters.
func (g *group[V]) finish(key string, c *call[V], o outcome[V]) {
	g.mu.Lock()
	if g.m[key] == c { // forget may have replaced it
		delete(g.m, key)
	}
	g.mu.Unlock()
	c.v, c.err, c.stale, c.from, c.miss = o.v, o.err, o.stale, o.from, o.miss
	close(c.done)
}

// joinMany is join for many keys under one lock: calls[i] becomes keys[i]'s
// flight, and led lists the indexes of the flights the caller started
// (a key repeated in keys joins the flight of its first occurrence). The
// flights it starts share one allocation and one done channel: the caller
// finishes them together with finishMany.
func (g *group[V]) joinMany(keys []string, calls []*call[V]) (led []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = make(map[string]*call[V])
	}
	var slab []call[V]
	var done chan struct{}
	for i, k := range keys {
		if c, ok := g.m[k]; ok {
			calls[i] = c
			continue
		}
		if slab == nil {
			slab, done = make([]call[V], len(keys)-i), make(chan struct{})
		}
		c := &slab[0]
		slab = slab[1:]
		c.done = done
		g.m[k] = c
		calls[i] = c
		led = append(led, i)
	}
	return led
}

// finishMany finishes flights that joinMany started together: calls[i] of
// keys[i], whose outcomes the caller has written into them.
func (g *group[V]) finishMany(keys []string, calls []*call[V]) {
	g.mu.Lock()
	for i, k := range keys {
		if g.m[k] == calls[i] {
			delete(g.m, k)
		}
	}
	g.mu.Unlock()
	if len(calls) > 0 {
		close(calls[0].done)
	}
}

// forget makes later callers of key start a new flight instead of joining
// the running one, which still finishes for the callers it has.
func (g *group[V]) forget(key string) {
	g.mu.Lock()
	delete(g.m, key)
	g.mu.Unlock()
}

// outcome is what a flight returns to each of its callers.
type outcome[V any] struct {
	v     V
	err   error
	stale error  // see call.stale
	from  Origin // where v or err came from, for a span (see SpanEnd.Origin)
	miss  bool   // err is ErrNotFound because Redis had no value (Get): a miss, not a hit (Stats)
}

// errAbandoned is the error of a flight whose leader goroutine ended
// without finishing it (runtime.Goexit, as t.FailNow does in a test).
var errAbandoned = errors.New("tiered: flight abandoned: its goroutine exited")
