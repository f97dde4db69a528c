package l2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// TestPermanent: error replies that retrying cannot cure are ErrRejected;
// "not now" replies, network errors and timeouts are not.
func TestPermanent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{redisErr("CROSSSLOT Keys in request don't hash to the same slot"), true},
		{redisErr("ERR Error running script"), true},
		{redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"), true},
		{redisErr("NOPERM this user has no permissions"), true},
		{redisErr("LOADING Redis is loading the dataset in memory"), false},
		{redisErr("BUSY Redis is busy running a script"), false},
		{redisErr("READONLY You can't write against a read only replica."), false},
		{redisErr("OOM command not allowed when used memory > 'maxmemory'."), false},
		{redisErr("TRYAGAIN Multiple keys request during rehashing of slot"), false},
		{redisErr("CLUSTERDOWN The cluster is down"), false},
		{redisErr("MASTERDOWN Link with MASTER is down"), false},
		{context.DeadlineExceeded, false},
		{errors.New("dial tcp: connection refused"), false},
	} {
		s := &Store{}
		err := s.unavailable("op", fmt.Errorf("wrapped: %w", tc.err))
		if got := Permanent(err); got != tc.want {
			t.Errorf("Permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%v does not wrap ErrUnavailable", err)
		}
	}
}

// TestPurge: Purge deletes every key of the namespace, and only those,
// including names with glob characters, on every backend (the Cluster
// client scans every master), then publishes its announcement.
func TestPurge(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		rdb := redistest.Client(t, b.Addr)
		s := b.store(t, "p*[x]")
		other := b.store(t, "p")
		keys := []string{"a", "b", "}c", ""}
		for i := range 1500 { // more than one SCAN page
			keys = append(keys, fmt.Sprint("k", i))
		}
		for _, k := range keys {
			if err := s.Set(ctx, k, []byte("v"), time.Minute, Announce{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := other.Set(ctx, "a", []byte("kept"), time.Minute, Announce{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetOrLease(ctx, "leased", time.Minute, time.Now()); err != nil {
			t.Fatal(err)
		}
		sub := b.subscribe(t, "ch")
		published := sub.collect(nil, func() {
			if err := s.Purge(ctx, Announce{Channel: "ch", Messages: [][]byte{[]byte("flush")}}); err != nil {
				t.Error(err)
			}
		}, nil)
		left, err := rdb.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(left, []string{other.Key("a")}) {
			t.Fatalf("keys after the purge: %q (%d), want only the other namespace's", left[:min(len(left), 5)], len(left))
		}
		if !slices.Equal(published, []string{"flush"}) {
			t.Fatalf("published %q, want flush", published)
		}
	})
}

// TestCheckRun: a missing run marker is set without a purge; the same run
// ID changes nothing; another one purges the namespace and takes its place.
func TestCheckRun(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		rdb := redistest.Client(t, b.Addr)
		s := b.store(t, "ns")
		set := func(k string) {
			t.Helper()
			if err := s.Set(ctx, k, []byte("v"), time.Minute, Announce{}); err != nil {
				t.Fatal(err)
			}
		}
		set("k")
		for _, tc := range []struct {
			runID      string
			wantPurged bool
		}{
			{"run-1", false}, // no marker yet
			{"run-1", false},
			{"run-2", true},
			{"run-2", false},
		} {
			purged, err := s.CheckRun(ctx, tc.runID)
			if err != nil || purged != tc.wantPurged {
				t.Fatalf("CheckRun(%s) = %v, %v; want %v", tc.runID, purged, err, tc.wantPurged)
			}
			n, _ := rdb.Exists(ctx, s.Key("k")).Result()
			if tc.wantPurged != (n == 0) {
				t.Fatalf("after CheckRun(%s): value exists = %d", tc.runID, n)
			}
			if got, _ := rdb.Get(ctx, s.runMarkerKey()).Result(); got != tc.runID {
				t.Fatalf("marker = %q, want %q", got, tc.runID)
			}
			set("k")
		}
	})
}

// redisErr is an error reply as go-redis returns it (a redis.Error).
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

var _ redis.Error = redisErr("")

// racingMarker is a hook that, before the first SETNX of the run marker,
// sets the marker itself: another node that checked the namespace between
// this Store's GET and SETNX.
type racingMarker struct {
	rdb   *redis.Client
	key   string
	value string
	done  bool
}

func (h *racingMarker) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *racingMarker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *racingMarker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		nx := cmd.Name() == "setnx" || cmd.Name() == "set" && len(args) == 4 && fmt.Sprint(args[3]) == "nx"
		if nx && !h.done {
			h.done = true
			if err := h.rdb.Set(ctx, h.key, h.value, 0).Err(); err != nil {
				return err
			}
		}
		return next(ctx, cmd)
	}
}

// TestCheckRunRace: when another node sets the missing marker between this
// node's GET and SETNX, CheckRun compares with what that node set: the
// same run ID is no purge, another one is.
func TestCheckRunRace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		theirs     string
		wantPurged bool
	}{{"run-1", false}, {"run-0", true}} {
		b := redistest.Mini(t)
		rdb := redistest.Client(t, b.Addr)
		rdb.AddHook(&racingMarker{rdb: redistest.Client(t, b.Addr), key: "ns:run_id", value: tc.theirs})
		s, err := New(rdb, &Options{Namespace: "ns", OpTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		purged, err := s.CheckRun(context.Background(), "run-1")
		if err != nil || purged != tc.wantPurged {
			t.Fatalf("marker set to %s meanwhile: CheckRun = %v, %v; want %v, nil", tc.theirs, purged, err, tc.wantPurged)
		}
	}
}
