package tiered

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// TestClear: Clear drops every entry from Redis and from every node's L1,
// and a load that began before it does not put its value back.
func TestClear(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		a, rdb := newNode[Product](t, b.Addr, Options{})
		bn, _ := newNode[Product](t, b.Addr, Options{})
		db := newVersionDB()
		for i := range 20 {
			k := fmt.Sprint("k", i)
			for _, c := range []*Cache[Product]{a, bn} {
				if _, err := c.GetOrLoad(ctx, k, db); err != nil {
					t.Fatal(err)
				}
			}
		}
		// A load that read version 0 and holds its lease across the Clear.
		gate, open := make(chan struct{}), make(chan struct{})
		db.mu.Lock()
		db.gate = func(k string) {
			if k == "slow" {
				close(gate)
				<-open
			}
		}
		db.mu.Unlock()
		slow := make(chan error, 1)
		go func() {
			_, err := bn.GetOrLoad(ctx, "slow", db)
			slow <- err
		}()
		<-gate
		for i := range 20 {
			db.bump(fmt.Sprint("k", i))
		}
		db.bump("slow")
		if err := a.Clear(ctx); err != nil {
			t.Fatal(err)
		}
		close(open)
		if err := <-slow; err != nil {
			t.Fatal(err)
		}
		if n, _ := rdb.Exists(ctx, "test:{slow}").Result(); n != 0 {
			t.Fatal("a load that began before Clear filled Redis after it")
		}
		for _, c := range []*Cache[Product]{a, bn} {
			waitFor(t, 5*time.Second, "every node to read the new versions", func() bool {
				for i := range 20 {
					if p, err := c.GetOrLoad(ctx, fmt.Sprint("k", i), db); err != nil || p.Version != 1 {
						return false
					}
				}
				return true
			})
		}
		if a.Stats().Purges != 1 {
			t.Fatalf("Purges = %d", a.Stats().Purges)
		}
	})
}

// TestClearQueued: a Clear that Redis does not answer is queued in the
// outbox and delivered when Redis answers again; meanwhile the node serves
// the namespace from the loader only.
func TestClearQueued(t *testing.T) {
	redistest.Require(t)
	srv, p := proxied(t)
	ctx := context.Background()
	db := newMemDB()
	n := newFaultNode(t, "A", p.Addr(), srv.Addr, db, Options{WriteTimeout: 300 * time.Millisecond})
	if _, err := n.c.GetOrLoad(ctx, "k", db); err != nil {
		t.Fatal(err)
	}
	p.Silence()
	err := n.c.Clear(ctx)
	if !errors.Is(err, ErrQueued) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Clear with Redis silent = %v", err)
	}
	if !n.c.Bus().Pending("faults", "k") {
		t.Fatal("the queued purge does not cover the namespace's keys")
	}
	calls := db.calls.Load()
	if _, err := n.c.GetOrLoad(ctx, "k", db); err != nil || db.calls.Load() != calls+1 {
		t.Fatalf("a read during the queued purge did not go to the loader (%v)", err)
	}
	p.Resume()
	waitFor(t, 10*time.Second, "the purge to be delivered", func() bool { return !n.c.Bus().Pending("faults", "k") })
	raw := redistest.Client(t, srv.Addr)
	if keys, _ := raw.Keys(ctx, "faults:{*").Result(); len(keys) != 0 {
		t.Fatalf("keys left after the delivered purge: %q", keys)
	}
}
