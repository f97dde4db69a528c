package tiered_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/tiered"
)

type Product struct {
	ID    int
	Name  string
	Price int
}

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

// Example is the quick start: a cache of products in front of Redis, read
// through with a loader, invalidated after a write to the database.
func Example() {
	rdb, stop := startRedis()
	defer stop()
	ctx := context.Background()

	products, err := tiered.New[Product](rdb, &tiered.Options{
		Namespace: "products",
		TTL:       10 * time.Minute,
	})
	if err != nil {
		panic(err)
	}
	defer products.Close()
	// L1 is used once the invalidation bus is subscribed.
	if err := products.WaitReady(ctx); err != nil {
		panic(err)
	}

	db := tiered.LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
		fmt.Println("loading", key, "from the database")
		return Product{ID: 1, Name: "espresso cup", Price: 450}, nil
	})

	p, _ := products.GetOrLoad(ctx, "1", db) // miss: loads, fills Redis and L1
	fmt.Println(p.Name, p.Price)
	p, _ = products.GetOrLoad(ctx, "1", db) // hit: no database call
	fmt.Println(p.Name, p.Price)

	// After changing the row, drop the key from Redis and every node's L1.
	if err := products.Delete(ctx, "1"); err != nil {
		panic(err)
	}
	_, err = products.Get(ctx, "1")
	fmt.Println(errors.Is(err, tiered.ErrNotFound))

	s := products.Stats()
	// ristretto applies writes asynchronously, so the hit came from L1 or,
	// if the fill was not applied yet, from Redis.
	fmt.Printf("hits %d, loads %d, misses %d\n", s.L1Hits+s.L2Hits, s.Loads, s.Misses)
	// Output:
	// loading 1 from the database
	// espresso cup 450
	// espresso cup 450
	// true
	// hits 1, loads 1, misses 2
}

// ExampleCache_GetOrLoad shows concurrent readers of a cold key sharing one
// loader call.
func ExampleCache_GetOrLoad() {
	rdb, stop := startRedis()
	defer stop()
	ctx := context.Background()
	prices, err := tiered.New[int](rdb, &tiered.Options{Namespace: "prices", TTL: time.Minute})
	if err != nil {
		panic(err)
	}
	defer prices.Close()
	// Optional: until the cache is ready (bus subscribed), a read waits
	// for it at most OpTimeout, then goes to the loader.
	if err := prices.WaitReady(ctx); err != nil {
		panic(err)
	}

	release := make(chan struct{})
	loader := tiered.LoaderFunc[int](func(ctx context.Context, key string) (int, error) {
		<-release // a slow database
		return 450, nil
	})
	results := make(chan int)
	for range 10 {
		go func() {
			v, err := prices.GetOrLoad(ctx, "espresso-cup", loader)
			if err != nil {
				panic(err)
			}
			results <- v
		}()
	}
	close(release) // readers that arrive after the load hit the cache
	sum := 0
	for range 10 {
		sum += <-results
	}
	fmt.Println("sum", sum, "loads", prices.Stats().Loads)
	// Output:
	// sum 4500 loads 1
}

// ExampleCache_GetOrLoad_negative shows a "not found" cached for
// NegativeTTL, so that reads of a missing row do not all reach the database.
func ExampleCache_GetOrLoad_negative() {
	rdb, stop := startRedis()
	defer stop()
	ctx := context.Background()
	users, err := tiered.New[string](rdb, &tiered.Options{
		Namespace:   "users",
		TTL:         time.Hour,
		NegativeTTL: 30 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	defer users.Close()
	if err := users.WaitReady(ctx); err != nil {
		panic(err)
	}

	calls := 0
	loader := tiered.LoaderFunc[string](func(ctx context.Context, key string) (string, error) {
		calls++
		return "", tiered.ErrNotFound // no such row
	})
	for range 3 {
		_, err := users.GetOrLoad(ctx, "ghost", loader)
		fmt.Println(errors.Is(err, tiered.ErrNotFound))
	}
	fmt.Println("database calls:", calls)
	// Output:
	// true
	// true
	// true
	// database calls: 1
}

// ExampleNew_sharedBus shows several caches of one process sharing one
// client and one invalidation subscription.
func ExampleNew_sharedBus() {
	rdb, stop := startRedis()
	defer stop()
	bus, err := tiered.NewBus(rdb, nil)
	if err != nil {
		panic(err)
	}
	defer bus.Close()

	products, err := tiered.New[Product](rdb, &tiered.Options{Namespace: "products", TTL: time.Hour, Bus: bus})
	if err != nil {
		panic(err)
	}
	defer products.Close()
	names, err := tiered.New[string](rdb, &tiered.Options{Namespace: "names", TTL: time.Hour, Bus: bus})
	if err != nil {
		panic(err)
	}
	defer names.Close()

	ctx := context.Background()
	_ = products.Set(ctx, "1", Product{ID: 1, Name: "espresso cup"})
	_ = names.Set(ctx, "1", "Ada")
	p, _ := products.Get(ctx, "1")
	n, _ := names.Get(ctx, "1")
	fmt.Println(p.Name, n)
	// Output:
	// espresso cup Ada
}

// ExampleCache_GetMany reads a page of products: what the two tiers hold
// comes from them, the rest from one query for all the missing keys. A key
// the database does not have is absent from the result (and cached as "not
// found").
func ExampleCache_GetMany() {
	rdb, stop := startRedis()
	defer stop()
	ctx := context.Background()
	products, err := tiered.New[Product](rdb, &tiered.Options{Namespace: "products", TTL: time.Hour})
	if err != nil {
		panic(err)
	}
	defer products.Close()
	if err := products.WaitReady(ctx); err != nil {
		panic(err)
	}
	table := map[string]Product{"1": {ID: 1, Name: "cup"}, "2": {ID: 2, Name: "saucer"}, "3": {ID: 3, Name: "spoon"}}
	db := tiered.BulkLoaderFunc[Product](func(ctx context.Context, keys []string) (map[string]Product, error) {
		fmt.Println("SELECT ... WHERE id IN", keys) // one query for the whole batch
		found := make(map[string]Product)
		for _, k := range keys {
			if p, ok := table[k]; ok {
				found[k] = p
			}
		}
		return found, nil
	})
	_ = products.Set(ctx, "1", table["1"]) // already cached

	got, err := products.GetMany(ctx, []string{"1", "2", "3", "4"}, db)
	if err != nil {
		panic(err)
	}
	for _, k := range []string{"1", "2", "3", "4"} {
		p, ok := got[k]
		fmt.Println(k, ok, p.Name)
	}
	// Output:
	// SELECT ... WHERE id IN [2 3 4]
	// 1 true cup
	// 2 true saucer
	// 3 true spoon
	// 4 false
}

// ExampleOptions_fresh shows refresh-ahead: a read after Fresh returns the
// cached value at once and reloads it in the background, so the key is
// replaced before it expires and no reader waits for the database.
func ExampleOptions_fresh() {
	rdb, stop := startRedis()
	defer stop()
	ctx := context.Background()
	rates, err := tiered.New[int](rdb, &tiered.Options{
		Namespace: "rates",
		TTL:       10 * time.Second,
		Fresh:     100 * time.Millisecond, // reload in the background after 100ms
	})
	if err != nil {
		panic(err)
	}
	defer rates.Close()
	if err := rates.WaitReady(ctx); err != nil {
		panic(err)
	}
	var rate atomic.Int64
	rate.Store(100)
	db := tiered.LoaderFunc[int](func(ctx context.Context, key string) (int, error) {
		return int(rate.Load()), nil
	})
	v, _ := rates.GetOrLoad(ctx, "EUR", db)
	fmt.Println(v)
	rate.Store(101) // the source changes
	time.Sleep(150 * time.Millisecond)
	v, _ = rates.GetOrLoad(ctx, "EUR", db) // past Fresh: the cached value, at once
	fmt.Println(v)
	for v != 101 { // the background refresh lands
		time.Sleep(10 * time.Millisecond)
		v, _ = rates.GetOrLoad(ctx, "EUR", db)
	}
	fmt.Println(v, "refreshes:", rates.Stats().Refreshes)
	// Output:
	// 100
	// 100
	// 101 refreshes: 1
}

// ExampleOptions_maxStale shows fail-safe: when the database fails, an
// expired value that Redis kept for MaxStale is served instead of the
// error, and ReadInfo tells the caller.
func ExampleOptions_maxStale() {
	rdb, stop := startRedis()
	defer stop()
	ctx := context.Background()
	prices, err := tiered.New[int](rdb, &tiered.Options{
		Namespace: "prices",
		TTL:       100 * time.Millisecond,
		MaxStale:  time.Hour, // keep expired values an hour for fail-safe
	})
	if err != nil {
		panic(err)
	}
	defer prices.Close()
	if err := prices.WaitReady(ctx); err != nil {
		panic(err)
	}
	down := false
	db := tiered.LoaderFunc[int](func(ctx context.Context, key string) (int, error) {
		if down {
			return 0, errors.New("database unreachable")
		}
		return 450, nil
	})
	v, _ := prices.GetOrLoad(ctx, "cup", db)
	fmt.Println(v)
	time.Sleep(150 * time.Millisecond) // the value expires
	down = true

	var info tiered.ReadInfo
	v, err = prices.GetOrLoad(tiered.WithReadInfo(ctx, &info), "cup", db)
	fmt.Println(v, err, info.Stale, info.StaleCause)
	// Output:
	// 450
	// 450 <nil> [cup] database unreachable
}
