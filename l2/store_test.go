package l2

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

func TestNew(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t, redistest.RefusedAddr(t))
	for _, tc := range []struct {
		name        string
		rdb         redis.UniversalClient
		opts        *Options
		wantErr     error // nil: New must succeed
		wantTimeout time.Duration
	}{
		{name: "defaults", rdb: rdb, opts: &Options{Namespace: "p"}, wantTimeout: DefaultOpTimeout},
		{name: "explicit OpTimeout", rdb: rdb, opts: &Options{Namespace: "p", OpTimeout: time.Second}, wantTimeout: time.Second},
		{name: "namespace with colon", rdb: rdb, opts: &Options{Namespace: "app:p"}, wantTimeout: DefaultOpTimeout},
		{name: "nil options", rdb: rdb, opts: nil, wantErr: ErrInvalidNamespace},
		{name: "empty namespace", rdb: rdb, opts: &Options{}, wantErr: ErrInvalidNamespace},
		{name: "open brace", rdb: rdb, opts: &Options{Namespace: "a{b"}, wantErr: ErrInvalidNamespace},
		{name: "close brace", rdb: rdb, opts: &Options{Namespace: "a}b"}, wantErr: ErrInvalidNamespace},
		{name: "hash tag", rdb: rdb, opts: &Options{Namespace: "{p}"}, wantErr: ErrInvalidNamespace},
		{name: "nil client", rdb: nil, opts: &Options{Namespace: "p"}, wantErr: errAny},
		{name: "negative OpTimeout", rdb: rdb, opts: &Options{Namespace: "p", OpTimeout: -1}, wantErr: errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := New(tc.rdb, tc.opts)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if s.ns != tc.opts.Namespace || s.opTimeout != tc.wantTimeout {
					t.Fatalf("namespace, OpTimeout = %q, %v; want %q, %v", s.ns, s.opTimeout, tc.opts.Namespace, tc.wantTimeout)
				}
				return
			}
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			if tc.wantErr != errAny && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == errAny && errors.Is(err, ErrInvalidNamespace) {
				t.Fatalf("err = %v, want an error other than ErrInvalidNamespace", err)
			}
			if !strings.HasPrefix(err.Error(), "l2: ") {
				t.Fatalf("error %q lacks the l2: prefix", err)
			}
		})
	}
}

// errAny in a test table stands for "any error".
var errAny = errors.New("any error")

func TestKeyLayout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ns, key               string
		value, lease, waiters string
	}{
		{"ns", "k", "ns:{k}", "ns:{k}:lease", "ns:{k}:waiters"},
		{"ns", "", "ns:{~}", "ns:{~}:lease", "ns:{~}:waiters"}, // escaped: see keys.go
		{"app:v2", "user:42", "app:v2:{user:42}", "app:v2:{user:42}:lease", "app:v2:{user:42}:waiters"},
		{"ns", "ключ", "ns:{ключ}", "ns:{ключ}:lease", "ns:{ключ}:waiters"},
	} {
		s := &Store{ns: tc.ns}
		if got := s.Key(tc.key); got != tc.value {
			t.Errorf("Key(%q) in %q = %q, want %q", tc.key, tc.ns, got, tc.value)
		}
		if got := s.leaseKey(tc.key); got != tc.lease {
			t.Errorf("leaseKey(%q) in %q = %q, want %q", tc.key, tc.ns, got, tc.lease)
		}
		if got := s.waitersKey(tc.key); got != tc.waiters {
			t.Errorf("waitersKey(%q) in %q = %q, want %q", tc.key, tc.ns, got, tc.waiters)
		}
	}

	// The layout is what actually lands in Redis.
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		if err := s.Set(ctx, "k", []byte("v"), time.Minute, Announce{}); err != nil {
			t.Fatal(err)
		}
		if v, err := rdb.Get(ctx, "ns:{k}").Result(); err != nil || v != "v" {
			t.Fatalf("GET ns:{k} = %q, %v; want v", v, err)
		}
		r, err := s.GetOrLease(ctx, "other", time.Minute, time.Now())
		if err != nil || r.State != Acquired {
			t.Fatalf("GetOrLease = %+v, %v; want Acquired", r, err)
		}
		if v, err := rdb.Get(ctx, "ns:{other}:lease").Result(); err != nil || v != r.Lease.Token {
			t.Fatalf("GET ns:{other}:lease = %q, %v; want the token %q", v, err, r.Lease.Token)
		}
		if r, err := s.GetOrLease(ctx, "other", time.Minute, time.Now()); err != nil || r.State != Held {
			t.Fatalf("second GetOrLease = %+v, %v; want Held", r, err)
		}
		if n, err := rdb.Exists(ctx, "ns:{other}:waiters").Result(); err != nil || n != 1 {
			t.Fatalf("EXISTS ns:{other}:waiters = %d, %v; want 1", n, err)
		}
		keys, err := rdb.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 3 {
			t.Fatalf("keys in Redis = %q, want exactly ns:{k}, ns:{other}:lease, ns:{other}:waiters", keys)
		}
	})
}

func TestGetMiss(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.store(t, "ns")
		for _, setup := range []struct {
			name string
			run  func()
		}{
			{"never set", func() {}},
			{"only a lease", func() {
				if r, err := s.GetOrLease(ctx, "k", time.Minute, time.Now()); err != nil || r.State != Acquired {
					t.Fatalf("GetOrLease = %+v, %v", r, err)
				}
			}},
			{"set in another namespace", func() {
				if err := b.store(t, "other").Set(ctx, "k", []byte("v"), time.Minute, Announce{}); err != nil {
					t.Fatal(err)
				}
			}},
		} {
			setup.run()
			v, err := s.Get(ctx, "k")
			if !errors.Is(err, ErrMiss) || errors.Is(err, ErrUnavailable) || v != nil {
				t.Fatalf("%s: Get = %q, %v; want nil, ErrMiss (and not ErrUnavailable)", setup.name, v, err)
			}
		}
	})
}

func TestSetGet(t *testing.T) {
	t.Parallel()
	large := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	cases := []struct {
		name  string
		value []byte
		ttl   time.Duration
	}{
		{"short", []byte("v"), time.Minute},
		{"empty", []byte{}, time.Minute},
		{"binary", []byte{0, 0xff, 0, '\n', '\r', 0x80}, time.Hour},
		{"envelope", Envelope{Expiry: time.UnixMilli(1e12), Payload: []byte(`{"a":1}`)}.AppendBinary(nil), 90 * time.Second},
		{"1 MiB", large, time.Minute},
		{"odd ttl", []byte("v"), 1500*time.Millisecond + 300*time.Microsecond},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				k := "k-" + tc.name
				// Overwrite a previous value with a longer TTL.
				if err := s.Set(ctx, k, []byte("previous"), 24*time.Hour, Announce{}); err != nil {
					t.Fatal(err)
				}
				if err := s.Set(ctx, k, tc.value, tc.ttl, Announce{}); err != nil {
					t.Fatal(err)
				}
				got, err := s.Get(ctx, k)
				if err != nil || !bytes.Equal(got, tc.value) {
					t.Fatalf("Get = %.40q (%d bytes), %v; want %.40q (%d bytes)", got, len(got), err, tc.value, len(tc.value))
				}
				pttl, err := rdb.PTTL(ctx, s.Key(k)).Result()
				if err != nil || pttl <= 0 || pttl > tc.ttl {
					t.Fatalf("PTTL %s = %v, %v; want in (0, %v]", s.Key(k), pttl, err, tc.ttl)
				}
			})
		}
	})
}

// TestSetSubMillisecondTTL: Redis rejects PX 0, so a TTL under a
// millisecond is rounded up rather than turned into a server error.
func TestSetSubMillisecondTTL(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		for _, ttl := range []time.Duration{0, time.Nanosecond, 999 * time.Microsecond} {
			if err := s.Set(ctx, "k", []byte("v"), ttl, Announce{}); err != nil {
				t.Fatalf("Set with ttl %v: %v", ttl, err)
			}
			// Already gone (-2) or at most 1ms left.
			if pttl, err := rdb.PTTL(ctx, s.Key("k")).Result(); err != nil || pttl > time.Millisecond || pttl == -1 {
				t.Fatalf("ttl %v: PTTL = %v, %v; want at most 1ms", ttl, pttl, err)
			}
		}
	})
}

func TestDelete(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		var keys []string
		for i := range 30 {
			k := "k" + strconv.Itoa(i)
			keys = append(keys, k)
			if err := s.Set(ctx, k, []byte("v"+k), time.Minute, Announce{}); err != nil {
				t.Fatal(err)
			}
			if err := rdb.Set(ctx, s.leaseKey(k), "token", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}
		deleted, kept := keys[:20], keys[20:]
		if err := s.Delete(ctx, slices.Concat(deleted, []string{"never-set"}), Announce{}); err != nil {
			t.Fatal(err)
		}
		for _, k := range deleted {
			if _, err := s.Get(ctx, k); !errors.Is(err, ErrMiss) {
				t.Errorf("Get(%q) after Delete: %v, want ErrMiss", k, err)
			}
			if n, _ := rdb.Exists(ctx, s.leaseKey(k)).Result(); n != 0 {
				t.Errorf("lease of %q survived Delete", k)
			}
		}
		for _, k := range kept {
			if v, err := s.Get(ctx, k); err != nil || string(v) != "v"+k {
				t.Errorf("Get(%q) of a key not deleted = %q, %v", k, v, err)
			}
			if n, _ := rdb.Exists(ctx, s.leaseKey(k)).Result(); n != 1 {
				t.Errorf("lease of %q, not deleted, is gone", k)
			}
		}
		for _, ks := range [][]string{nil, {}} {
			if err := s.Delete(ctx, ks, Announce{}); err != nil {
				t.Fatalf("Delete(%#v) = %v", ks, err)
			}
		}
	})
}

func TestDeleteIfEqual(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		stored      []byte // nil: key absent
		old         []byte
		wantDeleted bool
	}{
		{"equal", []byte("v1"), []byte("v1"), true},
		{"equal binary", []byte{0, 1, 0xff}, []byte{0, 1, 0xff}, true},
		{"empty equal", []byte{}, []byte{}, true},
		{"different", []byte("v1"), []byte("v2"), false},
		{"prefix", []byte("v1"), []byte("v"), false},
		{"longer", []byte("v1"), []byte("v1x"), false},
		{"absent", nil, []byte("v1"), false},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.store(t, "ns")
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				k := "k-" + tc.name
				if tc.stored != nil {
					if err := s.Set(ctx, k, tc.stored, time.Minute, Announce{}); err != nil {
						t.Fatal(err)
					}
				}
				deleted, err := s.DeleteIfEqual(ctx, k, tc.old)
				if err != nil || deleted != tc.wantDeleted {
					t.Fatalf("DeleteIfEqual = %v, %v; want %v", deleted, err, tc.wantDeleted)
				}
				v, err := s.Get(ctx, k)
				switch {
				case tc.stored == nil || tc.wantDeleted:
					if !errors.Is(err, ErrMiss) {
						t.Fatalf("Get afterwards = %q, %v; want ErrMiss", v, err)
					}
				case err != nil || !bytes.Equal(v, tc.stored):
					t.Fatalf("Get afterwards = %q, %v; want %q kept", v, err, tc.stored)
				}
			})
		}
	})
}

// storeOps calls each Store method that reaches Redis.
var storeOps = []struct {
	name string
	run  func(ctx context.Context, s *Store) error
}{
	{"Get", func(ctx context.Context, s *Store) error { _, err := s.Get(ctx, "k"); return err }},
	{"Set", func(ctx context.Context, s *Store) error {
		return s.Set(ctx, "k", []byte("v"), time.Minute, Announce{Channel: "c", Messages: [][]byte{[]byte("m")}})
	}},
	{"Delete", func(ctx context.Context, s *Store) error {
		return s.Delete(ctx, []string{"a", "b"}, Announce{Channel: "c", Messages: [][]byte{[]byte("m")}})
	}},
	{"DeleteIfEqual", func(ctx context.Context, s *Store) error {
		_, err := s.DeleteIfEqual(ctx, "k", []byte("v"))
		return err
	}},
	{"GetOrLease", func(ctx context.Context, s *Store) error {
		_, err := s.GetOrLease(ctx, "k", time.Second, time.Now())
		return err
	}},
	{"Fill", func(ctx context.Context, s *Store) error {
		_, err := s.Fill(ctx, Lease{Key: "k", Token: "t"}, []byte("v"), time.Minute, Announce{})
		return err
	}},
	{"Release", func(ctx context.Context, s *Store) error {
		return s.Release(ctx, Lease{Key: "k", Token: "t"}, Announce{})
	}},
	{"RefreshLease", func(ctx context.Context, s *Store) error {
		_, err := s.RefreshLease(ctx, "k", time.Now(), time.Second)
		return err
	}},
	{"MarkUncacheable", func(ctx context.Context, s *Store) error {
		return s.MarkUncacheable(ctx, Lease{Key: "k", Token: "t"}, time.Minute, Announce{})
	}},
	{"GetMany", func(ctx context.Context, s *Store) error {
		_, err := s.GetMany(ctx, []string{"a", "b"})
		return err
	}},
	{"GetOrLeaseMany", func(ctx context.Context, s *Store) error {
		_, err := s.GetOrLeaseMany(ctx, []string{"a", "b"}, time.Second, time.Now())
		return err
	}},
	{"FillMany", func(ctx context.Context, s *Store) error {
		_, err := s.FillMany(ctx, []Fill{{Lease: Lease{Key: "a", Token: "t"}}, {Lease: Lease{Key: "b", Token: "t"}}})
		return err
	}},
	{"ReleaseMany", func(ctx context.Context, s *Store) error {
		return s.ReleaseMany(ctx, []Lease{{Key: "a", Token: "t"}, {Key: "b", Token: "t"}}, nil)
	}},
}

// checkUnavailable runs every op on s and checks that each fails with an
// error wrapping ErrUnavailable, within bound.
func checkUnavailable(t *testing.T, s *Store, bound time.Duration) {
	t.Helper()
	for _, op := range storeOps {
		start := time.Now()
		// Writes are bounded by their context alone; reads also by OpTimeout.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := op.run(ctx, s)
		cancel()
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrMiss) {
			t.Errorf("%s: err = %v, want ErrUnavailable (and not ErrMiss)", op.name, err)
		} else if !strings.HasPrefix(err.Error(), "l2: redis unavailable: ") {
			t.Errorf("%s: err = %q, want the l2: redis unavailable: prefix", op.name, err)
		}
		if d := time.Since(start); d > bound {
			t.Errorf("%s took %v, want at most %v", op.name, d, bound)
		}
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("stopped server", func(t *testing.T) {
		eachBackend(t, func(t *testing.T, b backend) {
			s := b.store(t, "ns")
			if err := s.Set(context.Background(), "k", []byte("v"), time.Minute, Announce{}); err != nil {
				t.Fatal(err) // the server works before it is stopped
			}
			b.Stop()
			checkUnavailable(t, s, 5*time.Second)
		})
	})

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		rdb := redistest.Client(t, redistest.RefusedAddr(t))
		s, err := New(rdb, &Options{Namespace: "ns"})
		if err != nil {
			t.Fatal(err)
		}
		checkUnavailable(t, s, 5*time.Second)
	})

	t.Run("unresponsive", func(t *testing.T) {
		t.Parallel()
		addr := silentServer(t)
		// Without ContextTimeoutEnabled go-redis ignores the context deadline
		// on reads and writes, and OpTimeout would not bound the calls.
		rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ContextTimeoutEnabled: true})
		t.Cleanup(func() { rdb.Close() })
		const opTimeout = 100 * time.Millisecond
		s, err := New(rdb, &Options{Namespace: "ns", OpTimeout: opTimeout})
		if err != nil {
			t.Fatal(err)
		}
		checkUnavailable(t, s, opTimeout+2*time.Second)
	})
}

// silentServer accepts connections and never answers; it stops when t ends.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestAnnounce: Set and Delete publish each message of their Announce once,
// on its channel, after the change they announce.
func TestAnnounce(t *testing.T) {
	t.Parallel()
	msgs := func(ms ...string) [][]byte {
		var out [][]byte
		for _, m := range ms {
			out = append(out, []byte(m))
		}
		return out
	}
	var many []string
	for i := range 25 {
		many = append(many, "m"+strconv.Itoa(i))
	}
	cases := []struct {
		name string
		keys []string
		set  bool // Set keys[0]; else Delete keys
		msgs []string
	}{
		{name: "set, one message", keys: []string{"k"}, set: true, msgs: []string{"m1"}},
		{name: "set, three messages", keys: []string{"k"}, set: true, msgs: []string{"m1", "m2", "m3"}},
		{name: "set, a repeated message", keys: []string{"k"}, set: true, msgs: []string{"m1", "m1"}},
		{name: "set, binary message", keys: []string{"k"}, set: true, msgs: []string{"T\x01\x01\x00\xff"}},
		{name: "set, no messages", keys: []string{"k"}, set: true},
		{name: "delete one key", keys: []string{"k"}, msgs: []string{"m1"}},
		{name: "delete many keys, many messages", keys: many, msgs: many},
		{name: "delete, no messages", keys: []string{"k"}},
		{name: "delete of no keys", keys: nil, msgs: []string{"m1"}},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		rdb := redistest.Client(t, b.Addr)
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ns, ch := "ns"+strconv.Itoa(i), "chan"+strconv.Itoa(i)
				s, gate := b.gatedStore(t, ns)
				sub := b.subscribe(t, ch)
				for _, k := range tc.keys {
					if err := rdb.Set(ctx, s.Key(k), "old", time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
				}
				ann := Announce{Channel: ch, Messages: msgs(tc.msgs...)}
				// The announced change, as seen by another client when
				// each message arrives.
				check := func(payload string) {
					for _, k := range tc.keys {
						v, err := rdb.Get(ctx, s.Key(k)).Result()
						switch {
						case tc.set && (err != nil || v != "new"):
							t.Errorf("message %q arrived while %s = %q, %v; want the new value", payload, s.Key(k), v, err)
							return
						case !tc.set && !errors.Is(err, redis.Nil):
							t.Errorf("message %q arrived while %s = %q, %v; want it deleted", payload, s.Key(k), v, err)
							return
						}
					}
				}
				got := sub.collect(gate, func() {
					var err error
					if tc.set {
						err = s.Set(ctx, tc.keys[0], []byte("new"), time.Minute, ann)
					} else {
						err = s.Delete(ctx, tc.keys, ann)
					}
					if err != nil {
						t.Error(err)
					}
				}, check)
				want := tc.msgs
				if len(tc.keys) == 0 {
					want = nil // nothing deleted, nothing announced
				}
				if strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
					t.Fatalf("published %q, want %q", got, want)
				}
			})
		}
	})
}
