package tiered

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// versionDB is a database of one versioned row per key that counts loads.
type versionDB struct {
	mu      sync.Mutex
	version map[string]int // guarded by mu
	calls   atomic.Int64
	gate    func(key string) // if set, runs in every Load after the read
	err     atomic.Pointer[error]
}

func newVersionDB() *versionDB { return &versionDB{version: make(map[string]int)} }

func (db *versionDB) Load(ctx context.Context, key string) (Product, error) {
	db.calls.Add(1)
	db.mu.Lock()
	v := db.version[key]
	gate := db.gate
	db.mu.Unlock()
	if gate != nil {
		gate(key)
	}
	if p := db.err.Load(); p != nil {
		return Product{}, *p
	}
	return Product{Version: v}, nil
}

func (db *versionDB) bump(key string) {
	db.mu.Lock()
	db.version[key]++
	db.mu.Unlock()
}

func (db *versionDB) fail(err error) {
	if err == nil {
		db.err.Store(nil)
		return
	}
	db.err.Store(&err)
}

// TestRefreshAhead: past Fresh, a read returns the cached value at once
// and one background load per fleet replaces it; every node then serves
// the new one without loading it.
func TestRefreshAhead(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		opts := Options{TTL: 3 * time.Second, Fresh: 300 * time.Millisecond, Jitter: -1}
		a, _ := newNode[Product](t, b.Addr, opts)
		bn, _ := newNode[Product](t, b.Addr, opts)
		db := newVersionDB()
		if p, err := a.GetOrLoad(ctx, "k", db); err != nil || p.Version != 0 {
			t.Fatal(p, err)
		}
		if p, err := bn.GetOrLoad(ctx, "k", db); err != nil || p.Version != 0 {
			t.Fatal(p, err)
		}
		inL1(a)("k")
		inL1(bn)("k")
		db.bump("k")
		time.Sleep(400 * time.Millisecond) // past Fresh
		// Both nodes, many callers: each gets the old value at once.
		var wg sync.WaitGroup
		for _, c := range []*Cache[Product]{a, bn} {
			for range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					start := time.Now()
					p, err := c.GetOrLoad(ctx, "k", db)
					if err != nil || time.Since(start) > 100*time.Millisecond {
						t.Errorf("read past Fresh: %+v, %v after %v", p, err, time.Since(start))
					}
				}()
			}
		}
		wg.Wait()
		for _, c := range []*Cache[Product]{a, bn} {
			waitFor(t, 5*time.Second, "the refreshed value", func() bool {
				p, err := c.GetOrLoad(ctx, "k", db)
				return err == nil && p.Version == 1
			})
		}
		if n := db.calls.Load(); n != 2 {
			t.Fatalf("%d loads, want 2: the first and one refresh for the fleet", n)
		}
		if r := a.Stats().Refreshes + bn.Stats().Refreshes; r != 1 {
			t.Fatalf("%d refreshes", r)
		}
	})
}

// TestRefreshLosesToWrite: a Set during a refresh wins; the refreshed
// value is discarded from both tiers.
func TestRefreshLosesToWrite(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, _ := newNode[Product](t, b.Addr, Options{TTL: 3 * time.Second, Fresh: 100 * time.Millisecond, Jitter: -1})
		db := newVersionDB()
		if _, err := c.GetOrLoad(ctx, "k", db); err != nil {
			t.Fatal(err)
		}
		gate, open := make(chan struct{}), make(chan struct{})
		db.mu.Lock()
		db.gate = func(string) { close(gate); <-open }
		db.mu.Unlock()
		time.Sleep(150 * time.Millisecond)
		if _, err := c.GetOrLoad(ctx, "k", db); err != nil { // triggers the refresh
			t.Fatal(err)
		}
		<-gate
		if err := c.Set(ctx, "k", Product{Version: 42}); err != nil {
			t.Fatal(err)
		}
		close(open)
		waitFor(t, 5*time.Second, "the refresh to end", func() bool {
			c.refreshing.mu.Lock()
			defer c.refreshing.mu.Unlock()
			return len(c.refreshing.until) == 0
		})
		if p, err := c.Get(ctx, "k"); err != nil || p.Version != 42 {
			t.Fatalf("after the refresh: %+v, %v; want the Set's value", p, err)
		}
		if raw, _ := c.l2.Get(ctx, "k"); raw == nil {
			t.Fatal("value gone from Redis")
		} else if f, ok := c.decode(ctx, "k", raw); !ok || f.e.v.Version != 42 {
			t.Fatalf("Redis holds %+v, want the Set's value", f.e.v)
		}
	})
}
