package httpcache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/leakcheck"
	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/internal/tieredtest"
	"github.com/tieredcache/tiered/tiered"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// newNode returns one independent cache of responses (its own client, bus
// and L1) on the Redis at addr.
func newNode(t *testing.T, addr string, o tiered.Options) *tiered.Cache[*Response] {
	t.Helper()
	rdb := redistest.Client(t, addr) // closed after the cache: cleanups run last-in first-out
	if o.Namespace == "" {
		o.Namespace = "http"
	}
	if o.TTL == 0 {
		o.TTL = time.Minute
	}
	if o.MaxStaleness == 0 {
		// As in package tiered's tests: these count handler runs, which a
		// lapse of the bus's proof on a loaded machine would split.
		o.MaxStaleness = time.Minute
	}
	c, err := NewCache(rdb, &o)
	return tieredtest.Ready(t, c, err)
}

func newMiddleware(t *testing.T, c *tiered.Cache[*Response], o Options) *Middleware {
	t.Helper()
	m, err := New(c, &o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// counted wraps f and counts its runs.
type counted struct {
	runs atomic.Int64
	f    http.HandlerFunc
}

func (h *counted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.runs.Add(1)
	h.f(w, r)
}

// reply is what a test request got.
type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) xcache() string { return r.header.Get(XCacheHeader) }

// do serves one request through h; hdr holds header name/value pairs.
func do(h http.Handler, method, target string, hdr ...string) reply {
	req := httptest.NewRequest(method, target, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req = req.WithContext(ctx)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return reply{status: res.StatusCode, header: res.Header, body: string(b)}
}
