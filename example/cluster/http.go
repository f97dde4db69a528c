package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/tiered"
	"github.com/tieredcache/tiered/tiered/httpcache"
)

// The cached JSON endpoints. Besides the product cache, every node has a
// cache of whole HTTP responses (package tiered/httpcache), in a namespace
// of its own on the same Redis and bus, in front of three routes whose
// handlers read the database and encode JSON each time they run:
//
//	GET /http/products/{id}     public: the product
//	GET /http/pages/{n}         public: products 50(n-1)+1 to 50n, a list
//	GET /http/me/products/{id}  per identity: the product as the caller sees
//	                            it, with the caller's name and discount
//
// The identity is the value of the "session" cookie (a real service would
// verify a token). Every response is tagged "product:ID" for each product
// it shows, so a PUT of product ID, after its commit, drops them on every
// node with InvalidateTags.

const (
	pageSize      = 50        // products per /http/pages/{n}
	sessionCookie = "session" // its value is the caller's identity
)

// httpRoutes are the cached endpoints of a node.
type httpRoutes struct {
	cat   *catalog
	cache *tiered.Cache[*httpcache.Response]
}

// newHTTPCache returns the cache of stored responses of a node, on the
// node's Redis client and bus, with the product cache's settings.
func newHTTPCache(rdb redis.UniversalClient, bus *tiered.Bus, ns string, logger *slog.Logger) (*tiered.Cache[*httpcache.Response], error) {
	return httpcache.NewCache(rdb, &tiered.Options{
		Namespace:   httpNamespace(ns),
		TTL:         cacheTTL,
		LeaseTTL:    leaseTTL,
		LoadTimeout: loadTimeout,
		Bus:         bus,
		Logger:      logger,
	})
}

// httpNamespace is the namespace of the response cache of a node whose
// product cache has namespace ns. Not ns + ":…": a Clear (or the purge
// InvalidateTags falls back to) of namespace N deletes the Redis keys "N:*".
func httpNamespace(ns string) string { return ns + "-http" }

// identity is the PerIdentity function of /http/me/: the session cookie.
// The handler reads the caller the same way, from the request it is given.
func identity(r *http.Request) (string, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", false
	}
	return c.Value, true
}

// productTag is the tag of every cached response that shows product id.
func productTag(id int64) string { return "product:" + strconv.FormatInt(id, 10) }

// mount adds the cached routes to mux.
func (h *httpRoutes) mount(mux *http.ServeMux) error {
	idTag := func(r *http.Request) []string {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil
		}
		return []string{productTag(id)}
	}
	pageTags := func(r *http.Request) []string {
		first, last, ok := pageRange(r)
		if !ok {
			return nil
		}
		tags := make([]string, 0, last-first+1)
		for id := first; id <= last; id++ {
			tags = append(tags, productTag(id))
		}
		return tags
	}
	routes := []struct {
		pattern string
		opts    httpcache.Options
		handler http.HandlerFunc
	}{
		{"GET /http/products/{id}", httpcache.Options{Scope: httpcache.Public, Tags: idTag}, h.product},
		{"GET /http/pages/{n}", httpcache.Options{Scope: httpcache.Public, Tags: pageTags}, h.page},
		{"GET /http/me/products/{id}", httpcache.Options{Scope: httpcache.PerIdentity(identity), Tags: idTag}, h.myProduct},
	}
	for _, rt := range routes {
		m, err := httpcache.New(h.cache, &rt.opts)
		if err != nil {
			return err
		}
		mux.Handle(rt.pattern, m.Handler(rt.handler))
	}
	return nil
}

// invalidate drops every cached response that shows product id, on every
// node. Its errors are InvalidateTags's: one wrapping tiered.ErrQueued
// means the invalidation is in the outbox.
func (h *httpRoutes) invalidate(ctx context.Context, id int64) error {
	return h.cache.InvalidateTags(ctx, productTag(id))
}

// product is the handler of GET /http/products/{id}.
func (h *httpRoutes) product(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	p, err := h.cat.get(r.Context(), id)
	if !h.answer(w, err) {
		return
	}
	writeJSON(w, p)
}

// pageRange returns the ids of the products of page {n}.
func pageRange(r *http.Request) (first, last int64, ok bool) {
	n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
	if err != nil || n <= 0 || n > 1<<40 {
		return 0, 0, false
	}
	return (n-1)*pageSize + 1, n * pageSize, true
}

// productPage is the body of GET /http/pages/{n}.
type productPage struct {
	Page     int64     `json:"page"`
	Products []Product `json:"products"`
}

// page is the handler of GET /http/pages/{n}: up to pageSize products, in
// one read of the database.
func (h *httpRoutes) page(w http.ResponseWriter, r *http.Request) {
	first, last, ok := pageRange(r)
	if !ok {
		http.Error(w, "bad page", http.StatusBadRequest)
		return
	}
	ps, err := h.cat.list(r.Context(), first, last)
	if !h.answer(w, err) {
		return
	}
	if len(ps) == 0 {
		http.Error(w, "no such page", http.StatusNotFound)
		return
	}
	writeJSON(w, productPage{Page: (first-1)/pageSize + 1, Products: ps})
}

// myProduct is the body of GET /http/me/products/{id}: what one caller
// sees of a product. It names the caller, so that a body served to anyone
// else shows.
type myProduct struct {
	User        string  `json:"user"`
	DiscountPct int64   `json:"discount_pct"`
	YourPrice   int64   `json:"your_price"` // cents, after the discount
	Product     Product `json:"product"`
}

// discount is a caller's discount, in percent: something that differs
// between callers, as a per-user page would.
func discount(user string) int64 {
	var h int64
	for _, c := range []byte(user) {
		h = h*31 + int64(c)
	}
	return h%20 + 1
}

// myProduct is the handler of GET /http/me/products/{id}. It reads the
// caller from the request it is given, which is the request of the
// identity whose entry it fills.
func (h *httpRoutes) myProduct(w http.ResponseWriter, r *http.Request) {
	user, ok := identity(r)
	if !ok { // PerIdentity passed it through: no identity, no page
		http.Error(w, "no session", http.StatusUnauthorized)
		return
	}
	id, ok := productID(w, r)
	if !ok {
		return
	}
	p, err := h.cat.get(r.Context(), id)
	if !h.answer(w, err) {
		return
	}
	d := discount(user)
	writeJSON(w, myProduct{User: user, DiscountPct: d, YourPrice: p.Price * (100 - d) / 100, Product: p})
}

// answer writes the error answer for err, if any, and reports whether the
// handler may go on. A missing product is a 404, which the middleware
// caches too (and a PUT's InvalidateTags drops).
func (h *httpRoutes) answer(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, errNoProduct):
		http.Error(w, "no such product", http.StatusNotFound)
	default:
		http.Error(w, fmt.Sprintf("database: %v", err), http.StatusInternalServerError)
	}
	return false
}
