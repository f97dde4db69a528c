package l2

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/hashslot"
	"github.com/tieredcache/tiered/internal/redistest"
)

// clusterKeys are user keys whose unescaped layout would split their value
// and lease keys across slots ("}x", "}"), or that test the escape ("~}x")
// or a brace inside the key ("a}b").
var clusterKeys = []string{"}x", "~}x", "a}b", "}"}

// TestCluster runs the Store on a real Redis Cluster (three masters with a
// replica each), which, unlike miniredis behind a Cluster client, rejects a
// script whose keys span slots with CROSSSLOT. One cluster serves every
// subtest.
func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	rdb := cl.Client(t, nil)

	// The slot function of the key tests agrees with the server.
	t.Run("SlotFunction", func(t *testing.T) {
		ctx := context.Background()
		s := &Store{ns: "cl"}
		for _, k := range slices.Concat(clusterKeys, trickyKeys) {
			for _, rk := range []string{s.Key(k), s.leaseKey(k), s.waitersKey(k), "cl:{" + k + "}:lease"} {
				want, err := rdb.ClusterKeySlot(ctx, rk).Result()
				if err != nil {
					t.Fatal(err)
				}
				if got := hashslot.Of(rk); got != int(want) {
					t.Errorf("hashslot.Of(%q) = %d, CLUSTER KEYSLOT = %d", rk, got, want)
				}
			}
		}
	})

	// The cluster does reject what the old layout sent: the value and lease
	// keys of "}x" as ns:{}x} and ns:{}x}:lease. Without this, the tests
	// below could pass on a cluster that does not check slots.
	t.Run("OldLayoutIsCrossSlot", func(t *testing.T) {
		ctx := context.Background()
		err := setScript.Run(ctx, rdb, []string{"cl:{}x}", "cl:{}x}:lease"}, "v", 60000, "ch").Err()
		if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
			t.Fatalf("set script over cl:{}x} and cl:{}x}:lease: %v, want CROSSSLOT", err)
		}
	})

	t.Run("Keys", func(t *testing.T) {
		s, err := New(rdb, &Options{Namespace: "cl", OpTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range clusterKeys {
			t.Run(k, func(t *testing.T) {
				t.Parallel()
				clusterKeyLifecycle(t, s, rdb, k)
			})
		}
	})

	t.Run("MultiKeyDelete", func(t *testing.T) {
		clusterMultiKeyDelete(t, rdb)
	})

	t.Run("Sharded", func(t *testing.T) {
		clusterSharded(t, rdb)
	})

	t.Run("CheckShards", func(t *testing.T) {
		clusterCheckShards(t, rdb)
	})

	t.Run("Batch", func(t *testing.T) {
		clusterBatch(t, cl)
	})
}

// clusterKeyLifecycle walks k through every Store operation on the cluster.
func clusterKeyLifecycle(t *testing.T, s *Store, rdb *redis.ClusterClient, k string) {
	ctx := context.Background()
	ann := Announce{Channel: "cl:bus", Messages: [][]byte{[]byte("m1"), []byte("m2")}}
	const ttl = time.Minute

	// A cold key: the lease is taken, a second caller waits, the holder fills.
	r, err := s.GetOrLease(ctx, k, ttl, time.Now())
	if err != nil || r.State != Acquired {
		t.Fatalf("GetOrLease = %+v, %v; want Acquired", r, err)
	}
	if w, err := s.GetOrLease(ctx, k, ttl, time.Now()); err != nil || w.State != Held {
		t.Fatalf("second GetOrLease = %+v, %v; want Held", w, err)
	}
	if ok, err := s.Fill(ctx, r.Lease, []byte("filled"), ttl, ann); err != nil || !ok {
		t.Fatalf("Fill = %v, %v; want true", ok, err)
	}
	if f, err := s.GetOrLease(ctx, k, ttl, time.Now()); err != nil || f.State != Found || string(f.Value) != "filled" {
		t.Fatalf("GetOrLease after Fill = %+v, %v; want Found filled", f, err)
	}
	// The value is where the layout says, under the escaped name.
	if v, err := rdb.Get(ctx, s.Key(k)).Result(); err != nil || v != "filled" {
		t.Fatalf("GET %s = %q, %v; want filled", s.Key(k), v, err)
	}

	if err := s.Set(ctx, k, []byte("set"), ttl, ann); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if v, err := s.Get(ctx, k); err != nil || string(v) != "set" {
		t.Fatalf("Get after Set = %q, %v; want set", v, err)
	}
	if ok, err := s.DeleteIfEqual(ctx, k, []byte("set")); err != nil || !ok {
		t.Fatalf("DeleteIfEqual = %v, %v; want true", ok, err)
	}
	if _, err := s.Get(ctx, k); !errors.Is(err, ErrMiss) {
		t.Fatalf("Get after DeleteIfEqual: %v, want ErrMiss", err)
	}

	// A released lease is free again.
	r, err = s.GetOrLease(ctx, k, ttl, time.Now())
	if err != nil || r.State != Acquired {
		t.Fatalf("GetOrLease after delete = %+v, %v; want Acquired", r, err)
	}
	if w, err := s.GetOrLease(ctx, k, ttl, time.Now()); err != nil || w.State != Held {
		t.Fatalf("GetOrLease of a held lease = %+v, %v; want Held", w, err)
	}
	if err := s.Release(ctx, r.Lease, ann); err != nil {
		t.Fatalf("Release: %v", err)
	}
	r, err = s.GetOrLease(ctx, k, ttl, time.Now())
	if err != nil || r.State != Acquired {
		t.Fatalf("GetOrLease after Release = %+v, %v; want Acquired", r, err)
	}

	// Delete removes the lease: the holder's Fill is discarded.
	if err := s.Delete(ctx, []string{k}, ann); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if ok, err := s.Fill(ctx, r.Lease, []byte("stale"), ttl, ann); err != nil || ok {
		t.Fatalf("Fill after Delete = %v, %v; want false (lease deleted)", ok, err)
	}
	// And the value.
	if err := s.Set(ctx, k, []byte("set"), ttl, ann); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if err := s.Delete(ctx, []string{k}, ann); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, k); !errors.Is(err, ErrMiss) {
		t.Fatalf("Get after Delete: %v, want ErrMiss", err)
	}
}

// clusterMultiKeyDelete: a Delete of keys in several slots (a pipeline of
// one script per key on a Cluster client) deletes every value and lease,
// then publishes its announcement once.
func clusterMultiKeyDelete(t *testing.T, rdb *redis.ClusterClient) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := New(rdb, &Options{Namespace: "multi", OpTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	keys := slices.Concat([]string{"plain", "user:42", "", "~", "{x}"}, clusterKeys)
	slots := make(map[int]bool)
	for _, k := range keys {
		if err := s.Set(ctx, k, []byte("v"), time.Minute, Announce{}); err != nil {
			t.Fatalf("Set(%q): %v", k, err)
		}
		if _, err := s.GetOrLease(ctx, k+"/leased", time.Minute, time.Now()); err != nil {
			t.Fatalf("GetOrLease(%q): %v", k+"/leased", err)
		}
		slots[hashslot.Of(s.Key(k))] = true
	}
	if len(slots) < 2 {
		t.Fatalf("the keys fall in %d slot(s); the test needs several", len(slots))
	}

	ps := rdb.Subscribe(ctx, "multi:bus")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("subscribe: %v", err)
	}

	all := append([]string(nil), keys...)
	for _, k := range keys {
		all = append(all, k+"/leased")
	}
	ann := Announce{Channel: "multi:bus", Messages: [][]byte{[]byte("deleted")}}
	if err := s.Delete(ctx, all, ann); err != nil {
		t.Fatalf("Delete of %q: %v", all, err)
	}
	for _, k := range all {
		for _, rk := range []string{s.Key(k), s.leaseKey(k)} {
			// One key per EXISTS: a Cluster client rejects keys of several slots.
			if n, err := rdb.Exists(ctx, rk).Result(); err != nil || n != 0 {
				t.Errorf("EXISTS %s after Delete = %d, %v; want 0", rk, n, err)
			}
		}
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "deleted" {
		t.Fatalf("announcement = %+v, %v; want deleted", msg, err)
	}
}

// clusterBatch: GetMany and GetOrLeaseMany over keys of every master, each
// one pipeline that go-redis splits by node; and after one master lost its
// scripts, only that master's keys are sent again.
func clusterBatch(t *testing.T, cl *redistest.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	rdb := cl.Client(t, nil)
	log := &cmdLog{}
	rdb.AddHook(log)
	s, err := New(rdb, &Options{Namespace: "batch", OpTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// masterOf returns the address of the master of k's keys.
	masterOf := func(k string) string {
		t.Helper()
		c, err := rdb.MasterForKey(ctx, s.Key(k))
		if err != nil {
			t.Fatal(err)
		}
		return c.Options().Addr
	}
	keys := slices.Concat([]string{"plain", "user:42", "", "~", "{x}"}, clusterKeys)
	for i := range 8 {
		keys = append(keys, "k"+strconv.Itoa(i))
	}
	all, err := cl.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	masters := make(map[string]bool)
	for _, k := range keys {
		masters[masterOf(k)] = true
	}
	if len(masters) != len(all) {
		t.Fatalf("the keys fall on %d of %d masters; the test needs all", len(masters), len(all))
	}

	// Every other key has a value.
	now := time.Now()
	want := make([][]byte, len(keys))
	for i, k := range keys {
		if i%2 == 0 {
			want[i] = envelope(now.Add(time.Hour + time.Duration(i)*time.Millisecond))
			if err := s.Set(ctx, k, want[i], time.Minute, Announce{}); err != nil {
				t.Fatalf("Set(%q): %v", k, err)
			}
		}
	}
	log.take()
	got, err := s.GetMany(ctx, keys)
	if err != nil || len(got) != len(keys) {
		t.Fatalf("GetMany = %q, %v", got, err)
	}
	for i, k := range keys {
		if !bytes.Equal(got[i], want[i]) || (got[i] == nil) != (want[i] == nil) {
			t.Errorf("GetMany: %q = %x, want %x", k, got[i], want[i])
		}
	}
	if sent := log.take(); !slices.Equal(sent, []string{pipeline("get", len(keys))}) {
		t.Fatalf("GetMany sent %q, want one pipeline of %d GETs", sent, len(keys))
	}

	rs, err := s.GetOrLeaseMany(ctx, keys, time.Minute, now)
	if err != nil || len(rs) != len(keys) {
		t.Fatalf("GetOrLeaseMany = %+v, %v", rs, err)
	}
	var fills []Fill
	for i, r := range rs {
		switch {
		case want[i] != nil && (r.State != Found || !bytes.Equal(r.Value, want[i])):
			t.Errorf("GetOrLeaseMany: %q = %+v, want Found %x", keys[i], r, want[i])
		case want[i] == nil && (r.State != Acquired || r.Lease.Key != keys[i]):
			t.Errorf("GetOrLeaseMany: %q = %+v, want Acquired", keys[i], r)
		case r.State == Acquired:
			fills = append(fills, Fill{Lease: r.Lease, Value: []byte("filled"), TTL: time.Minute})
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// A second batch finds the leases held.
	rs, err = s.GetOrLeaseMany(ctx, keys, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if want[i] == nil && r.State != Held {
			t.Errorf("second GetOrLeaseMany: %q = %+v, want Held", keys[i], r)
		}
	}
	filled, err := s.FillMany(ctx, fills)
	if err != nil || slices.Contains(filled, false) {
		t.Fatalf("FillMany = %v, %v; want all filled", filled, err)
	}
	if got, err := s.GetMany(ctx, keys); err != nil || slices.ContainsFunc(got, func(v []byte) bool { return v == nil }) {
		t.Fatalf("GetMany after FillMany = %q, %v; want every key filled", got, err)
	}

	// One master loses its scripts: GetOrLeaseMany loads the script and
	// resends only that master's keys.
	flushed := all[0]
	if err := redistest.Client(t, flushed).ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := make([]string, len(keys))
	onFlushed := 0
	for i, k := range keys {
		fresh[i] = k + "/fresh"
		if masterOf(fresh[i]) == flushed {
			onFlushed++
		}
	}
	if onFlushed == 0 || onFlushed == len(fresh) {
		t.Fatalf("%d of %d keys on the flushed master; the test needs some, not all", onFlushed, len(fresh))
	}
	log.take()
	rs, err = s.GetOrLeaseMany(ctx, fresh, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r.State != Acquired {
			t.Errorf("GetOrLeaseMany after SCRIPT FLUSH: %q = %+v, want Acquired", fresh[i], r)
		}
	}
	wantSent := []string{pipeline("evalsha", len(fresh)), "script load", pipeline("evalsha", onFlushed)}
	if sent := log.take(); !slices.Equal(sent, wantSent) {
		t.Fatalf("GetOrLeaseMany after SCRIPT FLUSH on one master sent %q, want %q", sent, wantSent)
	}
}
