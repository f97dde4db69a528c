package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/pubsub"
	"github.com/tieredcache/tiered/tiered"
)

// Item is the cached value type.
type Item struct {
	Key     string `json:"key"`
	Version int64  `json:"version"`
}

// node is one member of the fleet of the stampede and invalidate
// workloads. Nodes share nothing but the Redis server.
type node struct {
	id         int
	rdb        redis.UniversalClient
	bus        *pubsub.Bus
	cache      *tiered.Cache[Item]
	arr        *arrivals
	unregister func()
}

// namespace is the fleet's cache namespace.
const namespace = "bench"

// newNode builds node id on tg: its own client, bus (in tg's mode) and
// cache, with an arrivals handler beside the cache's; it returns once the
// bus is healthy.
func newNode(ctx context.Context, id int, tg target, cfg config) (*node, error) {
	n := &node{id: id, rdb: tg.client(), arr: newArrivals()}
	var err error
	if n.bus, err = pubsub.New(n.rdb, &pubsub.Options{Mode: tg.mode}); err != nil {
		n.close()
		return nil, err
	}
	n.unregister = n.bus.Register(namespace, n.arr)
	n.cache, err = tiered.New[Item](n.rdb, &tiered.Options{
		Namespace: namespace,
		TTL:       time.Minute,
		// The lease must outlive the load, or a second node loads too
		// (see Options.LeaseTTL); likewise the load timeout.
		LeaseTTL:    max(2*time.Second, 4*cfg.loader),
		LoadTimeout: max(tiered.DefaultLoadTimeout, 4*cfg.loader),
		Bus:         tiered.NewBusFrom(n.bus),
	})
	if err != nil {
		n.close()
		return nil, err
	}
	if err := waitUpTo(ctx, nodeReadyTimeout, n.bus.WaitHealthy); err != nil {
		n.close()
		return nil, fmt.Errorf("node %d: bus never became healthy: %w", id, err)
	}
	return n, nil
}

func (n *node) close() {
	if n.unregister != nil {
		n.unregister()
	}
	if n.cache != nil {
		n.cache.Close()
	}
	if n.bus != nil {
		n.bus.Close()
	}
	n.rdb.Close()
}

// arrivals is a second handler on a node's bus for the cache's namespace,
// beside the cache's own: it records when the bus delivered the first
// invalidation of each key, for the diagnostics.
//
// It also lets a reader sleep until then instead of spinning: see
// pause.
type arrivals struct {
	mu      sync.Mutex // guards at and watches
	at      map[string]time.Time
	watches map[string]chan struct{} // closed at the key's first invalidation
}

func newArrivals() *arrivals {
	return &arrivals{at: map[string]time.Time{}, watches: map[string]chan struct{}{}}
}

func (a *arrivals) Invalidate(keys []string) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range keys {
		if _, ok := a.at[k]; ok {
			continue
		}
		a.at[k] = now
		if ch, ok := a.watches[k]; ok {
			close(ch)
			delete(a.watches, k)
		}
	}
}

// watch returns a channel closed when the bus delivers an invalidation of
// key; call it before the invalidation may happen.
func (a *arrivals) watch(key string) <-chan struct{} {
	ch := make(chan struct{})
	a.mu.Lock()
	defer a.mu.Unlock()
	a.watches[key] = ch
	return ch
}

func (a *arrivals) Wake([]string) {}
func (a *arrivals) Reset()        {}

// take returns and forgets the arrival time of key's invalidation.
func (a *arrivals) take(key string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[key]
	delete(a.at, key)
	delete(a.watches, key)
	return t, ok
}
