package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestMiniredisTTLsFollowClock checks that keys in the embedded miniredis
// expire in real time, as leases and values must for the demo to be honest.
func TestMiniredisTTLsFollowClock(t *testing.T) {
	ctx := context.Background()
	rs, err := startRedis(ctx, "")
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
