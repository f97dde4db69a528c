package tiered

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tieredcache/tiered/internal/redistest"
)

// TestCloseWhileBusy: Close may be called, twice at once, while 100
// goroutines are inside every method, some of the writes held in Redis
// calls. Nothing panics or races (the suite runs with -race); every call
// returns a value, an error it documents, or ErrClosed; a call that begins
// after Close returned gets ErrClosed; and once Close returned, no loader
// starts and no Redis command is sent or answered: Close waited for every
// write (without that wait, a few hundred commands are).
func TestCloseWhileBusy(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		// A small L1: 300 goroutines clear it in turn (Clear,
		// Scope.Clear, InvalidateTags), and a clear costs in proportion
		// to its counters.
		var closed atomic.Bool          // set once Close returned
		closedCh := make(chan struct{}) // closed once Close returned
		// Nothing of the cache may reach Redis once Close returned.
		late := &afterClose{closed: &closed}
		rdb := redistest.Client(t, b.Addr)
		rdb.AddHook(late)
		c, err := New[Product](rdb, &Options{
			Namespace: "busy", MaxStaleness: time.Minute,
			Fresh: 20 * time.Millisecond, TTL: 50 * time.Millisecond,
			L1MaxBytes: 1 << 20, L1NumCounters: 1000,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		if err := c.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		var lateLoads atomic.Int64
		loader := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
			if closed.Load() {
				lateLoads.Add(1)
			}
			time.Sleep(time.Millisecond)
			if key == "k0" {
				return Product{}, ErrNotFound
			}
			_ = AddTags(ctx, "tag")
			return Product{Name: key}, nil
		})
		bulk := BulkLoaderFunc[Product](func(ctx context.Context, keys []string) (map[string]Product, error) {
			if closed.Load() {
				lateLoads.Add(1)
			}
			time.Sleep(time.Millisecond)
			m := make(map[string]Product, len(keys))
			for _, k := range keys {
				m[k] = Product{Name: k}
			}
			return m, nil
		})
		key := func(i int) string { return fmt.Sprintf("k%d", i%20) }
		pair := func(i int) []string { return []string{key(i), key(i + 1)} }
		methods := map[string]func(ctx context.Context, i int) error{
			"Get":           func(ctx context.Context, i int) error { _, err := c.Get(ctx, key(i)); return err },
			"GetOrLoad":     func(ctx context.Context, i int) error { _, err := c.GetOrLoad(ctx, key(i), loader); return err },
			"GetMany":       func(ctx context.Context, i int) error { _, err := c.GetMany(ctx, pair(i), bulk); return err },
			"GetManyCached": func(ctx context.Context, i int) error { _, err := c.GetManyCached(ctx, pair(i)); return err },
			"Set":           func(ctx context.Context, i int) error { return c.Set(ctx, key(i), Product{ID: i}) },
			"SetWithTTL": func(ctx context.Context, i int) error {
				return c.SetWithTTL(ctx, key(i), Product{ID: i}, 20*time.Millisecond)
			},
			"Delete":     func(ctx context.Context, i int) error { return c.Delete(ctx, pair(i)...) },
			"DeleteNone": func(ctx context.Context, i int) error { return c.Delete(ctx) },
			"InvalidateTags": func(ctx context.Context, i int) error {
				return c.InvalidateTags(ctx, "tag")
			},
			"Clear":     func(ctx context.Context, i int) error { return c.Clear(ctx) },
			"WaitReady": func(ctx context.Context, i int) error { return c.WaitReady(ctx) },
			"Scope.GetOrLoad": func(ctx context.Context, i int) error {
				_, err := c.Scope("u").GetOrLoad(ctx, key(i), loader)
				return err
			},
			"Scope.Set":   func(ctx context.Context, i int) error { return c.Scope("u").Set(ctx, key(i), Product{}) },
			"Scope.Clear": func(ctx context.Context, i int) error { return c.Scope("u").Clear(ctx) },
			"Stats": func(ctx context.Context, i int) error {
				_ = c.Stats()
				return nil
			},
		}
		writes := map[string]bool{"Set": true, "SetWithTTL": true, "Delete": true, "InvalidateTags": true,
			"Clear": true, "Scope.Set": true, "Scope.Clear": true}
		var (
			wg      sync.WaitGroup
			started sync.WaitGroup // each goroutine is inside its first call
			mu      sync.Mutex
			bad     []string
		)
		for name, call := range methods {
			for g := range 100 {
				wg.Add(1)
				started.Add(1)
				go func() {
					defer wg.Done()
					ctx := context.Background()
					if writes[name] {
						ctx = context.WithValue(ctx, slowWrite{}, true)
					}
					report := func(after bool, err error) {
						mu.Lock()
						bad = append(bad, fmt.Sprintf("%s (after Close: %v): %v", name, after, err))
						mu.Unlock()
					}
					// Until the cache closes: every result is one the
					// method documents.
					for i := g; ; i++ {
						if i == g {
							started.Done()
						}
						err := call(ctx, i)
						if !(err == nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrNotFound) ||
							errors.Is(err, ErrUnavailable)) { // a read or write cut by Close's server check or flush
							report(false, err)
						}
						if errors.Is(err, ErrClosed) || c.closed.Load() {
							break
						}
						// Calls that return at once (Stats, a hit) would
						// otherwise spin and starve the cache's goroutines
						// of the 2 CPUs of a test machine.
						time.Sleep(time.Millisecond)
					}
					// A call that begins after Close returned gets ErrClosed.
					<-closedCh
					if err := call(ctx, g); name != "Stats" && !errors.Is(err, ErrClosed) {
						report(true, err)
					}
				}()
			}
		}
		started.Wait()
		time.Sleep(100 * time.Millisecond)
		late.slow.Store(true)
		time.Sleep(50 * time.Millisecond) // writes held in the hook when Close begins
		var closers sync.WaitGroup
		for range 2 {
			closers.Add(1)
			go func() {
				defer closers.Done()
				// Shutdown: Close with a deadline for the outbox that an
				// overloaded miniredis can meet.
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := c.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v; stats %+v; bus %+v", err, c.Stats(), c.Bus().Stats())
				}
			}()
		}
		closers.Wait()
		closed.Store(true)
		close(closedCh)
		wg.Wait()
		if n := late.cmds.Load(); n > 0 {
			t.Errorf("%d Redis commands sent after Close returned, first: %v", n, late.first.Load())
		}
		if n := lateLoads.Load(); n > 0 {
			t.Errorf("%d loads started after Close returned", n)
		}
		if len(bad) > 0 {
			t.Errorf("%d unexpected results, first: %q", len(bad), bad[:min(len(bad), 5)])
		}
	})
}

// slowWrite marks the context of a write method: with afterClose.slow set,
// its Redis calls are held for 300ms, so that writes are running when
// Close is called, and run on after a Close that would not wait for them.
type slowWrite struct{}

// afterClose is a go-redis hook that counts the commands sent, or still
// running, once closed is set.
type afterClose struct {
	closed *atomic.Bool
	slow   atomic.Bool
	cmds   atomic.Int64
	first  atomic.Value // the first such command's name
}

func (h *afterClose) note(name string) {
	if h.closed.Load() && h.cmds.Add(1) == 1 {
		h.first.Store(name)
	}
}

func (h *afterClose) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *afterClose) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.note(cmd.Name())
		if h.slow.Load() && ctx.Value(slowWrite{}) != nil {
			time.Sleep(300 * time.Millisecond) // within WriteTimeout
		}
		err := next(ctx, cmd)
		h.note(cmd.Name() + " (its reply)")
		return err
	}
}
func (h *afterClose) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.note("pipeline")
		err := next(ctx, cmds)
		h.note("pipeline (its reply)")
		return err
	}
}
