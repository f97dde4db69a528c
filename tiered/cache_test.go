package tiered

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
)

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t, redistest.RefusedAddr(t))
	for _, tc := range []struct {
		name string
		opts *Options
		want string
	}{
		{"nil options", nil, "Namespace and TTL are required"},
		{"no TTL", &Options{Namespace: "p"}, "TTL must be > 0"},
		{"negative TTL", &Options{Namespace: "p", TTL: -time.Second}, "TTL must be > 0"},
		{"no namespace", &Options{TTL: time.Minute}, "Namespace is required"},
		{"long namespace", &Options{Namespace: strings.Repeat("n", pubsub.MaxNamespaceBytes+1), TTL: time.Minute}, "Namespace longer than"},
		{"brace in namespace", &Options{Namespace: "p{x}", TTL: time.Minute}, "invalid namespace"},
		{"negative L1TTL", &Options{Namespace: "p", TTL: time.Minute, L1TTL: -1}, "L1TTL must not be negative"},
		{"huge MaxKeyBytes", &Options{Namespace: "p", TTL: time.Minute, MaxKeyBytes: 1 << 20}, "MaxKeyBytesLimit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New[Product](rdb, tc.opts)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidOptions mentioning %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "tiered: ") {
				t.Fatalf("err %q lacks the tiered: prefix", err)
			}
		})
	}
}

// TestCacheAside is the cache-aside contract at its simplest: the first
// read loads, the second makes no database call, and after Delete the key
// is gone from both tiers.
func TestCacheAside(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		db := &countingDB{rows: map[string]Product{"1": {ID: 1, Name: "cup", Version: 1}}}

		first, err := c.GetOrLoad(ctx, "1", db)
		if err != nil || first.Name != "cup" || db.calls.Load() != 1 {
			t.Fatalf("first read = %+v, %v, %d loads; want cup, nil, 1", first, err, db.calls.Load())
		}
		if _, ok := inL1(c)("1"); !ok {
			t.Fatal("loaded value is not in L1")
		}
		if n, _ := rdb.Exists(ctx, "test:{1}").Result(); n != 1 {
			t.Fatal("loaded value is not in Redis")
		}
		second, err := c.GetOrLoad(ctx, "1", db)
		if err != nil || second != first || db.calls.Load() != 1 {
			t.Fatalf("second read = %+v, %v, %d loads; want a hit", second, err, db.calls.Load())
		}
		if s := c.Stats(); s.L1Hits != 1 || s.Loads != 1 || s.Misses != 1 {
			t.Fatalf("stats = %+v", s)
		}

		if err := c.Delete(ctx, "1"); err != nil {
			t.Fatal(err)
		}
		if _, ok := inL1(c)("1"); ok {
			t.Fatal("deleted key still in L1")
		}
		if n, _ := rdb.Exists(ctx, "test:{1}").Result(); n != 0 {
			t.Fatal("deleted key still in Redis")
		}
		if _, err := c.Get(ctx, "1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
		}
		db.rows["1"] = Product{ID: 1, Name: "mug", Version: 2}
		third, err := c.GetOrLoad(ctx, "1", db)
		if err != nil || third.Name != "mug" || db.calls.Load() != 2 {
			t.Fatalf("read after Delete = %+v, %v, %d loads; want a reload of mug", third, err, db.calls.Load())
		}
	})
}

// TestSingleflight: N goroutines missing one key make one Redis read and one
// loader call.
func TestSingleflight(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		counter := &cmdCounter{}
		rdb.AddHook(counter)
		release := make(chan struct{})
		var loads sync.WaitGroup
		loads.Add(1)
		db := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
			loads.Done() // a second call panics: negative WaitGroup counter
			<-release
			return Product{ID: 7}, nil
		})
		const n = 100
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := c.GetOrLoad(ctx, "7", db)
				if err == nil && p.ID != 7 {
					err = fmt.Errorf("got %+v", p)
				}
				errs <- err
			}()
		}
		loads.Wait() // the loader is running: every caller has arrived or will join
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if s := c.Stats(); s.Loads != 1 {
			t.Fatalf("loads = %d, want 1", s.Loads)
		}
		// One flight reads the key once, and at most twice more if the
		// client opened a connection meanwhile and the server check that
		// follows it was slow (readL2); 100 callers without the flight
		// would make 100 reads.
		if g := counter.get.Load(); g < 1 || g > 3 {
			t.Fatalf("Redis GETs = %d, want 1 (at most 3)", g)
		}
	})
}

// TestCallerCancelDoesNotFailOthers: the shared load does not run on the
// first caller's context.
func TestCallerCancelDoesNotFailOthers(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		c, _ := newNode[Product](t, b.Addr, Options{})
		started, release := make(chan struct{}), make(chan struct{})
		db := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
			close(started)
			select {
			case <-release:
				return Product{ID: 1}, nil
			case <-ctx.Done():
				return Product{}, ctx.Err()
			}
		})
		first, cancel := context.WithCancel(context.Background())
		firstErr := make(chan error, 1)
		go func() {
			_, err := c.GetOrLoad(first, "1", db)
			firstErr <- err
		}()
		<-started
		secondRes := make(chan error, 1)
		go func() {
			p, err := c.GetOrLoad(context.Background(), "1", db)
			if err == nil && p.ID != 1 {
				err = fmt.Errorf("got %+v", p)
			}
			secondRes <- err
		}()
		cancel()
		if err := <-firstErr; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled caller got %v, want context.Canceled", err)
		}
		close(release)
		if err := <-secondRes; err != nil {
			t.Fatalf("other caller failed: %v", err)
		}
	})
}

// TestLoaderPanic: every waiter gets an error wrapping the panic; the
// process survives and the key can be loaded afterwards.
func TestLoaderPanic(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		boom := errors.New("boom")
		started, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		db := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
			// A waiter that arrives after the flight ended starts one of its
			// own, whose loader panics the same way.
			once.Do(func() { close(started) })
			<-release
			panic(boom)
		})
		const n = 10
		errs := make(chan error, n)
		go func() {
			_, err := c.GetOrLoad(ctx, "p", db)
			errs <- err
		}()
		<-started
		for range n - 1 {
			go func() {
				_, err := c.GetOrLoad(ctx, "p", db)
				errs <- err
			}()
		}
		close(release)
		for range n {
			err := <-errs
			var pe *PanicError
			if !errors.Is(err, ErrLoaderPanic) || !errors.As(err, &pe) || !errors.Is(err, boom) {
				t.Fatalf("waiter got %v, want a *PanicError wrapping boom", err)
			}
		}
		if n, _ := rdb.Exists(ctx, "test:{p}:lease").Result(); n != 0 {
			t.Fatal("the panicking holder did not release its lease")
		}
		p, err := c.GetOrLoad(ctx, "p", LoaderFunc[Product](func(context.Context, string) (Product, error) {
			return Product{ID: 2}, nil
		}))
		if err != nil || p.ID != 2 {
			t.Fatalf("load after panic = %+v, %v", p, err)
		}
		// Every panicking call counts as a load error (usually one; a waiter
		// that arrived after the first flight ended ran a second).
		if s := c.Stats(); s.LoadErrors == 0 || s.LoadErrors != s.Loads-1 {
			t.Fatalf("LoadErrors = %d of %d loads, want all but the last", s.LoadErrors, s.Loads)
		}
	})
}

// logRecorder is a slog handler that keeps records.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }
func (h *logRecorder) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// TestRedisDown: with Redis unreachable GetOrLoad returns the loader's value;
// Get returns ErrUnavailable, not ErrNotFound; failures are counted and
// logged at a limited rate.
func TestRedisDown(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rec := &logRecorder{}
		c, _ := newNode[Product](t, b.Addr, Options{Logger: slog.New(rec), OpTimeout: 100 * time.Millisecond})
		b.Stop()
		db := &countingDB{rows: map[string]Product{"1": {ID: 1}, "2": {ID: 2}}}
		for _, k := range []string{"1", "2", "1"} {
			p, err := c.GetOrLoad(ctx, k, db)
			if err != nil || fmt.Sprint(p.ID) != k {
				t.Fatalf("GetOrLoad(%s) with Redis down = %+v, %v", k, p, err)
			}
		}
		_, err := c.Get(ctx, "3")
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
			t.Fatalf("Get with Redis down: %v, want ErrUnavailable", err)
		}
		// The loads filled L1; a failed Set or Delete drops the key from it
		// (whether the write reached Redis is unknown).
		for _, k := range []string{"1", "2"} {
			if _, ok := inL1(c)(k); !ok {
				t.Fatalf("%s not in L1 after a load with Redis down", k)
			}
		}
		if err := c.Set(ctx, "1", Product{}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Set with Redis down: %v, want ErrUnavailable", err)
		}
		if err := c.Delete(ctx, "2"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Delete with Redis down: %v, want ErrUnavailable", err)
		}
		for _, k := range []string{"1", "2"} {
			if _, ok := inL1(c)(k); ok {
				t.Fatalf("%s still in L1 after a failed write", k)
			}
		}
		s := c.Stats()
		if s.L2Errors < 4 {
			t.Fatalf("L2Errors = %d, want ≥ 4", s.L2Errors)
		}
		if n := rec.count("tiered: redis unavailable"); n != 1 {
			t.Fatalf("logged %d Redis failures, want 1 (rate-limited)", n)
		}
	})
}

// TestBadInput: bad keys and values get a sentinel error and nothing is read,
// loaded or written.
func TestBadInput(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[string](t, b.Addr, Options{MaxKeyBytes: 8, MaxValueBytes: 16})
		loader := LoaderFunc[string](func(context.Context, string) (string, error) {
			t.Error("loader called for a bad key")
			return "", nil
		})
		long := strings.Repeat("k", 9)
		big := strings.Repeat("v", 20)
		for _, tc := range []struct {
			name string
			do   func() error
			want error
		}{
			{"Get empty", func() error { _, err := c.Get(ctx, ""); return err }, ErrKeyEmpty},
			{"GetOrLoad empty", func() error { _, err := c.GetOrLoad(ctx, "", loader); return err }, ErrKeyEmpty},
			{"Set empty", func() error { return c.Set(ctx, "", "v") }, ErrKeyEmpty},
			{"Delete empty", func() error { return c.Delete(ctx, "ok", "") }, ErrKeyEmpty},
			{"Get long", func() error { _, err := c.Get(ctx, long); return err }, ErrKeyTooLong},
			{"GetOrLoad long", func() error { _, err := c.GetOrLoad(ctx, long, loader); return err }, ErrKeyTooLong},
			{"Set long", func() error { return c.Set(ctx, long, "v") }, ErrKeyTooLong},
			{"Delete long", func() error { return c.Delete(ctx, long) }, ErrKeyTooLong},
			{"Set big", func() error { return c.Set(ctx, "ok", big) }, ErrValueTooLarge},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.do(); !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
			})
		}
		// The only key may be the namespace's run marker (see maintain.go).
		if keys, _ := rdb.Keys(ctx, "*").Result(); len(keys) > 1 || len(keys) == 1 && keys[0] != "test:run_id" {
			t.Fatalf("bad input wrote keys to Redis: %q", keys)
		}
		if _, ok := inL1(c)("ok"); ok {
			t.Fatal("bad input wrote to L1")
		}
		if s := c.Stats(); s.Rejected != 9 {
			t.Fatalf("Rejected = %d, want 9", s.Rejected)
		}
		// A loaded value too large to cache is returned, not cached.
		v, err := c.GetOrLoad(ctx, "big", LoaderFunc[string](func(context.Context, string) (string, error) {
			return big, nil
		}))
		if err != nil || v != big {
			t.Fatalf("GetOrLoad of a too-large value = %q, %v", v, err)
		}
		if n, _ := rdb.Exists(ctx, "test:{big}").Result(); n != 0 {
			t.Fatal("too-large loaded value was written to Redis")
		}
		// The lease is marked uncacheable, so that waiting nodes load at
		// once instead of in turn (TestUncacheableLoadsInParallel).
		if tok, _ := rdb.Get(ctx, "test:{big}:lease").Result(); tok != "!" {
			t.Fatalf("lease token %q after a too-large value, want the uncacheable marker", tok)
		}
		if _, ok := inL1(c)("big"); ok {
			t.Fatal("too-large loaded value was stored in L1")
		}
	})
}

// TestCorruptValue: bytes in Redis that do not decode are a miss; the key is
// deleted and counted, and GetOrLoad reloads.
func TestCorruptValue(t *testing.T) {
	good := l2.Envelope{Expiry: time.Now().Add(time.Hour), Payload: []byte(`{"id":1}`)}.AppendBinary(nil)
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 0xff; return b }
	cases := map[string][]byte{
		"empty":          {},
		"garbage":        []byte("hello, world, not an envelope"),
		"wrong magic":    flip(good, 0),
		"wrong version":  flip(good, 1),
		"unknown flags":  flip(good, 2),
		"truncated":      good[:10],
		"bad checksum":   flip(good, len(good)-1),
		"codec rejects":  l2.Envelope{Expiry: time.Now().Add(time.Hour), Payload: []byte(`{"id":`)}.AppendBinary(nil),
		"codec wrong ty": l2.Envelope{Expiry: time.Now().Add(time.Hour), Payload: []byte(`"a string"`)}.AppendBinary(nil),
	}
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		var corrupt uint64
		for name, raw := range cases {
			t.Run(name, func(t *testing.T) {
				key := strings.ReplaceAll(name, " ", "-")
				rk := "test:{" + key + "}"
				if err := rdb.Set(ctx, rk, raw, time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Get(ctx, key); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Get of corrupt value: %v, want ErrNotFound", err)
				}
				corrupt++
				if s := c.Stats(); s.Corrupt != corrupt {
					t.Fatalf("Corrupt = %d, want %d", s.Corrupt, corrupt)
				}
				if n, _ := rdb.Exists(ctx, rk).Result(); n != 0 {
					t.Fatal("corrupt value was not deleted")
				}
				rdb.Set(ctx, rk, raw, time.Minute)
				p, err := c.GetOrLoad(ctx, key, LoaderFunc[Product](func(context.Context, string) (Product, error) {
					return Product{ID: 9}, nil
				}))
				if err != nil || p.ID != 9 {
					t.Fatalf("GetOrLoad over corrupt value = %+v, %v", p, err)
				}
				corrupt++
				stored, _ := rdb.Get(ctx, rk).Bytes()
				if _, err := l2.DecodeEnvelope(stored); err != nil {
					t.Fatalf("reloaded value in Redis does not decode: %v", err)
				}
			})
		}
	})
}

// TestCorruptDeleteKeepsNewValue: deleting a corrupt value must not delete a
// good value written after it was read.
func TestCorruptDeleteKeepsNewValue(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		rdb.Set(ctx, "test:{k}", "garbage", time.Minute)
		// Between the read of the garbage and its deletion, another node
		// writes a good value.
		raw, _ := c.l2.Get(ctx, "k")
		other, _ := newNode[Product](t, b.Addr, Options{})
		if err := other.Set(ctx, "k", Product{ID: 5}); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := c.hit(ctx, c.begin("k"), "k", raw); ok {
			t.Fatal("garbage decoded")
		}
		p, err := c.Get(ctx, "k")
		if err != nil || p.ID != 5 {
			t.Fatalf("good value lost: %+v, %v", p, err)
		}
	})
}

// TestFillGuardDeleteDuringLoad: a value loaded before a Delete must not be
// stored in L1 or Redis after it.
func TestFillGuardDeleteDuringLoad(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		started, release := make(chan struct{}), make(chan struct{})
		done := make(chan Product)
		go func() {
			p, _ := c.GetOrLoad(ctx, "1", LoaderFunc[Product](func(context.Context, string) (Product, error) {
				close(started)
				<-release
				return Product{ID: 1, Version: 1}, nil // read before the Delete
			}))
			done <- p
		}()
		<-started
		if err := c.Delete(ctx, "1"); err != nil {
			t.Fatal(err)
		}
		close(release)
		if p := <-done; p.Version != 1 {
			t.Fatalf("loader's caller got %+v", p)
		}
		if p, ok := inL1(c)("1"); ok {
			t.Fatalf("L1 holds %+v loaded before the Delete", p)
		}
		if n, _ := rdb.Exists(ctx, "test:{1}").Result(); n != 0 {
			t.Fatal("Redis holds the value loaded before the Delete")
		}
		if s := c.Stats(); s.StaleDiscards != 1 {
			t.Fatalf("StaleDiscards = %d, want 1", s.StaleDiscards)
		}
	})
}

// TestFillGuardL2Hit: a value read from Redis before a local Delete or Set
// must not enter L1 after it. This isolates the L1 fill guard: the value was
// read, not loaded, so the lease compare-and-set plays no part.
func TestFillGuardL2Hit(t *testing.T) {
	for _, write := range []string{"Delete", "Set"} {
		t.Run(write, func(t *testing.T) {
			redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
				ctx := context.Background()
				c, _ := newNode[Product](t, b.Addr, Options{})
				if err := c.Set(ctx, "1", Product{Version: 1}); err != nil {
					t.Fatal(err)
				}
				c.l1.Invalidate("1") // L1 cold, Redis holds version 1
				reached, release := make(chan struct{}), make(chan struct{})
				c.beforeFill = func(string) {
					close(reached)
					<-release
				}
				done := make(chan Product)
				go func() {
					p, _ := c.Get(ctx, "1")
					done <- p
				}()
				select {
				case <-reached: // the flight holds version 1, read from Redis
				case p := <-done:
					t.Fatalf("Get returned %+v without filling L1; stats %+v", p, c.Stats())
				}
				c.beforeFill = nil
				var err error
				if write == "Delete" {
					err = c.Delete(ctx, "1")
				} else {
					err = c.Set(ctx, "1", Product{Version: 2})
				}
				if err != nil {
					t.Fatal(err)
				}
				close(release)
				<-done
				if p, ok := inL1(c)("1"); ok && p.Version == 1 {
					t.Fatalf("L1 holds version 1 after the %s", write)
				}
				p, err := c.Get(ctx, "1")
				if write == "Set" && (err != nil || p.Version != 2) {
					t.Fatalf("Get after Set = %+v, %v", p, err)
				}
				if write == "Delete" && !errors.Is(err, ErrNotFound) {
					t.Fatalf("Get after Delete = %+v, %v", p, err)
				}
			})
		})
	}
}

// TestNoReadYourWriteFromL1: correctness never depends on an L1 write being
// applied. With an L1 too small to admit anything, every Set is read back.
func TestNoReadYourWriteFromL1(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for _, size := range []int64{1, 64 << 20} {
			c, _ := newNode[Product](t, b.Addr, Options{Namespace: fmt.Sprint("ryw", size), L1MaxBytes: size})
			for i := range 200 {
				if err := c.Set(ctx, "k", Product{Version: i}); err != nil {
					t.Fatal(err)
				}
				p, err := c.Get(ctx, "k")
				if err != nil || p.Version != i {
					t.Fatalf("L1 size %d: Get after Set(%d) = %+v, %v", size, i, p, err)
				}
			}
		}
	})
}

// TestNegativeCaching: a loader's ErrNotFound is cached for NegativeTTL.
func TestNegativeCaching(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{NegativeTTL: 30 * time.Second})
		db := &countingDB{rows: map[string]Product{}}
		for i := range 3 {
			if _, err := c.GetOrLoad(ctx, "nope", db); !errors.Is(err, ErrNotFound) {
				t.Fatalf("read %d: %v, want ErrNotFound", i, err)
			}
			c.l1.Wait()
		}
		if db.calls.Load() != 1 {
			t.Fatalf("loader calls = %d, want 1", db.calls.Load())
		}
		if s := c.Stats(); s.NegativeHits != 2 {
			t.Fatalf("NegativeHits = %d, want 2", s.NegativeHits)
		}
		pttl, _ := rdb.PTTL(ctx, "test:{nope}").Result()
		if pttl <= 0 || pttl > 30*time.Second {
			t.Fatalf("negative entry PTTL = %v, want (0, 30s]", pttl)
		}
		// Another node sees the negative entry in Redis.
		other, _ := newNode[Product](t, b.Addr, Options{})
		if _, err := other.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("other node: %v", err)
		}
		if s := other.Stats(); s.NegativeHits != 1 || s.L2Hits != 1 {
			t.Fatalf("other node stats = %+v", s)
		}
	})
}

// TestTTLs: every value gets a Redis TTL in [TTL, TTL+Jitter), and an L1
// entry never outlives what was left of its Redis TTL.
func TestTTLs(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{TTL: time.Hour, Jitter: time.Minute, L1TTL: time.Hour})
		for i := range 20 {
			k := fmt.Sprint(i)
			if err := c.Set(ctx, k, Product{ID: i}); err != nil {
				t.Fatal(err)
			}
			pttl, _ := rdb.PTTL(ctx, "test:{"+k+"}").Result()
			if pttl < time.Hour-time.Second || pttl >= time.Hour+time.Minute {
				t.Fatalf("PTTL = %v, want [1h, 1h1m)", pttl)
			}
		}
		// A value with 300ms left in Redis is read into L1; L1 must drop it
		// when Redis does, not an hour later.
		env := l2.Envelope{Expiry: time.Now().Add(300 * time.Millisecond), Payload: []byte(`{"id":42}`)}
		rdb.Set(ctx, "test:{short}", env.AppendBinary(nil), 300*time.Millisecond)
		if p, err := c.Get(ctx, "short"); err != nil || p.ID != 42 {
			t.Fatalf("Get = %+v, %v", p, err)
		}
		if _, ok := inL1(c)("short"); !ok {
			t.Fatal("value not in L1")
		}
		time.Sleep(400 * time.Millisecond) // a real clock: ristretto's TTLs use time.Now
		if _, ok := c.l1.Get("short"); ok {
			t.Fatal("L1 entry outlived its Redis TTL")
		}
		// L1TTL bounds how long an entry lives in L1 whatever its Redis TTL:
		// the backstop against an invalidation lost without a visible gap.
		short, _ := newNode[Product](t, b.Addr, Options{Namespace: "l1ttl", TTL: time.Hour, L1TTL: 200 * time.Millisecond})
		if err := short.Set(ctx, "k", Product{ID: 1}); err != nil {
			t.Fatal(err)
		}
		if _, ok := inL1(short)("k"); !ok {
			t.Fatal("value not in L1")
		}
		time.Sleep(300 * time.Millisecond)
		if _, ok := short.l1.Get("k"); ok {
			t.Fatal("L1 entry outlived L1TTL")
		}
	})
}

// TestSharedClient: caches of different value types and namespaces share one
// client and one bus without seeing each other's keys.
func TestSharedClient(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rdb := redistest.Client(t, b.Addr)
		bus, err := NewBus(rdb, &BusOptions{MaxStaleness: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		products, _ := newNode[Product](t, b.Addr, Options{Namespace: "products", Bus: bus})
		names, err := New[string](rdb, &Options{Namespace: "names", TTL: time.Minute, Bus: bus})
		if err != nil {
			t.Fatal(err)
		}

		defer names.Close()
		if err := products.Set(ctx, "1", Product{ID: 1}); err != nil {
			t.Fatal(err)
		}
		if err := names.Set(ctx, "1", "one"); err != nil {
			t.Fatal(err)
		}
		p, err := products.Get(ctx, "1")
		n, err2 := names.Get(ctx, "1")
		if err != nil || err2 != nil || p.ID != 1 || n != "one" {
			t.Fatalf("got %+v %v / %q %v", p, err, n, err2)
		}
		if n, err := rdb.Exists(ctx, "products:{1}", "names:{1}").Result(); err != nil || n != 2 {
			t.Fatalf("%d of the two namespaced Redis keys exist (%v): the namespaces share keys", n, err)
		}
		// A node of its own (own bus) deletes names/1: the shared bus must
		// hand the invalidation to names only.
		other, _ := newNode[string](t, b.Addr, Options{Namespace: "names"})
		if err := other.Delete(ctx, "1"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "names to hear the invalidation", func() bool { return names.Stats().Invalidations >= 1 })
		if n := products.Stats().Invalidations; n != 0 {
			t.Fatalf("an invalidation of names reached products (%d)", n)
		}
		if p, err := products.Get(ctx, "1"); err != nil || p.ID != 1 {
			t.Fatalf("deleting names/1 affected products/1: %+v, %v", p, err)
		}
		names.Close()
		if !products.Bus().Healthy() {
			t.Fatal("closing a cache closed the shared bus")
		}
	})
}

// TestClose: Close is idempotent and a closed cache says so.
func TestClose(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		c, _ := newNode[Product](t, b.Addr, Options{})
		for range 2 {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
		ctx := context.Background()
		if _, err := c.Get(ctx, "k"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Get after Close: %v", err)
		}
		if err := c.Set(ctx, "k", Product{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Set after Close: %v", err)
		}
	})
}

// replyLost is a go-redis hook that, once armed, lets the next script run on
// the server and then reports an error to the caller, as when a reply is
// lost: the write happened, the caller cannot know it.
type replyLost struct{ armed atomic.Bool }

func (h *replyLost) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *replyLost) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if (cmd.Name() == "evalsha" || cmd.Name() == "eval") && h.armed.CompareAndSwap(true, false) {
			return errors.New("injected: reply lost")
		}
		return err
	}
}
func (h *replyLost) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestFailedSetForgetsFlights: a Set whose outcome is unknown (the reply was
// lost, but the write reached Redis) is treated like a write: a caller that
// arrives after it does not join a load that began before it.
func TestFailedSetForgetsFlights(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		lost := &replyLost{}
		rdb.AddHook(lost)
		if err := c.Set(ctx, "warm", Product{}); err != nil { // loads the set script
			t.Fatal(err)
		}
		started, release := make(chan struct{}), make(chan struct{})
		old := make(chan Product, 1)
		go func() {
			p, _ := c.GetOrLoad(ctx, "1", LoaderFunc[Product](func(context.Context, string) (Product, error) {
				close(started)
				<-release
				return Product{ID: 1, Version: 1}, nil // read before the Set
			}))
			old <- p
		}()
		defer func() { close(release); <-old }()
		<-started
		lost.armed.Store(true)
		if err := c.Set(ctx, "1", Product{ID: 1, Version: 2}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Set with its reply lost = %v, want ErrUnavailable", err)
		}
		got := make(chan Product, 1)
		go func() {
			p, _ := c.GetOrLoad(ctx, "1", LoaderFunc[Product](func(context.Context, string) (Product, error) {
				return Product{ID: 1, Version: 2}, nil
			}))
			got <- p
		}()
		select {
		case p := <-got:
			if p.Version != 2 {
				t.Fatalf("read after the Set = %+v, want version 2", p)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a read after the Set joined the load that began before it")
		}
	})
}
