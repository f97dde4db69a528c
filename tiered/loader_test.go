package tiered

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/l2"
)

// TestPerEntryTTL: SetWithTTL and a loader's OverrideTTL give one value a
// TTL of its own, in Redis and in L1; jitter scales with it, MaxTTL caps
// it, and negative results take the override too.
func TestPerEntryTTL(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{TTL: time.Hour, Jitter: 10 * time.Minute, MaxTTL: 2 * time.Hour, L1TTL: 2 * time.Hour})
		pttl := func(k string) time.Duration {
			t.Helper()
			d, err := rdb.PTTL(ctx, "test:{"+k+"}").Result()
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		within := func(what string, got, lo, hi time.Duration) {
			t.Helper()
			if got < lo || got >= hi {
				t.Fatalf("%s: TTL %v, want [%v, %v)", what, got, lo, hi)
			}
		}
		if err := c.SetWithTTL(ctx, "short", Product{ID: 1}, 6*time.Minute); err != nil {
			t.Fatal(err)
		}
		// 6m is a tenth of TTL: the jitter (10m for TTL) is a tenth too.
		within("SetWithTTL", pttl("short"), 6*time.Minute-time.Second, 7*time.Minute)
		if err := c.SetWithTTL(ctx, "long", Product{ID: 2}, 2*time.Hour); err != nil {
			t.Fatal(err)
		}
		within("SetWithTTL at MaxTTL", pttl("long"), 2*time.Hour-time.Second, 2*time.Hour+20*time.Minute)
		for _, ttl := range []time.Duration{0, -time.Second, 2*time.Hour + 1} {
			if err := c.SetWithTTL(ctx, "bad", Product{}, ttl); !errors.Is(err, ErrInvalidTTL) {
				t.Fatalf("SetWithTTL(%v) = %v, want ErrInvalidTTL", ttl, err)
			}
		}
		if n, _ := rdb.Exists(ctx, "test:{bad}").Result(); n != 0 {
			t.Fatal("a rejected SetWithTTL wrote")
		}

		override := func(ttl time.Duration, err error) Loader[Product] {
			return LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
				OverrideTTL(ctx, ttl)
				return Product{ID: 3}, err
			})
		}
		if _, err := c.GetOrLoad(ctx, "loaded", override(90*time.Second, nil)); err != nil {
			t.Fatal(err)
		}
		within("OverrideTTL", pttl("loaded"), 89*time.Second, 90*time.Second+15*time.Second)
		if _, err := c.GetOrLoad(ctx, "capped", override(10*time.Hour, nil)); err != nil {
			t.Fatal(err)
		}
		within("OverrideTTL over MaxTTL", pttl("capped"), 2*time.Hour-time.Second, 2*time.Hour+20*time.Minute)
		if _, err := c.GetOrLoad(ctx, "gone", override(5*time.Second, ErrNotFound)); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		within("OverrideTTL of a not found", pttl("gone"), 4*time.Second, 5*time.Second+time.Millisecond)
		// OverrideTTL outside a load does nothing (and does not panic).
		OverrideTTL(ctx, time.Second)

		// The L1 TTL follows the entry's: a 300ms value leaves L1 with it.
		if _, err := c.GetOrLoad(ctx, "brief", override(300*time.Millisecond, nil)); err != nil {
			t.Fatal(err)
		}
		if _, ok := inL1(c)("brief"); !ok {
			t.Fatal("value not in L1")
		}
		time.Sleep(400 * time.Millisecond)
		if _, ok := c.l1.Get("brief"); ok {
			t.Fatal("L1 entry outlived its own TTL")
		}
	})
	if _, err := New[int](nil, &Options{Namespace: "x", TTL: time.Hour, MaxTTL: time.Minute}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("MaxTTL < TTL: %v", err)
	}
}

// TestLoadTimeout: a loader that ignores its context does not hold its
// callers past LoadTimeout, and the cache's deadline is told apart from
// the caller's by ErrLoadTimeout.
func TestLoadTimeout(t *testing.T) {
	c, _ := newNode[Product](t, redistest.Mini(t).Addr, Options{LoadTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	release := make(chan struct{})
	defer close(release)
	deaf := LoaderFunc[Product](func(context.Context, string) (Product, error) {
		<-release // ignores its context
		return Product{ID: 1}, nil
	})
	polite := LoaderFunc[Product](func(ctx context.Context, _ string) (Product, error) {
		<-ctx.Done()
		return Product{}, ctx.Err()
	})
	for name, l := range map[string]Loader[Product]{"ignores ctx": deaf, "honours ctx": polite} {
		start := time.Now()
		_, err := c.GetOrLoad(ctx, name, l)
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: the caller waited %v, LoadTimeout is 100ms", name, took)
		}
		if !errors.Is(err, ErrLoadTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want ErrLoadTimeout and DeadlineExceeded", name, err)
		}
	}
	// The caller's own deadline is not ErrLoadTimeout.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := c.GetOrLoad(cctx, "own", polite); errors.Is(err, ErrLoadTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("caller's deadline: err = %v", err)
	}
}

// TestUncacheableLoadsInParallel: a value too large to cache makes the
// nodes that wait for its lease load at once, in parallel, not one after
// another.
func TestUncacheableLoadsInParallel(t *testing.T) {
	redistest.Require(t)
	srv := redistest.Start(t)
	ctx := context.Background()
	var running, peak atomic.Int64
	big := LoaderFunc[[]byte](func(context.Context, string) ([]byte, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
		running.Add(-1)
		return make([]byte, 4096), nil
	})
	var nodes []*Cache[[]byte]
	for range 3 {
		c, _ := newNode[[]byte](t, srv.Addr, Options{MaxValueBytes: 1024})
		nodes = append(nodes, c)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 20 * time.Millisecond) // node 0 takes the lease
			if v, err := c.GetOrLoad(ctx, "big", big); err != nil || len(v) != 4096 {
				t.Errorf("%d bytes, %v", len(v), err)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p < 2 {
		t.Fatalf("the loads ran one after another (peak %d at once, %v in all)", p, time.Since(start))
	}
}

// TestRawBytesByDefault: a cache of []byte or string stores the bytes as
// they are (JSON would store base64 or a quoted string).
func TestRawBytesByDefault(t *testing.T) {
	b := redistest.Mini(t)
	ctx := context.Background()
	blobs, rdb := newNode[[]byte](t, b.Addr, Options{Namespace: "blobs"})
	payload := make([]byte, 64)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	if err := blobs.Set(ctx, "b", payload); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.Get(ctx, "blobs:{b}").Bytes()
	if err != nil || len(raw) != l2.HeaderSize+64 {
		t.Fatalf("%d bytes in Redis for 64 raw (%v)", len(raw), err)
	}
	other, _ := newNode[[]byte](t, b.Addr, Options{Namespace: "blobs"})
	if got, err := other.Get(ctx, "b"); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("Get = %x, %v", got, err)
	}
	texts, _ := newNode[string](t, b.Addr, Options{Namespace: "texts"})
	if err := texts.Set(ctx, "t", `"quoted"`); err != nil {
		t.Fatal(err)
	}
	if raw, _ := rdb.Get(ctx, "texts:{t}").Bytes(); string(raw[l2.HeaderSize:]) != `"quoted"` {
		t.Fatalf("string stored as %q", raw[l2.HeaderSize:])
	}
}
