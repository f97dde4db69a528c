package main

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2/server"

	"github.com/redis/go-redis/v9"
)

// TestMiniredisTTLsFollowClock checks that keys in the embedded miniredis
// expire in real time, as leases and values must for the demo to be honest.
func TestMiniredisTTLsFollowClock(t *testing.T) {
	ctx := context.Background()
	rs, err := startRedis(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rs.addr})
	defer rdb.Close()

	if err := rdb.Set(ctx, "k", "v", 200*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Get(ctx, "k").Err(); err != nil {
		t.Fatalf("fresh key: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := rdb.Get(ctx, "k").Err()
		if errors.Is(err, redis.Nil) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("a key with a 200ms TTL still exists after 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMiniredisPause checks the CLIENT PAUSE emulation on miniredis: WRITE
// holds writes and scripts (nested calls of a script excepted) but not
// reads, ALL holds reads too, a held command runs once the pause is over,
// and one whose client gave up meanwhile is dropped, as Redis drops it.
func TestMiniredisPause(t *testing.T) {
	ctx := context.Background()
	rs, err := startRedis(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rs.addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	const short = 100 * time.Millisecond
	held := func(c redis.Cmder) bool { // the call timed out
		var ne net.Error
		return errors.Is(c.Err(), context.DeadlineExceeded) || errors.As(c.Err(), &ne) && ne.Timeout()
	}
	within := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, short) }

	t.Run("WRITE", func(t *testing.T) {
		release, err := rs.hold("WRITE")
		if err != nil {
			t.Fatal(err)
		}
		released := false
		defer func() {
			if !released {
				release()
			}
		}()
		c, cancel := within()
		defer cancel()
		if err := rdb.Get(c, "k").Err(); err != nil {
			t.Errorf("GET during a WRITE pause: %v", err)
		}
		c, cancel = within()
		defer cancel()
		if cmd := rdb.Set(c, "gave-up", "v", 0); !held(cmd) {
			t.Errorf("SET during a WRITE pause: %v, want it held", cmd.Err())
		}
		c, cancel = within()
		defer cancel()
		if cmd := rdb.Eval(c, "return redis.call('GET', KEYS[1])", []string{"k"}); !held(cmd) {
			t.Errorf("EVAL during a WRITE pause: %v, want it held", cmd.Err())
		}
		waiting := make(chan error, 1)
		go func() { waiting <- rdb.Set(ctx, "waited", "v", 0).Err() }()
		release()
		released = true
		if err := <-waiting; err != nil {
			t.Errorf("SET held by the pause: %v after it", err)
		}
		if n, err := rdb.Exists(ctx, "waited", "gave-up").Result(); err != nil || n != 1 {
			t.Errorf("after the pause %d of the held SETs ran (%v), want 1: the one whose client gave up is dropped", n, err)
		}
		if v, err := rdb.Eval(ctx, "redis.call('SET', KEYS[1], 'x'); return redis.call('GET', KEYS[1])", []string{"s"}).Result(); err != nil || v != "x" {
			t.Errorf("script after the pause: %v, %v", v, err)
		}
	})

	// The hold lets a running script's own calls through: nestedCall
	// recognises them (this breaks if miniredis renames its flag).
	t.Run("nested", func(t *testing.T) {
		var mu sync.Mutex
		nested := map[string]bool{}
		rs.mr.Server().SetPreHook(func(peer *server.Peer, cmd string, _ ...string) bool {
			mu.Lock()
			nested[cmd] = nestedCall(peer)
			mu.Unlock()
			return false
		})
		defer rs.mr.Server().SetPreHook(nil)
		if err := rdb.Eval(ctx, "return redis.call('STRLEN', KEYS[1])", []string{"k"}).Err(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if !nested["STRLEN"] || nested["EVAL"] {
			t.Errorf("nestedCall: %v, want STRLEN (called by the script) only", nested)
		}
	})

	t.Run("ALL", func(t *testing.T) {
		release, err := rs.hold("ALL")
		if err != nil {
			t.Fatal(err)
		}
		c, cancel := within()
		defer cancel()
		cmd := rdb.Get(c, "k")
		release()
		if !held(cmd) {
			t.Errorf("GET during an ALL pause: %v, want it held", cmd.Err())
		}
		if err := rdb.Get(ctx, "k").Err(); err != nil {
			t.Errorf("GET after the pause: %v", err)
		}
	})
}
