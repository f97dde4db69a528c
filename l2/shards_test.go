package l2

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/hashslot"
)

// clusterCheckShards: CheckShards keeps one run marker per master, in a
// slot that master serves, and purges the namespace's keys on exactly the
// master whose marker names another server (as after a failover), leaving
// the other masters' keys alone.
func clusterCheckShards(t *testing.T, rdb *redis.ClusterClient) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := New(rdb, &Options{Namespace: "shards", OpTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if n, err := s.CheckShards(ctx); err != nil || n != 0 {
			t.Fatalf("CheckShards #%d = %d, %v; want 0 purges (markers missing, then current)", i+1, n, err)
		}
	}
	// Keys on every master, and the master of the first one.
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
		if err := s.Set(ctx, keys[i], []byte("v"), time.Minute, Announce{}); err != nil {
			t.Fatal(err)
		}
	}
	victim, err := rdb.MasterForKey(ctx, s.Key(keys[0]))
	if err != nil {
		t.Fatal(err)
	}
	onVictim := func(k string) bool {
		c, err := rdb.MasterForKey(ctx, s.Key(k))
		if err != nil {
			t.Fatal(err)
		}
		return c == victim
	}
	// Its marker: the key in the first slot it serves.
	marker := ""
	for slot := range hashslot.Count {
		if c, _ := rdb.MasterForKey(ctx, s.shardMarkerKey(slot)); c == victim {
			marker = s.shardMarkerKey(slot)
			break
		}
	}
	if err := rdb.Set(ctx, marker, "a-server-that-is-gone", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CheckShards(ctx); err != nil || n != 1 {
		t.Fatalf("CheckShards after a marker changed = %d, %v; want 1 purge", n, err)
	}
	kept, purged := 0, 0
	for _, k := range keys {
		_, err := s.Get(ctx, k)
		switch {
		case onVictim(k) && err == nil:
			t.Errorf("%s, on the changed master, survived the purge", k)
		case onVictim(k):
			purged++
		case err != nil:
			t.Errorf("%s, on another master, is gone: %v", k, err)
		default:
			kept++
		}
	}
	if purged == 0 || kept == 0 {
		t.Fatalf("%d keys purged, %d kept: the keys must span the changed master and others", purged, kept)
	}
	if n, err := s.CheckShards(ctx); err != nil || n != 0 {
		t.Fatalf("CheckShards after the purge = %d, %v; want 0 (the marker was set again)", n, err)
	}
}
