package pubsub

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/hashslot"
	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/internal/poll"
	"github.com/tieredcache/tiered/internal/redistest"
)

// TestModeOptions: ModeSharded needs a Cluster client, and a sharded
// channel must not carry braces of its own; ModeAuto is classic off a
// Cluster.
func TestModeOptions(t *testing.T) {
	mr := redistest.Mini(t)
	rdb := redistest.Client(t, mr.Addr)
	if _, err := New(rdb, &Options{Mode: ModeSharded}); err == nil {
		t.Error("ModeSharded on a single-node client: no error")
	}
	if _, err := New(rdb, &Options{Mode: Mode(9)}); err == nil {
		t.Error("an unknown Mode: no error")
	}
	b := startBus(t, mr.Addr, &Options{Channel: "a{b}"}) // braces are fine off a Cluster
	if b.Sharded() {
		t.Error("ModeAuto on a single-node client is sharded")
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{mr.Addr}})
	defer cc.Close()
	if _, err := New(cc, &Options{Channel: "a{b}"}); err == nil {
		t.Error("a sharded channel with braces: no error")
	}
}

// TestSharded runs a sharded bus on a real Cluster: it subscribes to every
// slot channel on the master that serves it, hears an SPUBLISH on slots of
// every master, proves its freshness on all of them, and when a slot moves
// to another master (Redis SUNSUBSCRIBEs its channel) it reports a gap,
// resets its handlers and follows the slot to its new master.
func TestSharded(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitTimeout)
	defer cancel()
	rdb := cl.Client(t, nil)
	b, err := New(rdb, &Options{Channel: "sh"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if !b.Sharded() {
		t.Fatal("ModeAuto on a Cluster client is not sharded")
	}
	rec := newRecorder(b)
	b.Register("ns", rec)
	waitHealthy(t, b)
	if e := rec.next(t); e.op != "reset" {
		t.Fatalf("first event %+v, want the reset of the first subscription", e)
	}

	// spublish sends an invalidation of key on slot's channel, from
	// another node, and waits for it.
	spublish := func(t *testing.T, slot int, key string) {
		t.Helper()
		ch := hashslot.Channel("sh", slot)
		for _, m := range encode(t, Message{Kind: Invalidate, NodeID: "other", Namespace: "ns", Keys: []string{key}}) {
			if err := rdb.SPublish(ctx, ch, m).Err(); err != nil {
				t.Fatalf("SPUBLISH %s: %v", ch, err)
			}
		}
		if e := rec.next(t); e.op != "invalidate" || len(e.keys) != 1 || e.keys[0] != key {
			t.Fatalf("after SPUBLISH on slot %d: %+v, want the invalidation of %q", slot, e, key)
		}
	}
	masters := map[string]bool{}
	for _, slot := range []int{0, 5000, 9000, hashslot.Count - 1} {
		spublish(t, slot, "k"+string(rune('a'+slot%26)))
		c, err := rdb.MasterForKey(ctx, hashslot.Channel("sh", slot))
		if err != nil {
			t.Fatal(err)
		}
		masters[c.Options().Addr] = true
	}
	if len(masters) != 3 {
		t.Fatalf("the slots tried live on %d masters, want 3", len(masters))
	}
	waitFor(t, "a proof on every shard", func() bool { return b.Proven(mono.Now()) })

	// Move an empty slot from its master to another one.
	const slot = 42
	src, err := rdb.MasterForKey(ctx, hashslot.Channel("sh", slot))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex // ForEachMaster runs its function on every master at once
		dst *redis.Client
	)
	err = rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		if c.Options().Addr != src.Options().Addr && dst == nil {
			dst = c
		}
		return nil
	})
	if err != nil || dst == nil {
		t.Fatalf("no other master: %v", err)
	}
	srcID, dstID := src.ClusterMyID(ctx).Val(), dst.ClusterMyID(ctx).Val()
	for _, step := range []struct {
		c    *redis.Client
		args []any
	}{
		{dst, []any{"CLUSTER", "SETSLOT", slot, "IMPORTING", srcID}},
		{src, []any{"CLUSTER", "SETSLOT", slot, "MIGRATING", dstID}},
		{dst, []any{"CLUSTER", "SETSLOT", slot, "NODE", dstID}},
		{src, []any{"CLUSTER", "SETSLOT", slot, "NODE", dstID}},
	} {
		if err := step.c.Do(ctx, step.args...).Err(); err != nil {
			t.Fatalf("%v on %s: %v", step.args, step.c.Options().Addr, err)
		}
	}
	moved := time.Now()
	// The bus loses the session (a gap: every handler is reset) and
	// subscribes again, now with the slot on its new master.
	waitFor(t, "a gap", func() bool { return b.Stats().Gaps == 1 })
	waitHealthy(t, b)
	t.Logf("healthy again %v after the move, %d gaps", time.Since(moved), b.Stats().Gaps)
	sawReset := false
	for _, e := range rec.pending() {
		sawReset = sawReset || e.op == "reset"
	}
	if !sawReset {
		t.Fatal("the gap reset no handler")
	}
	waitFor(t, "the client to route the slot to its new master", func() bool {
		c, err := rdb.MasterForKey(ctx, hashslot.Channel("sh", slot))
		return err == nil && c.Options().Addr == dst.Options().Addr
	})
	spublish(t, slot, "moved")
}

// waitFor polls cond until it holds, failing t after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, waitTimeout, 10*time.Millisecond, what, cond)
}
