package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// What the readers and the writer of the invalidate workload share: the
// source of truth, how a reader waits between reads, and how a trial puts
// its key in every node's L1.

// source is the source of truth: a version per key.
type source struct {
	mu       sync.Mutex // guards versions
	versions map[string]int64
}

func (s *source) get(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[key]
}

func (s *source) set(key string, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions[key] = v
}

// bump increments key's version and returns the new one.
func (s *source) bump(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions[key]++
	return s.versions[key]
}

// Load reads the source; it does not sleep.
func (s *source) Load(_ context.Context, key string) (Item, error) {
	v := s.get(key)
	if v == 0 {
		return Item{}, tiered.ErrNotFound
	}
	return Item{Key: key, Version: v}, nil
}

// pause waits between two reads of an invalidate reader.
//
// A reader must not spin while it waits for the invalidation: on a 2-core
// machine two spinning readers take both cores from redis-server and from
// the bus goroutines, and the benchmark then measures its own CPU contention
// (-spin shows it: delivery p99 of several ms against a PUBLISH p99 below
// 1ms). Nor can it sleep briefly: on Linux the Go runtime rounds a sub-ms
// sleep of an idle process up to about 1ms (epoll_wait has ms resolution),
// which would quantise every latency by up to 1ms.
//
// So the reader waits until its node's bus delivers the key's invalidation
// (delivered, closed by the arrivals handler, which runs on the bus
// goroutine beside the cache's own handler) or until cfg.poll has passed,
// whichever is first. Once delivered, it reads back to back, only yielding:
// GetOrLoad then blocks on the reload itself. The timer keeps the reader
// honest when no invalidation arrives at all: it still reads every
// cfg.poll and counts the stale reads.
func pause(cfg config, delivered <-chan struct{}) {
	if cfg.spin {
		runtime.Gosched()
		return
	}
	select {
	case <-delivered:
		runtime.Gosched()
		return
	default:
	}
	t := time.NewTimer(cfg.poll)
	defer t.Stop()
	select {
	case <-delivered:
	case <-t.C:
	}
}

// warmL1 reads key on n until the read is answered from n's L1 (L1 writes
// are applied asynchronously by ristretto, so the first read after a fill may
// still miss) and checks the version.
func warmL1(ctx context.Context, n *node, key string, src *source) error {
	want := src.get(key)
	deadline := time.Now().Add(5 * time.Second)
	for {
		before := n.cache.Stats().L1Hits
		v, err := n.cache.GetOrLoad(ctx, key, src)
		if err != nil {
			return fmt.Errorf("node %d: warming %s: %w", n.id, key, err)
		}
		if v.Version != want {
			return fmt.Errorf("node %d: warming %s: got version %d, want %d", n.id, key, v.Version, want)
		}
		if n.cache.Stats().L1Hits > before {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %d: %s never became an L1 hit", n.id, key)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
