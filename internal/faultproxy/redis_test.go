package faultproxy

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// redisClient returns a go-redis client of addr whose calls end when their
// context does and are never retried, so a fault shows as an error. It is
// closed when t ends.
func redisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		PoolSize:              1,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// ctxFor returns a context that ends after d, cancelled when t ends.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// isTimeout reports whether err is a deadline running out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// TestRedis drives a real redis-server through the proxy with go-redis.
func TestRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	direct := redistest.Client(t, srv.Addr)
	if err := direct.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	// through returns a proxy to srv and a client of it that has one
	// pooled connection already.
	through := func(t *testing.T) (*Proxy, *redis.Client) {
		t.Helper()
		p := newProxy(t, srv.Addr)
		rdb := redisClient(t, p.Addr())
		if err := rdb.Ping(ctxFor(t, waitTimeout)).Err(); err != nil {
			t.Fatal(err)
		}
		return p, rdb
	}

	t.Run("freeze holds a GET until thaw", func(t *testing.T) {
		t.Parallel()
		p, rdb := through(t)
		p.Freeze()
		got := make(chan *redis.StringCmd, 1)
		go func() { got <- rdb.Get(ctxFor(t, waitTimeout), "k") }()
		select {
		case cmd := <-got:
			t.Fatalf("GET returned while frozen: %v", cmd)
		case <-time.After(quiet):
		}
		p.Thaw()
		if v, err := (<-got).Result(); err != nil || v != "v" {
			t.Fatalf("GET after Thaw = %q, %v; want \"v\"", v, err)
		}
	})

	t.Run("silence times a GET out", func(t *testing.T) {
		t.Parallel()
		p, rdb := through(t)
		p.Silence()
		start := time.Now()
		err := rdb.Get(ctxFor(t, 200*time.Millisecond), "k").Err()
		if !isTimeout(err) {
			t.Fatalf("GET while silent: %v; want a timeout", err)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("GET while silent failed after %v, before its 200ms deadline", d)
		}
		p.Resume()
		if v, err := redisClient(t, p.Addr()).Get(ctxFor(t, waitTimeout), "k").Result(); err != nil || v != "v" {
			t.Fatalf("GET after Resume = %q, %v; want \"v\"", v, err)
		}
	})

	t.Run("a subscription over a new silent connection is never confirmed", func(t *testing.T) {
		t.Parallel()
		p, rdb := through(t)
		p.Set(Silent, NewConns)
		// go-redis's handshake on the new connection is swallowed first.
		ps := rdb.Subscribe(ctxFor(t, 200*time.Millisecond), "faultproxy-test")
		defer ps.Close()
		if msg, err := ps.Receive(ctxFor(t, 200*time.Millisecond)); !isTimeout(err) {
			t.Fatalf("Receive = %v, %v; want a timeout", msg, err)
		}
		// The pooled connection, open before the Set, still forwards.
		if err := rdb.Ping(ctxFor(t, waitTimeout)).Err(); err != nil {
			t.Fatal(err)
		}
	})

	// go-redis checks an idle pooled connection before using it and dials
	// again if it was closed, so a cut shows only to a command in flight
	// (or a pub/sub receive): after CutAll on an idle client the next
	// command succeeds over a new connection.
	t.Run("cut fails the command in flight", func(t *testing.T) {
		t.Parallel()
		p, rdb := through(t)
		p.Freeze() // so that the GET is surely in flight when cut
		got := make(chan error, 1)
		go func() { got <- rdb.Get(ctxFor(t, waitTimeout), "k").Err() }()
		waitFor(t, "the GET to reach the proxy", func() bool { return p.Held() > 0 })
		p.CutAll()
		if err := <-got; err == nil || isTimeout(err) {
			t.Fatalf("GET across CutAll: %v; want a connection error", err)
		}
		p.Thaw()
		// The client dials again; the proxy has kept accepting.
		if v, err := rdb.Get(ctxFor(t, waitTimeout), "k").Result(); err != nil || v != "v" {
			t.Fatalf("GET after CutAll = %q, %v; want \"v\"", v, err)
		}
		if got := p.Accepted(); got != 2 {
			t.Errorf("Accepted() = %d, want 2", got)
		}
	})

	t.Run("latency slows a PING", func(t *testing.T) {
		t.Parallel()
		p, rdb := through(t)
		const d = 50 * time.Millisecond
		p.SetLatency(d)
		start := time.Now()
		if err := rdb.Ping(ctxFor(t, waitTimeout)).Err(); err != nil {
			t.Fatal(err)
		}
		if rtt := time.Since(start); rtt < d {
			t.Errorf("PING took %v with %v of latency", rtt, d)
		}
		p.SetLatency(0)
		if err := rdb.Ping(ctxFor(t, waitTimeout)).Err(); err != nil {
			t.Fatal(err)
		}
	})
}
