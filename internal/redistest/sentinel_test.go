package redistest

import (
	"context"
	"testing"
	"time"
)

// TestSentinelFailover: a failover client writes to the master; once the
// master is SIGKILLed the sentinels promote the replica, which kept what
// the master had replicated, and the same client writes again. Every
// process is gone once the test that started it has ended.
func TestSentinelFailover(t *testing.T) {
	var started procs
	t.Run("run", func(t *testing.T) {
		begin := time.Now()
		s := StartSentinel(t, nil)
		t.Logf("master + replica + 3 sentinels ready in %v", time.Since(begin).Round(time.Millisecond))
		s.mu.Lock()
		started.add(s.data...)
		started.add(s.sentinels...)
		replica := s.data[1].Addr
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()

		rdb := s.FailoverClient(t, nil)
		// The value reaches the replica before the master dies: WAIT on
		// the connection that wrote it.
		conn := rdb.Conn()
		defer conn.Close()
		if err := conn.Set(ctx, "k", "before", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := conn.Wait(ctx, 1, waitTimeout).Result(); err != nil || n != 1 {
			t.Fatalf("WAIT 1 = %d, %v; want the replica's ack", n, err)
		}

		old := s.MasterAddr()
		begin = time.Now()
		if killed := s.KillMaster(); killed != old {
			t.Fatalf("KillMaster killed %s, want the master %s", killed, old)
		}
		master, err := s.WaitFailover(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("failover of %s to %s: %v from SIGKILL to WaitFailover's return",
			old, master, time.Since(begin).Round(time.Millisecond))
		if master != replica || s.MasterAddr() != replica {
			t.Fatalf("new master %s (MasterAddr %s), want the replica %s", master, s.MasterAddr(), replica)
		}

		// The same client finds the new master through the sentinels.
		begin = time.Now()
		for {
			err := rdb.Set(ctx, "k2", "after", 0).Err()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("SET after the failover: %v", err)
			}
			time.Sleep(pollInterval)
		}
		t.Logf("the failover client wrote %v after WaitFailover", time.Since(begin).Round(time.Millisecond))
		if v, err := rdb.Get(ctx, "k").Result(); err != nil || v != "before" {
			t.Fatalf("GET k after the failover = %q, %v; want before", v, err)
		}
		if v, err := Client(t, replica).Get(ctx, "k2").Result(); err != nil || v != "after" {
			t.Fatalf("GET k2 on the new master = %q, %v; want after", v, err)
		}
	})
	started.checkGone(t)
}
