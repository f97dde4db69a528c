package httpcache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/tiered"
)

// TestStorable: what HTTP says a shared cache may not store is never
// stored, in L1 or Redis; the rest is.
func TestStorable(t *testing.T) {
	cases := []struct {
		name   string
		status int
		header []string
		vary   []string
		stored bool
	}{
		{name: "plain 200", status: 200, stored: true},
		{name: "404", status: 404, stored: true},
		{name: "204", status: 204, stored: true},
		{name: "max-age", status: 200, header: []string{"Cache-Control", "public, max-age=60"}, stored: true},
		{name: "declared vary", status: 200, header: []string{"Vary", "accept-language"}, vary: []string{"Accept-Language"}, stored: true},
		{name: "set-cookie", status: 200, header: []string{"Set-Cookie", "session=secret"}},
		{name: "private", status: 200, header: []string{"Cache-Control", "max-age=60, private"}},
		{name: "no-store", status: 200, header: []string{"Cache-Control", "no-store"}},
		{name: "no-cache", status: 200, header: []string{"Cache-Control", "no-cache"}},
		{name: "no-cache field", status: 200, header: []string{"Cache-Control", `no-cache="Set-Cookie"`}},
		{name: "max-age 0", status: 200, header: []string{"Cache-Control", "max-age=0"}},
		{name: "s-maxage 0 wins", status: 200, header: []string{"Cache-Control", "max-age=60, s-maxage=0"}},
		{name: "bad max-age", status: 200, header: []string{"Cache-Control", "max-age=soon"}},
		{name: "500", status: 500},
		{name: "302", status: 302, header: []string{"Location", "/elsewhere"}},
		{name: "undeclared vary", status: 200, header: []string{"Vary", "Accept-Language"}},
		{name: "vary star", status: 200, header: []string{"Vary", "*"}, vary: []string{"Accept-Language"}},
		{name: "trailer", status: 200, header: []string{"Trailer", "X-Sum"}},
	}
	redistest.Each(t, true, func(t *testing.T, b redistest.Backend) {
		c := newNode(t, b.Addr, tiered.Options{})
		ctx := context.Background()
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
					for i := 0; i+1 < len(tc.header); i += 2 {
						w.Header().Add(tc.header[i], tc.header[i+1])
					}
					w.WriteHeader(tc.status)
					fmt.Fprint(w, "body of ", r.URL.Path)
				}}
				m := newMiddleware(t, c, Options{Vary: tc.vary})
				srv := m.Handler(h)
				path := "/" + strings.ReplaceAll(tc.name, " ", "-")
				first := do(srv, "GET", path)
				second := do(srv, "GET", path)
				if first.status != tc.status || second.status != tc.status {
					t.Fatalf("status %d, %d; want %d", first.status, second.status, tc.status)
				}
				if tc.status != 204 && second.body != "body of "+path {
					t.Fatalf("body %q", second.body)
				}
				key := m.key(httptestRequest("GET", path))
				_, err := c.Get(ctx, key)
				inCache := err == nil
				if tc.stored {
					if first.xcache() != Miss || second.xcache() != Hit || h.runs.Load() != 1 || !inCache {
						t.Fatalf("X-Cache %q then %q, %d runs, in cache %v: want stored", first.xcache(), second.xcache(), h.runs.Load(), inCache)
					}
					return
				}
				if first.xcache() != Bypass || second.xcache() != Bypass || h.runs.Load() != 2 {
					t.Fatalf("X-Cache %q then %q, %d runs: want bypass twice", first.xcache(), second.xcache(), h.runs.Load())
				}
				if !errors.Is(err, tiered.ErrNotFound) {
					t.Fatalf("stored, or Get failed: %v", err)
				}
				if len(tc.header) > 0 && first.header.Get(tc.header[0]) == "" {
					t.Fatalf("the client lost the handler's %s header", tc.header[0])
				}
			})
		}
	})
}

// TestCredentials: a request with credentials is not cached unless the
// route declares a scope; PerIdentity keys by identity and passes through
// without one.
func TestCredentials(t *testing.T) {
	byUser := PerIdentity(func(r *http.Request) (string, bool) {
		u := r.Header.Get("X-User")
		return u, u != ""
	})
	cases := []struct {
		name  string
		scope Scope
		hdr   []string
		want  []string // X-Cache of three requests
	}{
		{name: "anonymous", want: []string{Miss, Hit, Hit}},
		{name: "cookie", hdr: []string{"Cookie", "session=1"}, want: []string{Bypass, Bypass, Bypass}},
		{name: "authorization", hdr: []string{"Authorization", "Bearer x"}, want: []string{Bypass, Bypass, Bypass}},
		{name: "public cookie", scope: Public, hdr: []string{"Cookie", "session=1"}, want: []string{Miss, Hit, Hit}},
		{name: "identity", scope: byUser, hdr: []string{"X-User", "ann", "Cookie", "s=1"}, want: []string{Miss, Hit, Hit}},
		{name: "no identity", scope: byUser, hdr: []string{"Cookie", "s=1"}, want: []string{Bypass, Bypass, Bypass}},
	}
	redistest.Each(t, true, func(t *testing.T, b redistest.Backend) {
		c := newNode(t, b.Addr, tiered.Options{})
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				h := &counted{f: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }}
				srv := newMiddleware(t, c, Options{Scope: tc.scope}).Handler(h)
				for i, want := range tc.want {
					if got := do(srv, "GET", "/"+strings.ReplaceAll(tc.name, " ", "-"), tc.hdr...); got.xcache() != want || got.body != "hello" {
						t.Fatalf("request %d: X-Cache %q body %q, want %q", i, got.xcache(), got.body, want)
					}
				}
			})
		}
	})
}

// TestVary: the declared Vary headers are in the key.
func TestVary(t *testing.T) {
	redistest.Each(t, true, func(t *testing.T, b redistest.Backend) {
		c := newNode(t, b.Addr, tiered.Options{})
		h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Vary", "Accept-Language")
			fmt.Fprint(w, "lang=", r.Header.Get("Accept-Language"))
		}}
		srv := newMiddleware(t, c, Options{Vary: []string{"accept-language"}}).Handler(h)
		for i, tc := range []struct{ lang, xcache string }{
			{"en", Miss}, {"fr", Miss}, {"en", Hit}, {"fr", Hit}, {"", Miss}, {"", Hit},
		} {
			got := do(srv, "GET", "/vary", "Accept-Language", tc.lang)
			if got.body != "lang="+tc.lang || got.xcache() != tc.xcache {
				t.Fatalf("request %d (%q): body %q X-Cache %q, want %q", i, tc.lang, got.body, got.xcache(), tc.xcache)
			}
		}
		if n := h.runs.Load(); n != 3 {
			t.Fatalf("%d handler runs, want 3", n)
		}
	})
}

// TestMethodsAndKeys: only GET and HEAD are cached, HEAD shares GET's
// entry, the query is canonical, and Range passes through.
func TestMethodsAndKeys(t *testing.T) {
	c := newNode(t, redistest.Mini(t).Addr, tiered.Options{})
	h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Method, " ", r.URL.RawQuery)
	}}
	srv := newMiddleware(t, c, Options{}).Handler(h)
	steps := []struct {
		method, target string
		hdr            []string
		xcache, body   string
	}{
		{"POST", "/m?a=1", nil, Bypass, "POST a=1"},
		{"HEAD", "/m?b=2&a=1", nil, Miss, ""},
		{"GET", "/m?a=1&b=2", nil, Hit, "GET b=2&a=1"}, // filled by the HEAD, run as a GET
		{"HEAD", "/m?a=1&b=2", nil, Hit, ""},
		{"GET", "/m?a=1&b=2", []string{"Range", "bytes=0-1"}, Bypass, "GET a=1&b=2"},
		{"DELETE", "/m?a=1&b=2", nil, Bypass, "DELETE a=1&b=2"},
	}
	for i, s := range steps {
		got := do(srv, s.method, s.target, s.hdr...)
		if got.xcache() != s.xcache || got.body != s.body {
			t.Fatalf("step %d %s %s: X-Cache %q body %q, want %q %q", i, s.method, s.target, got.xcache(), got.body, s.xcache, s.body)
		}
		if s.method == "HEAD" && got.header.Get("Content-Length") != "11" {
			t.Fatalf("HEAD Content-Length %q, want the GET body's 11", got.header.Get("Content-Length"))
		}
	}
}

// TestHeaders: hop-by-hop headers are not stored, hits carry Age and the
// original Date, and every response gets its own copy of the headers.
func TestHeaders(t *testing.T) {
	c := newNode(t, redistest.Mini(t).Addr, tiered.Options{})
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := now
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Conn-Only")
		w.Header().Set("X-Conn-Only", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Age", "100")
		w.Header().Set("X-Kept", "a")
		fmt.Fprint(w, "headers")
	})
	srv := newMiddleware(t, c, Options{Now: func() time.Time { return clock }}).Handler(h)
	first := do(srv, "GET", "/h")
	clock = now.Add(7 * time.Second)
	second := do(srv, "GET", "/h")
	if second.xcache() != Hit {
		t.Fatalf("X-Cache %q", second.xcache())
	}
	for _, name := range []string{"Connection", "X-Conn-Only", "Keep-Alive"} {
		if v := second.header.Get(name); v != "" {
			t.Errorf("hop-by-hop %s stored: %q", name, v)
		}
	}
	if got := second.header.Get("Age"); got != "7" {
		t.Errorf("Age %q, want 7", got)
	}
	if first.header.Get("Age") != "" {
		t.Errorf("a miss has Age %q", first.header.Get("Age"))
	}
	if got, want := second.header.Get("Date"), now.Format(http.TimeFormat); got != want {
		t.Errorf("Date %q, want the stored %q", got, want)
	}
	second.header["X-Kept"][0] = "mutated" // a served copy, not the cache's
	if third := do(srv, "GET", "/h"); third.header.Get("X-Kept") != "a" {
		t.Fatalf("the cached headers changed: %q", third.header.Get("X-Kept"))
	}
}

// TestTTL: max-age and s-maxage set the TTL, capped by MaxTTL.
func TestTTL(t *testing.T) {
	cases := []struct {
		name, cc string
		o        Options
		want     time.Duration
	}{
		{name: "route TTL", o: Options{TTL: 20 * time.Second}, want: 20 * time.Second},
		{name: "cache TTL", want: time.Minute},
		{name: "max-age", cc: "max-age=30", o: Options{TTL: 10 * time.Second, MaxTTL: 40 * time.Second}, want: 30 * time.Second},
		{name: "s-maxage first", cc: "max-age=30, s-maxage=15", o: Options{MaxTTL: 40 * time.Second}, want: 15 * time.Second},
		{name: "capped", cc: "max-age=3000", o: Options{TTL: 10 * time.Second}, want: 10 * time.Second},
	}
	b := redistest.Mini(t)
	c := newNode(t, b.Addr, tiered.Options{Namespace: "ttl", Jitter: -1, TTL: time.Minute, MaxTTL: time.Hour})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMiddleware(t, c, tc.o)
			srv := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.cc != "" {
					w.Header().Set("Cache-Control", tc.cc)
				}
				fmt.Fprint(w, "x")
			}))
			path := "/" + strings.ReplaceAll(tc.name, " ", "-")
			do(srv, "GET", path)
			key := "ttl:{" + m.key(httptestRequest("GET", path)) + "}"
			if got := b.Mini.TTL(key); got != tc.want {
				t.Fatalf("Redis TTL %v, want %v", got, tc.want)
			}
		})
	}
}

// TestETag: If-None-Match gives 304 from the cache, for the handler's ETag
// or the one made from the body.
func TestETag(t *testing.T) {
	redistest.Each(t, true, func(t *testing.T, b redistest.Backend) {
		c := newNode(t, b.Addr, tiered.Options{})
		h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/own" {
				w.Header().Set("ETag", `W/"v7"`)
			}
			if r.Header.Get("If-None-Match") != "" {
				t.Error("the handler saw a conditional request")
			}
			fmt.Fprint(w, "tagged ", r.URL.Path)
		}}
		srv := newMiddleware(t, c, Options{}).Handler(h)
		first := do(srv, "GET", "/made")
		etag := first.header.Get("ETag")
		if etag != strongETag([]byte("tagged /made")) {
			t.Fatalf("ETag %q", etag)
		}
		got := do(srv, "GET", "/made", "If-None-Match", `"other", `+etag)
		if got.status != http.StatusNotModified || got.body != "" || got.xcache() != Hit || got.header.Get("ETag") != etag {
			t.Fatalf("conditional hit: %d %q %q %q", got.status, got.body, got.xcache(), got.header.Get("ETag"))
		}
		if got := do(srv, "GET", "/made", "If-None-Match", `"other"`); got.status != 200 || got.body != "tagged /made" {
			t.Fatalf("no match: %d %q", got.status, got.body)
		}
		// A conditional miss: the handler fills the cache with the full
		// response, and the client gets 304.
		if got := do(srv, "GET", "/own", "If-None-Match", `"v7"`); got.status != http.StatusNotModified || got.xcache() != Miss {
			t.Fatalf("conditional miss: %d %q", got.status, got.xcache())
		}
		if got := do(srv, "GET", "/own"); got.status != 200 || got.body != "tagged /own" || got.header.Get("ETag") != `W/"v7"` {
			t.Fatalf("after a conditional miss: %d %q %q", got.status, got.body, got.header.Get("ETag"))
		}
		if n := h.runs.Load(); n != 2 {
			t.Fatalf("%d handler runs, want 2", n)
		}
	})
}

func TestOptions(t *testing.T) {
	c := newNode(t, redistest.Mini(t).Addr, tiered.Options{})
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"negative TTL", Options{TTL: -1}},
		{"MaxTTL below TTL", Options{TTL: time.Minute, MaxTTL: time.Second}},
		{"nil identity", Options{Scope: PerIdentity(nil)}},
		{"negative body", Options{MaxBodyBytes: -1}},
		{"status 206", Options{Statuses: []int{206}}},
		{"vary star", Options{Vary: []string{"*"}}},
		{"vary cookie", Options{Vary: []string{"cookie"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(c, &tc.o); !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("New: %v, want ErrInvalidOptions", err)
			}
		})
	}
	if _, err := New(nil, nil); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("nil cache: %v", err)
	}
	if _, err := New(c, nil); err != nil {
		t.Fatalf("nil options: %v", err)
	}
}

func httptestRequest(method, target string) *http.Request {
	r, err := http.NewRequest(method, "http://example.com"+target, nil)
	if err != nil {
		panic(err)
	}
	return r
}
