package l2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// cmdLog is a go-redis hook that records what a client sends: each command
// as its name ("script load" for SCRIPT LOAD), each pipeline as "pipeline:"
// and the names of its commands. It leaves out what go-redis sends to set
// up a new connection (HELLO, CLIENT SETINFO), which goes through the hooks
// too.
type cmdLog struct {
	mu   sync.Mutex
	sent []string
}

func cmdName(cmd redis.Cmder) string {
	name := cmd.Name()
	if args := cmd.Args(); name == "script" && len(args) > 1 {
		return fmt.Sprint(name, " ", args[1])
	}
	return name
}

// connSetup are the commands of a new connection's setup.
var connSetup = []string{"hello", "client", "auth", "select"}

func (l *cmdLog) add(s string) {
	l.mu.Lock()
	l.sent = append(l.sent, s)
	l.mu.Unlock()
}

// take returns what was sent since the last take.
func (l *cmdLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent := l.sent
	l.sent = nil
	return sent
}

func (l *cmdLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *cmdLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !slices.Contains(connSetup, cmd.Name()) {
			l.add(cmdName(cmd))
		}
		return next(ctx, cmd)
	}
}

func (l *cmdLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var names []string
		for _, cmd := range cmds {
			if !slices.Contains(connSetup, cmd.Name()) {
				names = append(names, cmdName(cmd))
			}
		}
		if names != nil {
			l.add("pipeline: " + strings.Join(names, " "))
		}
		return next(ctx, cmds)
	}
}

// loggedStore is store with a cmdLog on its client.
func (b backend) loggedStore(t *testing.T, ns string) (*Store, *cmdLog) {
	t.Helper()
	rdb := b.client(t)
	log := &cmdLog{}
	rdb.AddHook(log)
	s, err := New(rdb, &Options{Namespace: ns, OpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s, log
}

// pipeline is what cmdLog records for a pipeline of n commands name.
func pipeline(name string, n int) string {
	return "pipeline: " + strings.TrimSpace(strings.Repeat(name+" ", n))
}

func TestBatchErr(t *testing.T) {
	t.Parallel()
	net := errors.New("connection reset")
	script := redis.Error(proto("ERR user_script:1: WRONGTYPE"))
	for _, tc := range []struct {
		name         string
		errs         []error
		wantNil      bool
		wantBatch    bool
		wantRejected bool
		wantFailed   []int // entries of a BatchError that failed
	}{
		{name: "none failed", errs: []error{nil, nil}, wantNil: true},
		{name: "all failed", errs: []error{net, net, net}},
		{name: "the only entry failed", errs: []error{net}},
		{name: "all rejected", errs: []error{script, script}, wantRejected: true},
		{name: "some failed", errs: []error{nil, net, nil, net}, wantBatch: true, wantFailed: []int{1, 3}},
		{name: "one rejected", errs: []error{script, nil}, wantBatch: true, wantRejected: true, wantFailed: []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &Store{ns: "ns"}
			err := s.batchErr("op", slices.Clone(tc.errs))
			results, rerr := batchResult([]int{1}, err)
			if rerr != err {
				t.Fatalf("batchResult changed the error: %v, not %v", rerr, err)
			}
			if tc.wantNil {
				if err != nil || results == nil {
					t.Fatalf("err = %v, results = %v; want nil and the results", err, results)
				}
				return
			}
			if !errors.Is(err, ErrUnavailable) || Permanent(err) != tc.wantRejected {
				t.Fatalf("err = %v: ErrUnavailable %v, Permanent %v; want true, %v",
					err, errors.Is(err, ErrUnavailable), Permanent(err), tc.wantRejected)
			}
			var be *BatchError
			if errors.As(err, &be) != tc.wantBatch {
				t.Fatalf("err = %#v, want a *BatchError: %v", err, tc.wantBatch)
			}
			if (results != nil) != tc.wantBatch {
				t.Fatalf("results = %v; want them only with a BatchError", results)
			}
			if !tc.wantBatch {
				if !strings.HasPrefix(err.Error(), "l2: redis unavailable: ") || !strings.Contains(err.Error(), "op: ") {
					t.Fatalf("err = %q, want the first entry's error", err)
				}
				return
			}
			var failed []int
			for i, e := range be.Errs {
				if e != nil {
					failed = append(failed, i)
					if !errors.Is(e, ErrUnavailable) || !errors.Is(e, tc.errs[i]) {
						t.Errorf("Errs[%d] = %v, want it to wrap ErrUnavailable and %v", i, e, tc.errs[i])
					}
				}
			}
			if !slices.Equal(failed, tc.wantFailed) {
				t.Fatalf("failed entries %v, want %v", failed, tc.wantFailed)
			}
			want := fmt.Sprintf("l2: %d of %d batch entries failed; the first: ", len(tc.wantFailed), len(tc.errs))
			if !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("err = %q, want the prefix %q", err, want)
			}
		})
	}
}

// proto is a Redis error reply, as go-redis returns it.
type proto string

func (e proto) Error() string { return string(e) }
func (proto) RedisError()     {}

func TestGetMany(t *testing.T) {
	t.Parallel()
	stored := map[string][]byte{
		"a":   []byte("va"),
		"b":   envelope(time.UnixMilli(1_700_000_000_000)),
		"":    []byte("empty key"),
		"}x":  []byte("brace"),
		"e":   {},
		"bin": {0, 0xff, 0},
	}
	cases := []struct {
		name string
		keys []string
	}{
		{"one hit", []string{"a"}},
		{"one miss", []string{"missing"}},
		{"hits and misses", []string{"a", "missing", "b", "other", "e"}},
		{"all misses", []string{"x", "y"}},
		{"tricky keys", []string{"", "}x", "~}x", "bin"}},
		{"repeated key", []string{"a", "a", "missing", "a"}},
		{"many keys", slices.Repeat([]string{"a", "miss", "b"}, 40)},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, log := b.loggedStore(t, "ns")
		for k, v := range stored {
			if err := s.Set(ctx, k, v, time.Minute, Announce{}); err != nil {
				t.Fatal(err)
			}
		}
		// A value in another namespace is not seen.
		if err := b.store(t, "other").Set(ctx, "other", []byte("v"), time.Minute, Announce{}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				log.take()
				got, err := s.GetMany(ctx, tc.keys)
				if err != nil || len(got) != len(tc.keys) {
					t.Fatalf("GetMany = %q, %v; want %d values", got, err, len(tc.keys))
				}
				for i, k := range tc.keys {
					want, ok := stored[k]
					if !bytes.Equal(got[i], want) || (got[i] == nil) != !ok {
						t.Errorf("value %d (%q) = %q (nil: %v), want %q (nil: %v)", i, k, got[i], got[i] == nil, want, !ok)
					}
				}
				// One round trip: an MGET, or on a Cluster client one
				// pipeline of GETs.
				want := []string{"mget"}
				if b.cluster {
					want = []string{pipeline("get", len(tc.keys))}
				}
				if sent := log.take(); !slices.Equal(sent, want) {
					t.Fatalf("sent %q, want %q", sent, want)
				}
			})
		}
		for _, keys := range [][]string{nil, {}} {
			if got, err := s.GetMany(ctx, keys); got != nil || err != nil {
				t.Fatalf("GetMany(%#v) = %q, %v; want nil, nil", keys, got, err)
			}
		}
		if sent := log.take(); len(sent) != 0 {
			t.Fatalf("GetMany of no keys sent %q", sent)
		}
	})
}

// TestGetOrLeaseManyMixed: one batch meets every state, then FillMany and
// ReleaseMany end the leases it took, waking whoever waited.
func TestGetOrLeaseManyMixed(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, log := b.loggedStore(t, "ns")
		rdb := redistest.Client(t, b.Addr)
		now := time.Now()
		live, expired := envelope(now.Add(time.Hour)), envelope(now.Add(-time.Second))
		set := func(rk string, v []byte) {
			t.Helper()
			if err := rdb.Set(ctx, rk, v, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}
		set(s.Key("found"), live)
		set(s.Key("garbage"), []byte("v"))
		set(s.Key("expired"), expired)
		set(s.Key("expired-held"), expired)
		set(s.leaseKey("uncacheable"), []byte(uncacheableMarker))
		other := acquire(t, s, "held", time.Minute)
		otherExpired := acquire(t, s, "expired-held", time.Minute)

		keys := []string{"found", "acquired", "held", "uncacheable", "expired", "expired-held", "garbage", "lost", "released"}
		want := []struct {
			state LeaseState
			value []byte // Value with Found, else Stale
		}{
			{Found, live}, {Acquired, nil}, {Held, nil}, {Uncacheable, nil}, {Acquired, expired},
			{Held, expired}, {Found, []byte("v")}, {Acquired, nil}, {Acquired, nil},
		}
		log.take()
		rs, err := s.GetOrLeaseMany(ctx, keys, time.Minute, now)
		if err != nil || len(rs) != len(keys) {
			t.Fatalf("GetOrLeaseMany = %+v, %v; want %d results", rs, err, len(keys))
		}
		if sent := log.take(); len(sent) != 1 || sent[0] != pipeline("evalsha", len(keys)) {
			t.Fatalf("GetOrLeaseMany sent %q, want one pipeline of %d EVALSHA", sent, len(keys))
		}
		leases := make(map[string]Lease)
		tokens := make(map[string]bool)
		for i, r := range rs {
			k, w := keys[i], want[i]
			got := r.Stale
			if w.state == Found {
				got = r.Value
			}
			if r.State != w.state || !bytes.Equal(got, w.value) || (got == nil) != (w.value == nil) {
				t.Errorf("%s: %+v; want state %d with %q", k, r, w.state, w.value)
			}
			if r.State == Acquired {
				if r.Lease.Key != k || r.Lease.Token == "" || tokens[r.Lease.Token] {
					t.Errorf("%s: lease %+v: wrong key, or a token empty or reused", k, r.Lease)
				}
				tokens[r.Lease.Token] = true
				leases[k] = r.Lease
			}
			if r.State == Held && (r.Remaining <= 0 || r.Remaining > time.Minute) {
				t.Errorf("%s: Remaining = %v, want in (0, 1m]", k, r.Remaining)
			}
		}
		if t.Failed() {
			t.FailNow()
		}

		// Someone waits for "acquired"; "lost" loses its lease to a Set.
		wait(t, s, "acquired", time.Minute)
		if err := s.Set(ctx, "lost", []byte("written"), time.Minute, Announce{}); err != nil {
			t.Fatal(err)
		}
		sub := b.subscribe(t, "wake")
		wakeOf := func(k string) Announce {
			return Announce{Channel: "wake", Messages: [][]byte{[]byte("w-" + k)}}
		}
		var filled []bool
		got := sub.collect(nil, func() {
			fills := []Fill{
				{Lease: leases["acquired"], Value: []byte("new"), TTL: time.Minute, Wake: wakeOf("acquired")},
				{Lease: leases["expired"], Value: []byte("refreshed"), TTL: time.Minute, Wake: wakeOf("expired")},
				{Lease: leases["lost"], Value: []byte("late"), TTL: time.Minute, Wake: wakeOf("lost")},
			}
			filled, err = s.FillMany(ctx, fills)
			if err != nil {
				t.Errorf("FillMany: %v", err)
			}
			// The waiters of "held" and "expired-held" (this batch) are
			// woken when their holder gives up; "released" had none.
			err := s.ReleaseMany(ctx, []Lease{other, otherExpired, leases["released"]},
				[]Announce{wakeOf("held"), wakeOf("expired-held"), wakeOf("released")})
			if err != nil {
				t.Errorf("ReleaseMany: %v", err)
			}
		}, nil)
		if !slices.Equal(filled, []bool{true, true, false}) {
			t.Fatalf("FillMany filled %v, want [true true false]", filled)
		}
		if wantWakes := []string{"w-acquired", "w-held", "w-expired-held"}; !slices.Equal(got, wantWakes) {
			t.Fatalf("published %q, want %q", got, wantWakes)
		}
		values, err := s.GetMany(ctx, []string{"acquired", "expired", "lost"})
		if err != nil || string(values[0]) != "new" || string(values[1]) != "refreshed" || string(values[2]) != "written" {
			t.Fatalf("values after FillMany = %q, %v; want new, refreshed, written", values, err)
		}
		for _, k := range []string{"acquired", "expired", "lost", "held", "expired-held", "released"} {
			if n, err := rdb.Exists(ctx, s.leaseKey(k), s.waitersKey(k)).Result(); err != nil || n != 0 {
				t.Errorf("%s: %d of its lease and waiters keys survived (%v)", k, n, err)
			}
		}
	})
}

// TestBatchNoScript: after the server lost its scripts, each batch
// operation loads the script once and sends again only what met NOSCRIPT,
// never the script's body per key (EVAL).
func TestBatchNoScript(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// run runs the batch operation on keys, whose leases are held in
		// leases, and checks its results.
		run func(t *testing.T, s *Store, keys []string, leases []Lease)
	}{
		{"GetOrLeaseMany", func(t *testing.T, s *Store, keys []string, _ []Lease) {
			rs, err := s.GetOrLeaseMany(context.Background(), slices.Concat(keys, []string{"free"}), time.Minute, time.Now())
			if err != nil || len(rs) != len(keys)+1 {
				t.Fatalf("GetOrLeaseMany = %+v, %v", rs, err)
			}
			for i, r := range rs {
				if want := map[bool]LeaseState{true: Acquired, false: Held}[i == len(keys)]; r.State != want {
					t.Fatalf("result %d = %+v, want state %d", i, r, want)
				}
			}
		}},
		{"FillMany", func(t *testing.T, s *Store, keys []string, leases []Lease) {
			fills := make([]Fill, len(leases))
			for i, l := range leases {
				fills[i] = Fill{Lease: l, Value: []byte("v"), TTL: time.Minute}
			}
			filled, err := s.FillMany(context.Background(), fills)
			if err != nil || !slices.Equal(filled, []bool{true, true, true}) {
				t.Fatalf("FillMany = %v, %v; want all true", filled, err)
			}
			if vs, err := s.GetMany(context.Background(), keys); err != nil || string(vs[0]) != "v" {
				t.Fatalf("GetMany after FillMany = %q, %v", vs, err)
			}
		}},
		{"ReleaseMany", func(t *testing.T, s *Store, keys []string, leases []Lease) {
			if err := s.ReleaseMany(context.Background(), leases, nil); err != nil {
				t.Fatal(err)
			}
			rs, err := s.GetOrLeaseMany(context.Background(), keys, time.Minute, time.Now())
			if err != nil || rs[0].State != Acquired {
				t.Fatalf("GetOrLeaseMany after ReleaseMany = %+v, %v; want the leases free", rs, err)
			}
		}},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		rdb := redistest.Client(t, b.Addr)
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				s, log := b.loggedStore(t, "ns"+strconv.Itoa(i))
				keys := []string{"a", "b", "c"}
				var leases []Lease
				for _, k := range keys {
					leases = append(leases, acquire(t, s, k, time.Minute))
				}
				if err := rdb.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				log.take()
				tc.run(t, s, keys, leases)
				sent := log.take()
				n := len(keys)
				if tc.name == "GetOrLeaseMany" {
					n++
				}
				want := []string{pipeline("evalsha", n), "script load", pipeline("evalsha", n)}
				evals := slices.ContainsFunc(sent, func(s string) bool { return slices.Contains(strings.Fields(s), "eval") })
				if !slices.Equal(sent[:min(len(sent), 3)], want) || evals {
					t.Fatalf("sent %q, want %q first and no EVAL", sent, want)
				}
			})
		}
	})
}

// TestBatchPartialFailure: a batch in which some keys fail returns the
// results of the others with a *BatchError that says which failed; one in
// which every key fails returns no results and a plain error. A key whose
// value or lease key holds a list makes its script fail with WRONGTYPE.
func TestBatchPartialFailure(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		for _, rk := range []string{s.Key("bad"), s.leaseKey("bad"), s.Key("bad2"), s.leaseKey("bad2")} {
			if err := rdb.RPush(ctx, rk, "x").Err(); err != nil {
				t.Fatal(err)
			}
		}
		// checkBatchErr checks that err is a *BatchError in which exactly
		// the entries failed are rejections.
		checkBatchErr := func(t *testing.T, op string, err error, n int, failed ...int) {
			t.Helper()
			var be *BatchError
			if !errors.As(err, &be) || len(be.Errs) != n || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%s: err = %v, want a *BatchError of %d entries wrapping ErrUnavailable", op, err, n)
			}
			for i, e := range be.Errs {
				if want := slices.Contains(failed, i); (e != nil) != want || (want && !Permanent(e)) {
					t.Errorf("%s: Errs[%d] = %v; want a rejection: %v", op, i, e, want)
				}
			}
		}

		rs, err := s.GetOrLeaseMany(ctx, []string{"good", "bad", "good2"}, time.Minute, time.Now())
		checkBatchErr(t, "GetOrLeaseMany", err, 3, 1)
		if len(rs) != 3 || rs[0].State != Acquired || rs[1].State != 0 || rs[2].State != Acquired {
			t.Fatalf("GetOrLeaseMany = %+v; want Acquired, zero, Acquired", rs)
		}

		filled, err := s.FillMany(ctx, []Fill{
			{Lease: rs[0].Lease, Value: []byte("v"), TTL: time.Minute},
			{Lease: Lease{Key: "bad", Token: "t"}, Value: []byte("v"), TTL: time.Minute},
		})
		checkBatchErr(t, "FillMany", err, 2, 1)
		if !slices.Equal(filled, []bool{true, false}) {
			t.Fatalf("FillMany filled %v, want [true false]", filled)
		}

		err = s.ReleaseMany(ctx, []Lease{{Key: "bad", Token: "t"}, rs[2].Lease}, nil)
		checkBatchErr(t, "ReleaseMany", err, 2, 0)
		if r, err := s.GetOrLease(ctx, "good2", time.Minute, time.Now()); err != nil || r.State != Acquired {
			t.Fatalf("GetOrLease after ReleaseMany = %+v, %v; want the lease released", r, err)
		}

		// MGET answers nil for a key of another type, so on a single node
		// GetMany cannot fail for one key alone; a Cluster client's GET can.
		vs, err := s.GetMany(ctx, []string{"good", "bad"})
		if b.cluster {
			checkBatchErr(t, "GetMany", err, 2, 1)
		} else if err != nil {
			t.Fatalf("GetMany = %v", err)
		}
		if len(vs) != 2 || string(vs[0]) != "v" || vs[1] != nil {
			t.Fatalf("GetMany = %q, want v, nil", vs)
		}

		// Every entry failed: no results, and no BatchError.
		for _, op := range []struct {
			name string
			run  func() (any, error)
		}{
			{"GetOrLeaseMany", func() (any, error) {
				return s.GetOrLeaseMany(ctx, []string{"bad", "bad2"}, time.Minute, time.Now())
			}},
			{"FillMany", func() (any, error) {
				return s.FillMany(ctx, []Fill{{Lease: Lease{Key: "bad", Token: "t"}}, {Lease: Lease{Key: "bad2", Token: "t"}}})
			}},
			{"ReleaseMany", func() (any, error) {
				return nil, s.ReleaseMany(ctx, []Lease{{Key: "bad", Token: "t"}, {Key: "bad2", Token: "t"}}, nil)
			}},
		} {
			res, err := op.run()
			if !Permanent(err) || errors.As(err, new(*BatchError)) {
				t.Errorf("%s, every entry failing: err = %v; want a rejection, not a *BatchError", op.name, err)
			}
			if !isNil(res) {
				t.Errorf("%s, every entry failing: results %v, want none", op.name, res)
			}
		}
	})
}

// isNil reports whether v, a batch call's results, is nil.
func isNil(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case []LeaseResult:
		return v == nil
	case []bool:
		return v == nil
	}
	return false
}

func TestBatchEmpty(t *testing.T) {
	t.Parallel()
	// No keys: no round trip, so no server is needed.
	s, err := New(redistest.Client(t, redistest.RefusedAddr(t)), &Options{Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if rs, err := s.GetOrLeaseMany(ctx, nil, time.Minute, time.Now()); rs != nil || err != nil {
		t.Errorf("GetOrLeaseMany(nil) = %v, %v; want nil, nil", rs, err)
	}
	if filled, err := s.FillMany(ctx, nil); filled != nil || err != nil {
		t.Errorf("FillMany(nil) = %v, %v; want nil, nil", filled, err)
	}
	if err := s.ReleaseMany(ctx, nil, nil); err != nil {
		t.Errorf("ReleaseMany(nil) = %v", err)
	}
	if vs, err := s.GetMany(ctx, []string{}); vs != nil || err != nil {
		t.Errorf("GetMany([]) = %v, %v; want nil, nil", vs, err)
	}
	// A wake per lease, or none.
	err = s.ReleaseMany(ctx, []Lease{{Key: "k", Token: "t"}}, []Announce{{}, {}})
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.HasPrefix(err.Error(), "l2: ") {
		t.Errorf("ReleaseMany with 2 wakes for 1 lease = %v; want an l2: error other than ErrUnavailable", err)
	}
}
