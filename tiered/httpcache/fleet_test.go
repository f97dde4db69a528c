package httpcache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/tiered"
)

// Fleet tests: two independent nodes (own client, bus and L1: two
// caches) on one Redis, each with the middleware in front of the same
// handler, as two instances of a service would be.

func newFleet(t *testing.T, addr string, n int, co tiered.Options, o Options, h http.Handler) ([]*tiered.Cache[*Response], []http.Handler) {
	t.Helper()
	caches := make([]*tiered.Cache[*Response], n)
	srvs := make([]http.Handler, n)
	for i := range caches {
		caches[i] = newNode(t, addr, co)
		srvs[i] = newMiddleware(t, caches[i], o).Handler(h)
	}
	return caches, srvs
}

// TestFleetSingleRun: many concurrent requests for a cold key on two
// nodes run the handler once.
func TestFleetSingleRun(t *testing.T) {
	redistest.Each(t, true, func(t *testing.T, b redistest.Backend) {
		release := make(chan struct{})
		h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(50 * time.Millisecond)
			fmt.Fprint(w, "cold")
		}}
		_, srvs := newFleet(t, b.Addr, 2, tiered.Options{}, Options{}, h)
		const perNode = 40
		var wg sync.WaitGroup
		var bad, hits atomic.Int64
		for i := range 2 * perNode {
			wg.Go(func() {
				<-release
				got := do(srvs[i%2], "GET", "/cold")
				if got.body != "cold" || got.status != 200 {
					bad.Add(1)
				}
				if got.xcache() == Hit {
					hits.Add(1)
				}
			})
		}
		close(release)
		wg.Wait()
		if n := h.runs.Load(); n != 1 || bad.Load() != 0 {
			t.Fatalf("%d handler runs (want 1), %d bad replies", n, bad.Load())
		}
		if hits.Load() != 2*perNode-1 {
			t.Fatalf("%d hits, want %d", hits.Load(), 2*perNode-1)
		}
	})
}

// TestFleetNoCrossIdentity is the property test of the PerIdentity scope:
// random requests of many identities, on random nodes and paths, with
// random tag invalidations in between, and a handler that echoes who asked.
// No identity may ever receive another's body.
func TestFleetNoCrossIdentity(t *testing.T) {
	redistest.Each(t, true, func(t *testing.T, b redistest.Backend) {
		seed := rand.Uint64()
		t.Logf("seed %d", seed)
		identity := func(r *http.Request) (string, bool) {
			u := r.Header.Get("X-User")
			return u, u != ""
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, _ := identity(r)
			if strings.HasSuffix(r.URL.Path, "/slow") {
				time.Sleep(time.Millisecond)
			}
			if strings.HasSuffix(r.URL.Path, "/cookie") {
				http.SetCookie(w, &http.Cookie{Name: "seen", Value: u})
			}
			fmt.Fprintf(w, "user=%s path=%s", u, r.URL.Path)
		})
		caches, srvs := newFleet(t, b.Addr, 2, tiered.Options{}, Options{
			Scope: PerIdentity(identity),
			Tags:  func(r *http.Request) []string { return []string{"path:" + r.URL.Path} },
		}, h)
		const workers, perWorker, users = 16, 100, 12
		paths := []string{"/cart", "/cart/slow", "/orders", "/cart/cookie"}
		var leaks, served, hits atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			wg.Go(func() {
				for range perWorker {
					node := rng.IntN(2)
					if rng.IntN(40) == 0 {
						tag := IdentityTag(fmt.Sprint("u", rng.IntN(users)))
						if rng.IntN(2) == 0 {
							tag = "path:" + paths[rng.IntN(len(paths))]
						}
						if err := caches[node].InvalidateTags(context.Background(), tag); err != nil {
							t.Error(err)
						}
						continue
					}
					u, p := fmt.Sprint("u", rng.IntN(users)), paths[rng.IntN(len(paths))]
					method := "GET"
					if rng.IntN(5) == 0 {
						method = "HEAD"
					}
					got := do(srvs[node], method, p, "X-User", u, "Cookie", "session="+u)
					served.Add(1)
					if got.xcache() == Hit {
						hits.Add(1)
					}
					want := fmt.Sprintf("user=%s path=%s", u, p)
					if method == "HEAD" && got.body == "" {
						// httptest's recorder keeps a HEAD body that
						// net/http would drop: the handler's own one is fine.
						want = ""
					}
					if got.body != want || got.status != 200 {
						leaks.Add(1)
						t.Errorf("%s %s as %s on node %d: %d %q", method, p, u, node, got.status, got.body)
					}
					if c := got.header.Get("Set-Cookie"); c != "" && c != "seen="+u {
						leaks.Add(1)
						t.Errorf("%s as %s got cookie %q", p, u, c)
					}
				}
			})
		}
		wg.Wait()
		t.Logf("%d requests, %d hits, %d leaks", served.Load(), hits.Load(), leaks.Load())
		if leaks.Load() != 0 {
			t.Fatalf("%d cross-identity leaks", leaks.Load())
		}
		if hits.Load() == 0 {
			t.Fatal("no hits: the test did not exercise the cache")
		}
	})
}

// TestFleetTags: InvalidateTags on one node drops the tagged responses
// from Redis and from every node's L1; the identity tag drops one user's
// entries only.
func TestFleetTags(t *testing.T) {
	redistest.Each(t, true, func(t *testing.T, b redistest.Backend) {
		var version atomic.Int64
		version.Store(1)
		h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s v%d for %s", r.URL.Path, version.Load(), r.Header.Get("X-User"))
		}}
		identity := func(r *http.Request) (string, bool) { return r.Header.Get("X-User"), true }
		// The default staleness bound: an invalidation must reach the
		// other node's L1 through the bus, not by a lapse of its proof.
		caches, srvs := newFleet(t, b.Addr, 2, tiered.Options{MaxStaleness: tiered.DefaultMaxStaleness}, Options{
			Scope: PerIdentity(identity),
			Tags: func(r *http.Request) []string {
				return []string{"product:" + strings.TrimPrefix(r.URL.Path, "/product/")}
			},
		}, h)
		get := func(node int, path, user string) reply { return do(srvs[node], "GET", path, "X-User", user) }
		for _, node := range []int{0, 1, 0, 1} { // fill Redis and both L1s
			get(node, "/product/42", "ann")
			get(node, "/product/7", "ann")
			get(node, "/product/42", "bob")
		}
		if n := h.runs.Load(); n != 3 {
			t.Fatalf("%d runs to fill, want 3", n)
		}
		version.Store(2)
		if err := caches[0].InvalidateTags(context.Background(), "product:42"); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool {
			return get(1, "/product/42", "ann").body == "/product/42 v2 for ann" &&
				get(1, "/product/42", "bob").body == "/product/42 v2 for bob"
		})
		if got := get(0, "/product/42", "ann"); got.body != "/product/42 v2 for ann" {
			t.Fatalf("node 0 after the invalidation: %q", got.body)
		}
		if got := get(1, "/product/7", "ann"); got.body != "/product/7 v1 for ann" || got.xcache() != Hit {
			t.Fatalf("an untagged entry was dropped: %q %s", got.body, got.xcache())
		}
		version.Store(3)
		if err := caches[1].InvalidateTags(context.Background(), IdentityTag("ann")); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return get(0, "/product/7", "ann").body == "/product/7 v3 for ann" })
		if got := get(0, "/product/42", "bob"); got.body != "/product/42 v2 for bob" || got.xcache() != Hit {
			t.Fatalf("bob's entry was dropped with ann's: %q %s", got.body, got.xcache())
		}

		// A tag invalidation that Redis rejects (its set was overwritten
		// with a string: WRONGTYPE) is still delivered, as a purge of the
		// namespace, to both nodes.
		get(1, "/product/7", "bob")
		raw := redistest.Client(t, b.Addr)
		if err := raw.Set(context.Background(), "http:tag:{product:7}", "not a set", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		version.Store(4)
		if err := caches[0].InvalidateTags(context.Background(), "product:7"); err != nil {
			t.Fatalf("a rejected tag invalidation: %v", err)
		}
		if caches[0].Stats().Purges != 1 {
			t.Fatal("the rejected tag invalidation was not delivered as a purge")
		}
		eventually(t, func() bool {
			return get(1, "/product/7", "bob").body == "/product/7 v4 for bob" &&
				get(0, "/product/7", "ann").body == "/product/7 v4 for ann"
		})
	})
}

// eventually polls cond for up to 2 s: an invalidation reaches another
// node's L1 through pub/sub, one hop later.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeCounter counts the writes a client's ResponseWriter receives.
type writeCounter struct {
	*httptest.ResponseRecorder
	writes atomic.Int64
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	return w.ResponseRecorder.Write(p)
}

// TestLargeBody: a body over MaxBodyBytes reaches every client whole,
// streamed to the leader as the handler writes it, and is not stored;
// the other requests of the flight run the handler themselves.
func TestLargeBody(t *testing.T) {
	redistest.Each(t, true, func(t *testing.T, b redistest.Backend) {
		const chunk, chunks = 1 << 10, 64
		want := strings.Repeat("0123456789abcdef", chunk/16*chunks)
		h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(20 * time.Millisecond)
			for i := range chunks {
				fmt.Fprint(w, want[i*chunk:(i+1)*chunk])
			}
		}}
		_, srvs := newFleet(t, b.Addr, 2, tiered.Options{}, Options{MaxBodyBytes: 4 * chunk}, h)
		const n = 20
		var wg sync.WaitGroup
		var bad, streamed atomic.Int64
		for i := range n {
			wg.Go(func() {
				req := httptest.NewRequest("GET", "/big", nil)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				w := &writeCounter{ResponseRecorder: httptest.NewRecorder()}
				srvs[i%2].ServeHTTP(w, req.WithContext(ctx))
				if w.Body.String() != want || w.Code != 200 || w.Header().Get(XCacheHeader) != Bypass {
					bad.Add(1)
				}
				if w.writes.Load() > 1 {
					streamed.Add(1)
				}
			})
		}
		wg.Wait()
		if bad.Load() != 0 {
			t.Fatalf("%d clients got a wrong body or header", bad.Load())
		}
		if runs := h.runs.Load(); runs != n {
			t.Fatalf("%d handler runs, want one per request (%d)", runs, n)
		}
		if streamed.Load() == 0 {
			t.Fatal("no client got its body streamed")
		}
		if got := do(srvs[0], "GET", "/big"); got.xcache() != Bypass || got.body != want {
			t.Fatalf("after: X-Cache %q, %d bytes", got.xcache(), len(got.body))
		}
	})
}
