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
	if !n.c.bus.Pending("faults", "k") {
		t.Fatal("the queued purge does not cover the namespace's keys")
	}
	calls := db.calls.Load()
	if _, err := n.c.GetOrLoad(ctx, "k", db); err != nil || db.calls.Load() != calls+1 {
		t.Fatalf("a read during the queued purge did not go to the loader (%v)", err)
	}
	p.Resume()
	waitFor(t, 10*time.Second, "the purge to be delivered", func() bool { return !n.c.bus.Pending("faults", "k") })
	raw := redistest.Client(t, srv.Addr)
	if keys, _ := raw.Keys(ctx, "faults:{*").Result(); len(keys) != 0 {
		t.Fatalf("keys left after the delivered purge: %q", keys)
	}
}

// taggedDB is versionDB with the tags of each key: its loader calls AddTags
// before it reads.
type taggedDB struct {
	*versionDB
	tags map[string][]string
}

func (db taggedDB) Load(ctx context.Context, key string) (Product, error) {
	if err := AddTags(ctx, db.tags[key]...); err != nil {
		return Product{}, err
	}
	return db.versionDB.Load(ctx, key)
}

// TestInvalidateTags: InvalidateTags drops exactly the entries of its
// tags, from Redis and from every node's L1, loaded by GetOrLoad or
// GetMany.
func TestInvalidateTags(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		a, rdb := newNode[Product](t, b.Addr, Options{})
		bn, _ := newNode[Product](t, b.Addr, Options{})
		db := taggedDB{newVersionDB(), map[string][]string{
			"page1": {"product:1"}, "page2": {"product:1", "product:2"}, "page3": {"product:2"}, "page4": nil,
		}}
		bulk := BulkLoaderFunc[Product](func(ctx context.Context, keys []string) (map[string]Product, error) {
			if err := AddTags(ctx, "list"); err != nil {
				return nil, err
			}
			m := map[string]Product{}
			for _, k := range keys {
				p, _ := db.versionDB.Load(ctx, k)
				m[k] = p
			}
			return m, nil
		})
		pages := []string{"page1", "page2", "page3", "page4"}
		read := func(c *Cache[Product]) map[string]int {
			got := map[string]int{}
			for _, k := range pages {
				p, err := c.GetOrLoad(ctx, k, db)
				if err != nil {
					t.Fatal(err)
				}
				got[k] = p.Version
			}
			m, err := c.GetMany(ctx, []string{"list1", "list2"}, bulk)
			if err != nil {
				t.Fatal(err)
			}
			got["list1"], got["list2"] = m["list1"].Version, m["list2"].Version
			return got
		}
		read(a)
		read(bn)
		for _, k := range append(pages, "list1", "list2") {
			db.bump(k)
		}
		if err := a.InvalidateTags(ctx, "product:1", "list"); err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"page1": 1, "page2": 1, "page3": 0, "page4": 0, "list1": 1, "list2": 1}
		for name, c := range map[string]*Cache[Product]{"A": a, "B": bn} {
			waitFor(t, 5*time.Second, "node "+name+" to reload the tagged entries", func() bool {
				got := read(c)
				for k, v := range want {
					if got[k] != v {
						return false
					}
				}
				return true
			})
		}
		if n, _ := rdb.Exists(ctx, "test:tag:{product:1}").Result(); n != 1 {
			t.Fatal("the tag's set is gone: the reloaded keys are no longer tagged")
		}
		if err := AddTags(ctx, "x"); err == nil {
			t.Fatal("AddTags outside a load returned nil")
		}
		if err := a.InvalidateTags(ctx, ""); !errors.Is(err, ErrKeyEmpty) {
			t.Fatalf("empty tag: %v", err)
		}
	})
}

// TestInvalidateTagsDuringLoad: a load that recorded its tags and is still
// reading when its tag is invalidated does not put its value back.
func TestInvalidateTagsDuringLoad(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		writer, _ := newNode[Product](t, b.Addr, Options{})
		db := taggedDB{newVersionDB(), map[string][]string{"k": {"t"}}}
		gate, open := make(chan struct{}), make(chan struct{})
		db.gate = func(string) { close(gate); <-open }
		done := make(chan Product, 1)
		go func() {
			p, _ := c.GetOrLoad(ctx, "k", db)
			done <- p
		}()
		<-gate // tags recorded, version 0 read
		db.bump("k")
		if err := writer.InvalidateTags(ctx, "t"); err != nil {
			t.Fatal(err)
		}
		close(open)
		<-done
		if n, _ := rdb.Exists(ctx, "test:{k}").Result(); n != 0 {
			t.Fatal("a load from before InvalidateTags filled Redis after it")
		}
		db.mu.Lock()
		db.gate = nil
		db.mu.Unlock()
		if p, err := c.GetOrLoad(ctx, "k", db); err != nil || p.Version != 1 {
			t.Fatalf("after the invalidation: %+v, %v", p, err)
		}
	})
}

// TestTagsNotRecorded: a load whose tags cannot be recorded is returned
// and cached nowhere; a tag set Redis rejects makes InvalidateTags purge the
// namespace instead, so the invalidation is still delivered.
func TestTagsNotRecorded(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		other, _ := newNode[Product](t, b.Addr, Options{})
		rdb.Set(ctx, "test:tag:{broken}", "not a set", time.Minute) // WRONGTYPE for SADD and SMEMBERS
		db := taggedDB{newVersionDB(), map[string][]string{"k": {"broken"}, "ok": {"fine"}}}
		var tagErr error
		loader := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
			if err := AddTags(ctx, db.tags[key]...); err != nil {
				tagErr = err
			}
			return db.versionDB.Load(ctx, key)
		})
		if _, err := c.GetOrLoad(ctx, "k", loader); err != nil || tagErr == nil {
			t.Fatalf("GetOrLoad = %v, AddTags = %v; want a value and an AddTags error", err, tagErr)
		}
		if n, _ := rdb.Exists(ctx, "test:{k}").Result(); n != 0 {
			t.Fatal("a value whose tags were not recorded was cached in Redis")
		}
		if _, ok := inL1(c)("k"); ok {
			t.Fatal("a value whose tags were not recorded was cached in L1")
		}
		for _, n := range []*Cache[Product]{c, other} {
			if _, err := n.GetOrLoad(ctx, "ok", db); err != nil {
				t.Fatal(err)
			}
		}
		db.bump("ok")
		if err := c.InvalidateTags(ctx, "broken", "fine"); err != nil {
			t.Fatalf("InvalidateTags with a rejected tag: %v", err)
		}
		if c.Stats().Purges != 1 {
			t.Fatal("the rejected tag invalidation was not turned into a purge")
		}
		waitFor(t, 5*time.Second, "the other node to drop its copy", func() bool {
			p, err := other.GetOrLoad(ctx, "ok", db)
			return err == nil && p.Version == 1
		})
	})
}

// TestInvalidateTagsQueued: with Redis silent, InvalidateTags is queued (as
// a purge) and delivered when Redis answers.
func TestInvalidateTagsQueued(t *testing.T) {
	redistest.Require(t)
	srv, p := proxied(t)
	ctx := context.Background()
	n := newFaultNode(t, "A", p.Addr(), srv.Addr, newMemDB(), Options{WriteTimeout: 300 * time.Millisecond, BreakerFailures: -1})
	db := taggedDB{newVersionDB(), map[string][]string{"k": {"t"}}}
	if _, err := n.c.GetOrLoad(ctx, "k", db); err != nil {
		t.Fatal(err)
	}
	p.Silence()
	if err := n.c.InvalidateTags(ctx, "t"); !errors.Is(err, ErrQueued) {
		t.Fatalf("InvalidateTags with Redis silent = %v", err)
	}
	p.Resume()
	waitFor(t, 10*time.Second, "the invalidation to be delivered", func() bool { return !n.c.bus.Pending("faults", "k") })
	raw := redistest.Client(t, srv.Addr)
	if x, _ := raw.Exists(ctx, "faults:{k}").Result(); x != 0 {
		t.Fatal("the tagged value survived the delivered invalidation")
	}
}
