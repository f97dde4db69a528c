package tiered

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// TestScope: a scoped key is its identity's alone (own flight, own entry,
// never a shared key's), Redis holds only the identity's hash, and
// Scope(id).Clear drops that identity's entries on every node.
func TestScope(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		a, rdb := newNode[string](t, b.Addr, Options{})
		bn, _ := newNode[string](t, b.Addr, Options{})
		// The trap: a loader that reads the user from its context.
		type userKey struct{}
		cart := LoaderFunc[string](func(ctx context.Context, key string) (string, error) {
			return fmt.Sprintf("%s of %v", key, ctx.Value(userKey{})), nil
		})
		users := []string{"alice", "bob", "carol"}
		var wg sync.WaitGroup
		for _, u := range users {
			for _, c := range []*Cache[string]{a, bn} {
				for range 5 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						uctx := context.WithValue(ctx, userKey{}, u)
						got, err := c.Scope(u).GetOrLoad(uctx, "cart", cart)
						if want := "cart of " + u; err != nil || got != want {
							t.Errorf("%s got %q, %v; want %q", u, got, err, want)
						}
					}()
				}
			}
		}
		wg.Wait()
		keys, _ := rdb.Keys(ctx, "test:{*").Result()
		for _, k := range keys {
			for _, u := range users {
				if strings.Contains(k, u) {
					t.Fatalf("Redis key %q holds the identity %q", k, u)
				}
			}
		}
		// A shared key cannot be a scoped one.
		if _, err := a.GetOrLoad(ctx, a.Scope("alice").Key("cart"), cart); !errors.Is(err, ErrKeyReserved) {
			t.Fatalf("a shared read of a scoped key: %v", err)
		}
		if err := a.Set(ctx, "\x00x", "v"); !errors.Is(err, ErrKeyReserved) {
			t.Fatalf("a shared Set of a reserved key: %v", err)
		}
		if _, err := a.GetMany(ctx, []string{"\x00x", "ok"}, BulkLoaderFunc[string](func(context.Context, []string) (map[string]string, error) {
			return map[string]string{"ok": "v"}, nil
		})); !errors.Is(err, ErrKeyReserved) {
			t.Fatalf("GetMany of a reserved key: %v", err)
		}
		// Set, GetMany and Clear through the scope.
		alice := bn.Scope("alice")
		if err := alice.Set(ctx, "prefs", "dark"); err != nil {
			t.Fatal(err)
		}
		m, err := alice.GetMany(ctx, []string{"cart", "prefs", "wishlist"}, BulkLoaderFunc[string](func(_ context.Context, ks []string) (map[string]string, error) {
			return map[string]string{ks[0]: "loaded " + ks[0]}, nil
		}))
		if err != nil || m["cart"] != "cart of alice" || m["prefs"] != "dark" || m["wishlist"] != "loaded wishlist" {
			t.Fatalf("GetMany = %v, %v", m, err)
		}
		if m, err := a.Scope("alice").GetManyCached(ctx, []string{"cart", "prefs", "none"}); err != nil || len(m) != 2 || m["prefs"] != "dark" {
			t.Fatalf("GetManyCached = %v, %v", m, err)
		}
		if err := a.Scope("alice").Clear(ctx); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*Cache[string]{a, bn} {
			waitFor(t, 5*time.Second, "alice's entries to go", func() bool {
				_, err1 := c.Scope("alice").Get(ctx, "cart")
				_, err2 := c.Scope("alice").Get(ctx, "prefs")
				return errors.Is(err1, ErrNotFound) && errors.Is(err2, ErrNotFound)
			})
			if got, err := c.Scope("bob").Get(ctx, "cart"); err != nil || got != "cart of bob" {
				t.Fatalf("bob's entry after alice's Clear: %q, %v", got, err)
			}
		}
	})
}
