package redistest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/hashslot"
)

// TestStartCluster: the cluster has the shape asked for, serves every one
// of the 16384 slots through a Cluster client, each master holds the keys
// of its own slots, and every process is gone once the test that started
// it has ended.
func TestStartCluster(t *testing.T) {
	var started procs
	t.Run("run", func(t *testing.T) {
		begin := time.Now()
		cl := StartCluster(t, nil)
		t.Logf("3 masters + 3 replicas formed in %v", time.Since(begin).Round(time.Millisecond))
		started.add(cl.servers()...)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()

		// Three ranges cover the slots, each with its own master and one
		// replica, and every node is one of them.
		ranges, err := cl.Slots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var nodes []string
		next := 0
		for _, r := range ranges {
			if r.Start != next || len(r.Replicas) != 1 {
				t.Fatalf("slot map %v: want contiguous ranges from 0, one replica each", ranges)
			}
			next = r.End + 1
			nodes = append(nodes, r.Master, r.Replicas[0])
		}
		slices.Sort(nodes)
		if want := slices.Sorted(slices.Values(cl.Addrs)); next != clusterSlots || len(ranges) != 3 || !slices.Equal(nodes, want) {
			t.Fatalf("slot map %v: want 3 ranges over %d slots and nodes %v", ranges, clusterSlots, want)
		}

		// One key per slot, written through the Cluster client.
		rdb := cl.Client(t, nil)
		keys := keyPerSlot()
		for _, i := range []int{0, 1, 5460, 5461, 16383} { // hashslot agrees with the server
			if got, err := rdb.ClusterKeySlot(ctx, keys[i]).Result(); err != nil || int(got) != i {
				t.Fatalf("CLUSTER KEYSLOT %s = %d, %v; want %d", keys[i], got, err, i)
			}
		}
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Set(ctx, k, k, time.Minute)
			}
			return nil
		}); err != nil {
			t.Fatalf("SET of a key in every slot: %v", err)
		}
		// Each master holds the keys of its slots, and MasterForKey finds it.
		for _, r := range ranges {
			if n, err := Client(t, r.Master).DBSize(ctx).Result(); err != nil || int(n) != r.End-r.Start+1 {
				t.Errorf("DBSIZE on %s, master of %d-%d: %d, %v; want %d", r.Master, r.Start, r.End, n, err, r.End-r.Start+1)
			}
			for _, slot := range []int{r.Start, r.End} {
				if m, err := cl.MasterForKey(ctx, keys[slot]); err != nil || m != r.Master {
					t.Errorf("MasterForKey(%s), slot %d = %s, %v; want %s", keys[slot], slot, m, err, r.Master)
				}
			}
		}
	})
	started.checkGone(t)
}

// TestClusterNoReplicas: a cluster of masters only forms too.
func TestClusterNoReplicas(t *testing.T) {
	begin := time.Now()
	cl := StartCluster(t, &ClusterOptions{Replicas: NoReplicas})
	t.Logf("3 masters formed in %v", time.Since(begin).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	masters, err := cl.Masters(ctx)
	if err != nil || len(masters) != 3 || len(cl.Addrs) != 3 {
		t.Fatalf("Masters = %v, %v; Addrs %v; want the same 3", masters, err, cl.Addrs)
	}
	if err := cl.Client(t, nil).Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestClusterFailover: a SIGKILLed master's replica takes over its slots;
// the data the master had replicated survives, and writes to its slots
// work again after WaitFailover, through the Cluster client that used the
// killed master.
func TestClusterFailover(t *testing.T) {
	var started procs
	t.Run("run", func(t *testing.T) {
		cl := StartCluster(t, nil)
		started.add(cl.servers()...)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		rdb := cl.Client(t, nil)
		const key = "failover"
		slot, err := rdb.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		ranges, err := cl.Slots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ranges, func(r SlotRange) bool { return r.Start <= int(slot) && int(slot) <= r.End })
		old, replica := ranges[i].Master, ranges[i].Replicas[0]

		// The value reaches the replica before the master dies (WAIT on
		// the connection that wrote it); the Cluster client has used the
		// master.
		conn := Client(t, old).Conn()
		defer conn.Close()
		if err := conn.Set(ctx, key, "before", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := conn.Wait(ctx, 1, waitTimeout).Result(); err != nil || n != 1 {
			t.Fatalf("WAIT 1 = %d, %v; want the replica's ack", n, err)
		}
		if v, err := rdb.Get(ctx, key).Result(); err != nil || v != "before" {
			t.Fatalf("GET %s through the Cluster client = %q, %v", key, v, err)
		}

		begin := time.Now()
		if err := cl.Kill(old); err != nil {
			t.Fatal(err)
		}
		if err := cl.WaitFailover(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("failover of %s to %s: %v from SIGKILL to WaitFailover's return",
			old, replica, time.Since(begin).Round(time.Millisecond))
		if m, err := cl.MasterOf(ctx, int(slot)); err != nil || m != replica {
			t.Fatalf("MasterOf(%d) after the failover = %s, %v; want the replica %s", slot, m, err, replica)
		}
		if masters, err := cl.Masters(ctx); err != nil || len(masters) != 3 || slices.Contains(masters, old) {
			t.Fatalf("Masters after the failover = %v, %v; want 3 without %s", masters, err, old)
		}

		// The same client writes to the slot again once it has the new
		// slot map. go-redis reloads it on MOVED or every
		// ClusterStateReloadInterval, not on a refused dial: ask now.
		begin = time.Now()
		rdb.ReloadState(ctx)
		for {
			err := rdb.Set(ctx, key, "after", 0).Err()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("SET %s after the failover: %v", key, err)
			}
			time.Sleep(pollInterval)
		}
		t.Logf("the Cluster client wrote to the slot %v after WaitFailover", time.Since(begin).Round(time.Millisecond))
		if v, err := Client(t, replica).Get(ctx, key).Result(); err != nil || v != "after" {
			t.Fatalf("GET %s on the new master %s = %q, %v; want after", key, replica, v, err)
		}
	})
	started.checkGone(t)
}

// keyPerSlot returns a key of every slot: keys[i] hashes to slot i.
func keyPerSlot() []string {
	keys := make([]string, clusterSlots)
	for i := range keys {
		keys[i] = hashslot.Channel("k", i)
	}
	return keys
}
