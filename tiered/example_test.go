package tiered_test

import (
	"context"
	"errors"
	"fmt"
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

// Example shows the quick start: a cache of products in front of Redis.
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	products, err := tiered.New[Product](rdb, &tiered.Options{Namespace: "products", TTL: 10 * time.Minute})
	if err != nil {
		panic(err)
	}
	defer products.Close()
	ctx := context.Background()
	// Wait until the invalidation bus is subscribed; until then L1 is bypassed.
	if err := products.Bus().WaitHealthy(ctx); err != nil {
		panic(err)
	}

	db := tiered.LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
		fmt.Println("loading", key, "from the database")
		return Product{ID: 1, Name: "espresso cup", Price: 450}, nil
	})

	p, _ := products.GetOrLoad(ctx, "1", db) // miss: loads and fills both tiers
	fmt.Println(p.Name, p.Price)

	p, _ = products.GetOrLoad(ctx, "1", db) // hit: no database call
	fmt.Println(p.Name, p.Price)

	_ = products.Delete(ctx, "1") // the row changed: drop it everywhere
	_, err = products.Get(ctx, "1")
	fmt.Println(errors.Is(err, tiered.ErrNotFound))
	// Output:
	// loading 1 from the database
	// espresso cup 450
	// espresso cup 450
	// true
}
