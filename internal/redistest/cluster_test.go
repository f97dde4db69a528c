package redistest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestStartCluster: the cluster serves every slot range through its client,
// each master owns the range it was given, and every process is gone once
// the test that started it has ended.
func TestStartCluster(t *testing.T) {
	var addrs []string
	t.Run("run", func(t *testing.T) {
		cl := StartCluster(t, 3)
		addrs = cl.Addrs
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rdb := cl.Client(t)
		owners := make(map[string]bool)
		for i := range 64 {
			key := fmt.Sprintf("key-%d", i)
			if err := rdb.Set(ctx, key, "v", time.Minute).Err(); err != nil {
				t.Fatalf("SET %s: %v", key, err)
			}
			slot, err := rdb.ClusterKeySlot(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			owner := ownerOf(cl, int(slot))
			owners[owner] = true
			// The owner holds the key itself: no redirection.
			if v, err := Client(t, owner).Get(ctx, key).Result(); err != nil || v != "v" {
				t.Fatalf("GET %s on %s, owner of slot %d: %q, %v", key, owner, slot, v, err)
			}
		}
		if len(owners) != len(cl.Addrs) {
			t.Fatalf("64 keys landed on %d of %d masters", len(owners), len(cl.Addrs))
		}
	})
	for _, addr := range addrs {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after its test ended", addr)
		}
	}
}

// ownerOf returns the address of the master StartCluster gave slot.
func ownerOf(cl *Cluster, slot int) string {
	for i, addr := range cl.Addrs {
		if first, last := slotRange(i, len(cl.Addrs)); first <= slot && slot <= last {
			return addr
		}
	}
	return ""
}
