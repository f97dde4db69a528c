package httpcache

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/tiered"
)

// TestPanic: a handler's panic reaches the request that ran it, as it
// would without the cache; nothing is stored.
func TestPanic(t *testing.T) {
	c := newNode(t, redistest.Mini(t).Addr, tiered.Options{})
	var fail sync.Once
	h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
		fail.Do(func() { panic("boom") })
		fmt.Fprint(w, "ok")
	}}
	srv := newMiddleware(t, c, Options{}).Handler(h)
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Fatalf("recovered %v, want the handler's panic", p)
			}
		}()
		do(srv, "GET", "/panic")
	}()
	if got := do(srv, "GET", "/panic"); got.body != "ok" || got.xcache() != Miss {
		t.Fatalf("after the panic: %q %q", got.body, got.xcache())
	}
}

// TestRefresh: with tiered.Options.Fresh the loader of a request that was
// served from L1 runs again in the background, after the request ended; it
// must not touch that request's ResponseWriter (the race detector watches).
func TestRefresh(t *testing.T) {
	c := newNode(t, redistest.Mini(t).Addr, tiered.Options{Fresh: 20 * time.Millisecond})
	v := 0
	var mu sync.Mutex
	h := &counted{f: func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		v++
		n := v
		mu.Unlock()
		if n == 2 {
			w.Header().Set("Set-Cookie", "a=b") // a refresh that may not be stored
		}
		fmt.Fprint(w, "v", n)
	}}
	srv := newMiddleware(t, c, Options{}).Handler(h)
	do(srv, "GET", "/fresh")
	time.Sleep(30 * time.Millisecond) // past the refresh point
	for range 3 {
		if got := do(srv, "GET", "/fresh"); got.body != "v1" && got.body != "v3" {
			t.Fatalf("body %q", got.body)
		}
	}
	eventually(t, func() bool { return h.runs.Load() >= 2 })
}
