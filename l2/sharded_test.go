package l2

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/hashslot"
)

// clusterSharded: with Announce.Sharded, every operation that announces
// publishes with SPUBLISH on the channel of its key's slot, from inside its
// script: a real Cluster accepts it (a script may publish only in its own
// slot) and an SSUBSCRIBE to that channel on the slot's master receives it.
// A Delete of keys in several slots and a Purge publish outside a script.
func clusterSharded(t *testing.T, rdb *redis.ClusterClient) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := New(rdb, &Options{Namespace: "sh", OpTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const base = "sh:bus"
	ann := func(m string) Announce {
		return Announce{Channel: base, Messages: [][]byte{[]byte(m)}, Sharded: true}
	}
	// expect subscribes to the channel of the Redis key rk's slot and
	// returns a function that waits for the next message on it.
	expect := func(t *testing.T, rk string) func(want string) {
		t.Helper()
		ch := hashslot.Channel(base, hashslot.Of(rk))
		ps := rdb.SSubscribe(ctx, ch)
		t.Cleanup(func() { ps.Close() })
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatalf("SSUBSCRIBE %s: %v", ch, err)
		}
		return func(want string) {
			t.Helper()
			msg, err := ps.ReceiveMessage(ctx)
			if err != nil || msg.Payload != want || msg.Channel != ch {
				t.Fatalf("on %s: %+v, %v; want %q", ch, msg, err, want)
			}
		}
	}

	for _, k := range slices.Concat([]string{"plain", "user:42"}, clusterKeys) {
		t.Run(k, func(t *testing.T) {
			next := expect(t, s.Key(k))
			if err := s.Set(ctx, k, []byte("v"), time.Minute, ann("set")); err != nil {
				t.Fatalf("Set: %v", err)
			}
			next("set")
			// Fill and Release publish their wake only when someone waited.
			for _, op := range []string{"fill", "release", "uncacheable"} {
				if err := s.Delete(ctx, []string{k}, ann("delete")); err != nil {
					t.Fatalf("Delete: %v", err)
				}
				next("delete")
				r, err := s.GetOrLease(ctx, k, time.Minute, time.Now())
				if err != nil || r.State != Acquired {
					t.Fatalf("GetOrLease = %+v, %v; want Acquired", r, err)
				}
				if w, err := s.GetOrLease(ctx, k, time.Minute, time.Now()); err != nil || w.State != Held {
					t.Fatalf("second GetOrLease = %+v, %v; want Held", w, err)
				}
				switch op {
				case "fill":
					_, err = s.Fill(ctx, r.Lease, []byte("v"), time.Minute, ann(op))
				case "release":
					err = s.Release(ctx, r.Lease, ann(op))
				case "uncacheable":
					err = s.MarkUncacheable(ctx, r.Lease, time.Minute, ann(op))
				}
				if err != nil {
					t.Fatalf("%s: %v", op, err)
				}
				next(op)
			}
		})
	}

	t.Run("ManySlots", func(t *testing.T) {
		keys := []string{"plain", "user:42", "}x"}
		next := expect(t, s.Key(keys[0])) // published once, on the first key's slot
		if err := s.Delete(ctx, keys, ann("many")); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		next("many")
		nextPurge := expect(t, s.runMarkerKey())
		if err := s.Purge(ctx, ann("purge")); err != nil {
			t.Fatalf("Purge: %v", err)
		}
		nextPurge("purge")
		// Purge left nothing of the namespace, whose keys (values, leases
		// and markers of the subtests above) span several slots per master.
		err := rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			left, _, err := c.Scan(ctx, 0, "sh:*", 1000).Result()
			if err == nil && len(left) > 0 {
				t.Errorf("%s still holds %q after Purge", c.Options().Addr, left)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
