package httpcache

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/benchlist"
	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/internal/tieredtest"
	"github.com/tieredcache/tiered/tiered"
)

// benchListLen is the length of the list the benchmarks serve.
const benchListLen = 50

// listHandler is the handler of the benchmarks: it encodes the list with
// encoding/json on every call, as a handler without a cache does.
func listHandler(items []benchlist.Item) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { benchlist.Write(w, items) })
}

// benchNode is newNode for benchmarks: a cache of responses over a fresh
// client of addr, ready, closed when b ends.
func benchNode(b *testing.B, addr string, o tiered.Options) *tiered.Cache[*Response] {
	b.Helper()
	rdb := redistest.Client(b, addr) // closed after the cache: cleanups run last-in first-out
	o.Namespace, o.TTL = "httpbench", time.Hour
	c, err := NewCache(rdb, &o)
	return tieredtest.Ready(b, c, err)
}

// BenchmarkList: a 50-item JSON list (about 12 KB) served by a handler that
// encodes it with encoding/json on each request, without and through the
// middleware, on a real redis-server. Each request is served into a fresh
// httptest.ResponseRecorder, with a cancellable context as a server's
// request has. Compare the cases with benchstat -col /serve.
//
//   - serve=bare: the handler alone.
//   - serve=l1hit: through the middleware, the entry warm in L1 (the steady
//     state of a hot route).
//   - serve=l2hit: through the middleware with L1 off, the entry in Redis
//     (a node's first read of an entry another node loaded: one GET and the
//     response's decoding).
//   - serve=cold: through the middleware, a key nobody cached (a new query
//     string each request, built inside the timer): a Redis GET miss, the lease, the handler into
//     the recorder, the fill of Redis and L1.
func BenchmarkList(b *testing.B) {
	addr := redistest.Start(b).Addr
	items := benchlist.Items(1000, benchListLen)
	h := listHandler(items)
	want, err := json.Marshal(items)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	newReq := func(target string) *http.Request {
		return httptest.NewRequest(http.MethodGet, target, nil).WithContext(ctx)
	}
	// serve times srv on the requests req returns, each into a new
	// recorder, checking each reply's body and X-Cache.
	serve := func(b *testing.B, srv http.Handler, req func(i int) *http.Request, xcache string) {
		b.Helper()
		b.SetBytes(int64(len(want)))
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req(i))
			i++
			if rec.Code != http.StatusOK || rec.Body.Len() != len(want) || rec.Header().Get(XCacheHeader) != xcache {
				b.Fatalf("request %d: status %d, %d bytes (want %d), X-Cache %q (want %q)",
					i, rec.Code, rec.Body.Len(), len(want), rec.Header().Get(XCacheHeader), xcache)
			}
		}
	}
	warm := func(b *testing.B, srv http.Handler, r *http.Request) {
		b.Helper()
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK || rec.Body.String() != string(want) {
			b.Fatalf("warm-up: status %d, body %q", rec.Code, rec.Body.String())
		}
	}

	b.Run("serve=bare", func(b *testing.B) {
		r := newReq("/products?page=1")
		serve(b, h, func(int) *http.Request { return r }, "")
	})
	b.Run("serve=l1hit", func(b *testing.B) {
		c := benchNode(b, addr, tiered.Options{})
		srv := newBenchMiddleware(b, c).Handler(h)
		r := newReq("/products?page=1")
		warm(b, srv, r)
		s0 := c.Stats()
		serve(b, srv, func(int) *http.Request { return r }, Hit)
		// A read whose freshness proof had lapsed (a bus PING late on a
		// busy machine) goes to Redis, and so does the first read after
		// the bus reset L1: notl1/op counts them. They are rare; more
		// than 1% would mean this does not measure L1.
		s := c.Stats()
		notL1 := uint64(b.N) - min(s.L1Hits-s0.L1Hits, uint64(b.N))
		if notL1 > uint64(b.N)/100 {
			b.Fatalf("%d of %d requests not served from L1 (unproven %d, L2 hits %d, bus resets %d)",
				notL1, b.N, s.L1Unproven-s0.L1Unproven, s.L2Hits-s0.L2Hits, s.Resets-s0.Resets)
		}
		b.ReportMetric(float64(notL1)/float64(b.N), "notl1/op")
	})
	b.Run("serve=l2hit", func(b *testing.B) {
		c := benchNode(b, addr, tiered.Options{DisableL1: true})
		srv := newBenchMiddleware(b, c).Handler(h)
		r := newReq("/products?page=2")
		warm(b, srv, r)
		serve(b, srv, func(int) *http.Request { return r }, Hit)
	})
	b.Run("serve=cold", func(b *testing.B) {
		c := benchNode(b, addr, tiered.Options{})
		srv := newBenchMiddleware(b, c).Handler(h)
		run := time.Now().UnixNano() // a new key for every request of every run
		serve(b, srv, func(i int) *http.Request {
			return newReq(fmt.Sprintf("/products?page=3&run=%d&i=%d", run, i))
		}, Miss)
	})
}

func newBenchMiddleware(b *testing.B, c *tiered.Cache[*Response]) *Middleware {
	b.Helper()
	m, err := New(c, nil)
	if err != nil {
		b.Fatal(err)
	}
	return m
}
