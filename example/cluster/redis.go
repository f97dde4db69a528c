package main

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// redisServer is the Redis the nodes share: an embedded miniredis on a free
// loopback port, or a real server named by -redis.
type redisServer struct {
	addr string
	mr   *miniredis.Miniredis // nil for a real server

	stopClock func() // stops the goroutine that runs miniredis's clock
}

// clockTick is how often miniredis's TTLs are advanced.
const clockTick = 50 * time.Millisecond

// startRedis starts a miniredis, or checks that the server at addr answers.
func startRedis(ctx context.Context, addr string) (*redisServer, error) {
	if addr != "" {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("redis at %s: %w", addr, err)
		}
		return &redisServer{addr: addr}, nil
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, err
	}
	clockCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runClock(clockCtx, mr)
	}()
	return &redisServer{addr: mr.Addr(), mr: mr, stopClock: func() { cancel(); <-done }}, nil
}

// runClock makes mr's TTLs, values' and leases' alike, run down with the
// wall clock until ctx is done. miniredis only expires keys when told to,
// by FastForward. (Its ClockTTL option does the same on every command, but
// each tick sorts every key: too slow for thousands of keys.)
func runClock(ctx context.Context, mr *miniredis.Miniredis) {
	tick := time.NewTicker(clockTick)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			mr.FastForward(now.Sub(last))
			last = now
		}
	}
}

// String describes the server for the output.
func (s *redisServer) String() string {
	if s.mr != nil {
		return "miniredis " + s.addr
	}
	return "redis " + s.addr
}

// dropConnections cuts every client connection, the nodes' pub/sub
// subscriptions included, and describes what it did. A miniredis is shut
// down for outage (less if ctx ends first) and restarted on the same port
// with its data; on a real server the clients are killed with CLIENT KILL
// and may reconnect at once.
func (s *redisServer) dropConnections(ctx context.Context, outage time.Duration) (string, error) {
	if s.mr != nil {
		down := time.Now()
		s.mr.Close()
		t := time.NewTimer(outage)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		if err := s.mr.Restart(); err != nil {
			return "", fmt.Errorf("restarting miniredis: %w", err)
		}
		return fmt.Sprintf("miniredis was down for %v; restarted on the same port with its data",
			time.Since(down).Round(100*time.Millisecond)), nil
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.addr})
	defer rdb.Close()
	var killed [2]int64
	for i, typ := range []string{"normal", "pubsub"} {
		n, err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", typ).Int64()
		if err != nil {
			return "", fmt.Errorf("CLIENT KILL TYPE %s: %w", typ, err)
		}
		killed[i] = n
	}
	return fmt.Sprintf("killed %d client connections and %d pub/sub connections", killed[0], killed[1]), nil
}

// Close stops a miniredis; a real server is left alone.
func (s *redisServer) Close() {
	if s.mr != nil {
		s.stopClock()
		s.mr.Close()
	}
}
