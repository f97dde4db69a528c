package httpcache_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/tiered"
	"github.com/tieredcache/tiered/tiered/httpcache"
)

// startRedis runs an embedded Redis for the examples; a service passes its
// own client.
func startRedis() (*redis.Client, func()) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, func() { rdb.Close(); mr.Close() }
}

// get serves one request through h and prints what the client got.
func get(h http.Handler, target string, header ...string) {
	req := httptest.NewRequest("GET", target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Printf("%d %-6s %s\n", rec.Code, rec.Header().Get("X-Cache"), rec.Body)
}

// Example caches a public JSON endpoint, tagged by product, and
// invalidates it after a write.
func Example() {
	rdb, stop := startRedis()
	defer stop()
	ctx := context.Background()

	cache, err := httpcache.NewCache(rdb, &tiered.Options{Namespace: "http", TTL: time.Hour})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	if err := cache.WaitReady(ctx); err != nil {
		panic(err)
	}

	price := 450
	product := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("handler runs")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":42,"price":%d}`, price)
	})
	route, err := httpcache.New(cache, &httpcache.Options{
		TTL: 10 * time.Minute,
		Tags: func(r *http.Request) []string {
			return []string{"product:" + strings.TrimPrefix(r.URL.Path, "/products/")}
		},
	})
	if err != nil {
		panic(err)
	}
	h := route.Handler(product)

	get(h, "/products/42")
	get(h, "/products/42")
	get(h, "/products/42", "Cookie", "session=1") // may be private: not cached

	price = 500 // a write to the database, then:
	if err := cache.InvalidateTags(ctx, "product:42"); err != nil {
		panic(err)
	}
	get(h, "/products/42")
	// Output:
	// handler runs
	// 200 miss   {"id":42,"price":450}
	// 200 hit    {"id":42,"price":450}
	// handler runs
	// 200 bypass {"id":42,"price":450}
	// handler runs
	// 200 miss   {"id":42,"price":500}
}

// ExamplePerIdentity caches a per-user page: the identity is part of the
// key (hashed), so each user gets their own entry, and IdentityTag drops
// all of one user's entries.
func ExamplePerIdentity() {
	rdb, stop := startRedis()
	defer stop()
	ctx := context.Background()

	cache, err := httpcache.NewCache(rdb, &tiered.Options{Namespace: "http", TTL: time.Hour})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	if err := cache.WaitReady(ctx); err != nil {
		panic(err)
	}

	// user stands for an authentication middleware's verified identity.
	user := func(r *http.Request) (string, bool) {
		u := r.Header.Get("X-User")
		return u, u != ""
	}
	cart := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := user(r) // from the request: the key holds the same identity
		fmt.Fprintf(w, "cart of %q", u)
	})
	route, err := httpcache.New(cache, &httpcache.Options{Scope: httpcache.PerIdentity(user)})
	if err != nil {
		panic(err)
	}
	h := route.Handler(cart)

	get(h, "/me/cart", "X-User", "ann", "Cookie", "s=a")
	get(h, "/me/cart", "X-User", "bob", "Cookie", "s=b")
	get(h, "/me/cart", "X-User", "ann", "Cookie", "s=a")
	get(h, "/me/cart", "Cookie", "s=?") // no identity: not cached

	if err := cache.InvalidateTags(ctx, httpcache.IdentityTag("ann")); err != nil {
		panic(err)
	}
	get(h, "/me/cart", "X-User", "ann", "Cookie", "s=a")
	get(h, "/me/cart", "X-User", "bob", "Cookie", "s=b")
	// Output:
	// 200 miss   cart of "ann"
	// 200 miss   cart of "bob"
	// 200 hit    cart of "ann"
	// 200 bypass cart of ""
	// 200 miss   cart of "ann"
	// 200 hit    cart of "bob"
}
