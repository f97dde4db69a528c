package httpcache

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/tiered"
)

// Values of the X-Cache header.
const (
	// Hit: served from the cache (L1, Redis, or a handler run that another
	// request led).
	Hit = "hit"
	// Miss: this request's handler run filled the cache.
	Miss = "miss"
	// Bypass: not served from the cache: a method other than GET or HEAD, a
	// Range request, credentials without a scope, no identity, or a
	// response that may not be stored.
	Bypass = "bypass"
)

// errPass is a load whose response may not be shared: the loader returns
// it so that the cache stores nothing and the waiters of the flight run
// the handler themselves.
var errPass = fmt.Errorf("httpcache: response not storable: %w", tiered.ErrPassThrough)

// A Middleware caches the responses of the handlers it wraps in a
// [tiered.Cache]. Create one per route (or group of routes with the same
// rules) with [New]; many may share one cache. A Middleware is safe for
// concurrent use by multiple goroutines.
type Middleware struct {
	c *tiered.Cache[*Response]
	o Options
}

// New returns a Middleware over c, a cache of stored responses (see
// [NewCache]); a nil opts means the defaults. It returns an error wrapping
// [ErrInvalidOptions] for invalid options.
func New(c *tiered.Cache[*Response], opts *Options) (*Middleware, error) {
	if c == nil {
		return nil, invalid("nil cache")
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Middleware{c: c, o: o}, nil
}

// NewCache returns a tiered.Cache of stored responses over rdb with the
// binary [Codec] (when opts.Codec is nil): tiered.New with that codec.
// opts is not modified.
func NewCache(rdb redis.UniversalClient, opts *tiered.Options) (*tiered.Cache[*Response], error) {
	if opts != nil && opts.Codec == nil {
		o := *opts
		o.Codec = Codec{}
		opts = &o
	}
	return tiered.New[*Response](rdb, opts)
}

// Handler wraps next: it is the middleware, a func(http.Handler)
// http.Handler.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return &handler{m: m, next: next}
}

type handler struct {
	m    *Middleware
	next http.Handler
}

// hasCredentials reports whether r carries credentials that may make its
// response private.
func hasCredentials(r *http.Request) bool {
	return r.Header.Get("Authorization") != "" || len(r.Header.Values("Cookie")) > 0
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := h.m
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || r.Header.Get("Range") != "" {
		h.bypass(w, r)
		return
	}
	// A per-identity entry lives under the cache's Scope of the identity:
	// its key carries the identity's hash (a shared key cannot equal it),
	// and it is tagged tiered.ScopeTag(identity) (IdentityTag).
	var scoped *tiered.Scoped[*Response]
	switch m.o.Scope.kind {
	case anonymous:
		if hasCredentials(r) {
			h.bypass(w, r)
			return
		}
	case perIdentity:
		id, ok := m.o.Scope.identity(r)
		if !ok || id == "" {
			h.bypass(w, r)
			return
		}
		sc := m.c.Scope(id)
		scoped = &sc
	}
	var tags []string
	if m.o.Tags != nil {
		tags = slices.Clone(m.o.Tags(r))
	}
	rn := &run{w: w, attached: true, done: make(chan struct{})}
	key, loader := m.key(r), h.loader(rn, r, tags)
	var resp *Response
	var err error
	if scoped != nil {
		resp, err = scoped.GetOrLoad(r.Context(), key, loader)
	} else {
		resp, err = m.c.GetOrLoad(r.Context(), key, loader)
	}
	rn.mu.Lock()
	rn.attached = false
	claimed := rn.claimed
	rn.mu.Unlock()
	if claimed { // this request's handler ran, and owns w until it returns
		<-rn.done
		switch {
		case rn.panicked:
			panic(rn.panicVal)
		case rn.streamed:
		case rn.resp != nil:
			m.serve(w, r, rn.resp, Miss)
		case err == nil:
			m.serve(w, r, resp, Miss)
		}
		return
	}
	switch {
	case err == nil:
		m.serve(w, r, resp, Hit)
	case r.Context().Err() != nil:
		// The client left: nothing to answer.
	default:
		// errPass (the response may not be shared), a key too long, a
		// closed cache, a failed load: the handler serves this request.
		h.bypass(w, r)
	}
}

func (h *handler) bypass(w http.ResponseWriter, r *http.Request) {
	if !h.m.o.DisableXCache {
		w.Header().Set(XCacheHeader, Bypass)
	}
	h.next.ServeHTTP(w, r)
}

// run is one request's state shared with its loader, which runs on a
// goroutine of the cache's, maybe while the request has left GetOrLoad.
type run struct {
	mu sync.Mutex // guards attached and claimed
	// attached: the request is inside GetOrLoad, so its loader may use w.
	attached bool
	// claimed: the loader took w (it ran while attached); the request then
	// waits for done before it touches w again.
	claimed bool
	w       http.ResponseWriter

	// Set by a loader that claimed w, before it closes done.
	done     chan struct{}
	streamed bool      // the response went to w as the handler wrote it
	resp     *Response // the stored response the handler made, if any
	panicked bool
	panicVal any
}

// loader returns the loader of r's key: it tags the entry, then runs the
// handler on a clone of r (a GET without conditional headers, on the
// load's context) into a recorder.
//
// A loader runs once per flight, for the request that leads it, but may
// also run in the background (a refresh, with tiered.Options.Fresh) after
// that request left: it uses the request's ResponseWriter only when it
// can claim it, while the request is in GetOrLoad.
func (h *handler) loader(rn *run, r *http.Request, tags []string) tiered.LoaderFunc[*Response] {
	m := h.m
	return func(ctx context.Context, _ string) (*Response, error) {
		if len(tags) > 0 {
			// On failure the result is returned but cached nowhere.
			_ = tiered.AddTags(ctx, tags...)
		}
		var out http.ResponseWriter
		rn.mu.Lock()
		if rn.attached && !rn.claimed {
			rn.claimed, out = true, rn.w
		}
		rn.mu.Unlock()
		req := r.Clone(ctx)
		req.Method = http.MethodGet // a HEAD fills GET's entry: it needs the body
		req.Body = http.NoBody      // the request may be gone (a refresh)
		for _, name := range conditional {
			req.Header.Del(name)
		}
		rec := &recorder{m: m, out: out, header: make(http.Header)}
		var panicked bool
		var panicVal any
		func() {
			defer func() {
				if p := recover(); p != nil {
					panicked, panicVal = true, p
				}
			}()
			h.next.ServeHTTP(rec, req)
		}()
		var resp *Response
		if !panicked {
			resp = rec.finish()
		}
		if out != nil {
			rn.streamed, rn.resp, rn.panicked, rn.panicVal = rec.streaming, resp, panicked, panicVal
			close(rn.done)
		}
		if resp == nil {
			return nil, errPass
		}
		if rec.ttl > 0 {
			tiered.OverrideTTL(ctx, rec.ttl)
		}
		return resp, nil
	}
}

// serve writes resp to w: a copy of its headers, Age on a hit, X-Cache,
// and a 304 when If-None-Match matches its ETag.
func (m *Middleware) serve(w http.ResponseWriter, r *http.Request, resp *Response, state string) {
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = slices.Clone(vs)
	}
	if !m.o.DisableXCache {
		h.Set(XCacheHeader, state)
	}
	if state == Hit && !resp.Stored.IsZero() {
		age := max(m.o.Now().Sub(resp.Stored), 0)
		h.Set("Age", strconv.FormatInt(int64(age.Seconds()), 10))
	}
	if resp.Status/100 == 2 && notModified(r, resp.Header.Get("ETag")) {
		for _, name := range []string{"Content-Type", "Content-Length", "Content-Encoding"} {
			h.Del(name)
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if resp.Status != http.StatusNoContent {
		h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	}
	w.WriteHeader(resp.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(resp.Body)
	}
}
