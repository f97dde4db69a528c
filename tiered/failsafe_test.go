package tiered

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// TestFailSafe: a failed load of an expired key serves the expired value
// with a nil error, says so in ReadInfo and Stats, and does not call the
// loader again for FailSafeThrottle.
func TestFailSafe(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, _ := newNode[Product](t, b.Addr, Options{TTL: 200 * time.Millisecond, Jitter: -1, MaxStale: time.Minute, FailSafeThrottle: 500 * time.Millisecond})
		db := newVersionDB()
		if _, err := c.GetOrLoad(ctx, "k", db); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond) // expired, still in Redis
		boom := errors.New("database down")
		db.fail(boom)
		var info ReadInfo
		p, err := c.GetOrLoad(WithReadInfo(ctx, &info), "k", db)
		if err != nil || p.Version != 0 {
			t.Fatalf("fail-safe read = %+v, %v", p, err)
		}
		if len(info.Stale) != 1 || !errors.Is(info.StaleCause, boom) {
			t.Fatalf("ReadInfo = %+v", info)
		}
		calls := db.calls.Load()
		for range 5 { // throttled: served from L1, no load
			var info ReadInfo
			if p, err := c.GetOrLoad(WithReadInfo(ctx, &info), "k", db); err != nil || len(info.Stale) != 1 {
				t.Fatalf("throttled read = %+v, %v, %+v", p, err, info)
			}
		}
		if n := db.calls.Load(); n != calls {
			t.Fatalf("the loader ran %d more times within FailSafeThrottle", n-calls)
		}
		if s := c.Stats(); s.StaleServed < 6 {
			t.Fatalf("StaleServed = %d", s.StaleServed)
		}
		// After the throttle the loader is tried again, and recovers.
		db.fail(nil)
		db.bump("k")
		waitFor(t, 5*time.Second, "a fresh load", func() bool {
			p, err := c.GetOrLoad(ctx, "k", db)
			return err == nil && p.Version == 1
		})
		// Without an expired value the error is the caller's.
		db.fail(boom)
		if _, err := c.GetOrLoad(ctx, "cold", db); !errors.Is(err, boom) {
			t.Fatalf("cold key: %v", err)
		}
	})
}

// TestFailSafeNeverServesInvalidated: an expired value removed by Delete or
// replaced by Set is never served by fail-safe, even when the write lands
// while the failing load runs.
func TestFailSafeNeverServesInvalidated(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		opts := Options{TTL: 200 * time.Millisecond, Jitter: -1, MaxStale: time.Minute}
		c, _ := newNode[Product](t, b.Addr, opts)
		writer, _ := newNode[Product](t, b.Addr, opts)
		db := newVersionDB()
		boom := errors.New("database down")
		expired := func(k string) {
			t.Helper()
			db.fail(nil)
			if _, err := c.GetOrLoad(ctx, k, db); err != nil {
				t.Fatal(err)
			}
			time.Sleep(250 * time.Millisecond)
			db.fail(boom)
		}
		// Deleted before the read.
		expired("before")
		if err := writer.Delete(ctx, "before"); err != nil {
			t.Fatal(err)
		}
		if p, err := c.GetOrLoad(ctx, "before", db); !errors.Is(err, boom) {
			t.Fatalf("deleted key served: %+v, %v", p, err)
		}
		// Deleted, or overwritten, while the failing load runs.
		for _, write := range []func(k string) error{
			func(k string) error { return writer.Delete(ctx, k) },
			func(k string) error { return writer.Set(ctx, k, Product{Version: 99}) },
		} {
			k := "during"
			expired(k)
			gate, open := make(chan struct{}), make(chan struct{})
			db.mu.Lock()
			db.gate = func(string) { close(gate); <-open }
			db.mu.Unlock()
			res := make(chan error, 1)
			go func() {
				p, err := c.GetOrLoad(ctx, k, db)
				if err == nil && p.Version == 0 {
					err = errors.New("served the invalidated value")
				}
				res <- err
			}()
			<-gate
			if err := write(k); err != nil {
				t.Fatal(err)
			}
			close(open)
			if err := <-res; !errors.Is(err, boom) {
				t.Fatalf("write during the load: %v, want the loader's error", err)
			}
			db.mu.Lock()
			db.gate = nil
			db.mu.Unlock()
			if err := writer.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		if s := c.Stats(); s.StaleServed != 0 {
			t.Fatalf("StaleServed = %d", s.StaleServed)
		}
	})
}

// TestSoftTimeout: a load slower than SoftTimeout of an expired key lets
// its callers have the expired value, and lands in both tiers afterwards.
func TestSoftTimeout(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, _ := newNode[Product](t, b.Addr, Options{TTL: 200 * time.Millisecond, Jitter: -1, MaxStale: time.Minute,
			SoftTimeout: 50 * time.Millisecond, FailSafeThrottle: -1})
		other, _ := newNode[Product](t, b.Addr, Options{TTL: 200 * time.Millisecond, Jitter: -1, MaxStale: time.Minute})
		db := newVersionDB()
		if _, err := c.GetOrLoad(ctx, "k", db); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
		db.bump("k")
		db.mu.Lock()
		db.gate = func(string) { time.Sleep(500 * time.Millisecond) }
		db.mu.Unlock()
		var info ReadInfo
		start := time.Now()
		p, err := c.GetOrLoad(WithReadInfo(ctx, &info), "k", db)
		if took := time.Since(start); err != nil || p.Version != 0 || took > 400*time.Millisecond {
			t.Fatalf("soft timeout: %+v, %v after %v", p, err, took)
		}
		if !errors.Is(info.StaleCause, ErrSoftTimeout) {
			t.Fatalf("ReadInfo = %+v", info)
		}
		waitFor(t, 5*time.Second, "the background load to land", func() bool {
			p, err := other.Get(ctx, "k")
			return err == nil && p.Version == 1
		})
	})
}

// TestPassThrough: a loader's ErrPassThrough reaches every caller as is:
// no expired value in its place, not a load error, nothing cached.
func TestPassThrough(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{TTL: 200 * time.Millisecond, Jitter: -1, MaxStale: time.Minute})
		db := newVersionDB()
		if _, err := c.GetOrLoad(ctx, "k", db); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond) // expired, kept for fail-safe
		pass := fmt.Errorf("not for sharing: %w", ErrPassThrough)
		db.fail(pass)
		var info ReadInfo
		if _, err := c.GetOrLoad(WithReadInfo(ctx, &info), "k", db); !errors.Is(err, ErrPassThrough) || len(info.Stale) != 0 {
			t.Fatalf("GetOrLoad = %v, ReadInfo %+v; want ErrPassThrough and no stale value", err, info)
		}
		if s := c.Stats(); s.LoadErrors != 0 || s.StaleServed != 0 {
			t.Fatalf("LoadErrors %d, StaleServed %d", s.LoadErrors, s.StaleServed)
		}
		if raw, _ := rdb.Get(ctx, "test:{k}").Bytes(); raw == nil {
			t.Fatal("the expired value is gone")
		}
	})
}
