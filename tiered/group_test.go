package tiered

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/tieredcache/tiered/internal/redistest"
)

// TestGroup: join tells the leader from joiners, forget starts a new
// flight for later callers, and a leader goroutine that exits finishes its
// flight with errAbandoned instead of leaving its waiters stuck.
func TestGroup(t *testing.T) {
	var g group[int]
	c1, lead := g.join("k")
	c2, lead2 := g.join("k")
	if !lead || lead2 || c1 != c2 {
		t.Fatal("the second join did not join the first flight")
	}
	g.forget("k")
	c3, lead3 := g.join("k")
	if !lead3 || c3 == c1 {
		t.Fatal("forget did not start a new flight")
	}
	g.finish("k", c1, outcome[int]{v: 1}) // the forgotten flight must not remove c3
	if c4, lead4 := g.join("k"); lead4 || c4 != c3 {
		t.Fatal("finishing a forgotten flight removed its successor")
	}
	g.finish("k", c3, outcome[int]{v: 3})
	<-c1.done
	<-c3.done
	if c1.v != 1 || c3.v != 3 {
		t.Fatalf("results %d %d", c1.v, c3.v)
	}

	c, _ := newNode[Product](t, redistest.Mini(t).Addr, Options{})
	cl, _ := c.flights.Load().loads.join("x")
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.lead(context.Background(), &c.flights.Load().loads, "x", cl, func(context.Context) outcome[Product] {
			runtime.Goexit()
			return outcome[Product]{}
		})
	}()
	<-done
	<-cl.done
	if !errors.Is(cl.err, errAbandoned) {
		t.Fatalf("abandoned flight: %v", cl.err)
	}
	// A loader that exits its goroutine fails its callers, not the cache.
	_, err := c.GetOrLoad(context.Background(), "goexit", LoaderFunc[Product](func(context.Context, string) (Product, error) {
		runtime.Goexit()
		return Product{}, nil
	}))
	if !errors.Is(err, errAbandoned) {
		t.Fatalf("Goexit in a loader: %v", err)
	}
	if _, err := c.GetOrLoad(context.Background(), "after", &countingDB{rows: map[string]Product{"after": {ID: 1}}}); err != nil {
		t.Fatal(fmt.Errorf("after a Goexit: %w", err))
	}
}
