package l2

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// acquire takes k's lease and fails the test unless it was free.
func acquire(t *testing.T, s *Store, k string, ttl time.Duration) Lease {
	t.Helper()
	r, err := s.GetOrLease(context.Background(), k, ttl)
	if err != nil || r.State != Acquired {
		t.Fatalf("GetOrLease(%q) = %+v, %v; want Acquired", k, r, err)
	}
	return r.Lease
}

// wait registers a waiter for k's lease and fails the test unless another
// holds it.
func wait(t *testing.T, s *Store, k string, ttl time.Duration) LeaseResult {
	t.Helper()
	r, err := s.GetOrLease(context.Background(), k, ttl)
	if err != nil || r.State != Held {
		t.Fatalf("GetOrLease(%q) = %+v, %v; want Held", k, r, err)
	}
	return r
}

// TestGetOrLease walks one key through the protocol: the first caller
// acquires, the next is told the lease is held, the holder fills, and then
// everyone finds the value.
func TestGetOrLease(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		const ttl = time.Minute

		first, err := s.GetOrLease(ctx, "k", ttl)
		if err != nil || first.State != Acquired || first.Lease.Key != "k" || first.Lease.Token == "" || first.Value != nil {
			t.Fatalf("first GetOrLease = %+v, %v; want Acquired with a token for k", first, err)
		}
		if tok, err := rdb.Get(ctx, s.leaseKey("k")).Result(); err != nil || tok != first.Lease.Token {
			t.Fatalf("lease key holds %q, %v; want the token", tok, err)
		}
		if pttl, _ := rdb.PTTL(ctx, s.leaseKey("k")).Result(); pttl <= 0 || pttl > ttl {
			t.Fatalf("lease PTTL = %v, want in (0, %v]", pttl, ttl)
		}

		second, err := s.GetOrLease(ctx, "k", ttl)
		if err != nil || second.State != Held || second.Remaining <= 0 || second.Remaining > ttl || second.Lease != (Lease{}) {
			t.Fatalf("second GetOrLease = %+v, %v; want Held with Remaining in (0, %v]", second, err, ttl)
		}

		if ok, err := s.Fill(ctx, first.Lease, []byte("v"), time.Hour, Announce{}); err != nil || !ok {
			t.Fatalf("Fill by the holder = %v, %v; want true", ok, err)
		}
		third, err := s.GetOrLease(ctx, "k", ttl)
		if err != nil || third.State != Found || string(third.Value) != "v" {
			t.Fatalf("GetOrLease after Fill = %+v, %v; want Found v", third, err)
		}
		if v, err := s.Get(ctx, "k"); err != nil || string(v) != "v" {
			t.Fatalf("Get after Fill = %q, %v", v, err)
		}
		if pttl, _ := rdb.PTTL(ctx, s.Key("k")).Result(); pttl <= ttl || pttl > time.Hour {
			t.Fatalf("value PTTL = %v, want the Fill's ttl of 1h", pttl)
		}
		if n, _ := rdb.Exists(ctx, s.leaseKey("k"), s.waitersKey("k")).Result(); n != 0 {
			t.Fatalf("%d of the lease and waiters keys survived Fill", n)
		}
	})
}

// TestGetOrLeaseFindsEmptyValue: an empty value is a value, not a miss.
func TestGetOrLeaseFindsEmptyValue(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.store(t, "ns")
		if err := s.Set(ctx, "k", []byte{}, time.Minute, Announce{}); err != nil {
			t.Fatal(err)
		}
		r, err := s.GetOrLease(ctx, "k", time.Minute)
		if err != nil || r.State != Found || len(r.Value) != 0 {
			t.Fatalf("GetOrLease = %+v, %v; want Found with an empty value", r, err)
		}
	})
}

func TestLeaseTokensDiffer(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.store(t, "ns")
		seen := make(map[string]bool)
		for i := range 20 {
			k := "k" + strconv.Itoa(i%4)
			l := acquire(t, s, k, time.Minute)
			if len(l.Token) < 16 || seen[l.Token] {
				t.Fatalf("token %q: too short or reused", l.Token)
			}
			seen[l.Token] = true
			if err := s.Release(ctx, l, Announce{}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestFillLostLease: a holder whose lease was deleted by a write, expired,
// or was taken over must not write its value.
func TestFillLostLease(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		expires bool // the lease is taken with a short TTL that lose lets run out
		// lose runs between acquiring l and filling; it returns the value
		// expected in Redis afterwards ("" for none).
		lose   func(t *testing.T, b backend, s *Store, rdb *redis.Client, l Lease) string
		wantOK bool
	}{
		{name: "nothing happened", wantOK: true,
			lose: func(*testing.T, backend, *Store, *redis.Client, Lease) string { return "loaded" }},
		{name: "set of the key",
			lose: func(t *testing.T, _ backend, s *Store, _ *redis.Client, l Lease) string {
				if err := s.Set(context.Background(), l.Key, []byte("written"), time.Minute, Announce{}); err != nil {
					t.Fatal(err)
				}
				return "written"
			}},
		{name: "delete of the key",
			lose: func(t *testing.T, _ backend, s *Store, _ *redis.Client, l Lease) string {
				if err := s.Delete(context.Background(), []string{"x", l.Key}, Announce{}); err != nil {
					t.Fatal(err)
				}
				return ""
			}},
		{name: "delete of another key", wantOK: true,
			lose: func(t *testing.T, _ backend, s *Store, _ *redis.Client, l Lease) string {
				if err := s.Delete(context.Background(), []string{"x"}, Announce{}); err != nil {
					t.Fatal(err)
				}
				return "loaded"
			}},
		{name: "released",
			lose: func(t *testing.T, _ backend, s *Store, _ *redis.Client, l Lease) string {
				if err := s.Release(context.Background(), l, Announce{}); err != nil {
					t.Fatal(err)
				}
				return ""
			}},
		{name: "expired", expires: true,
			lose: func(t *testing.T, b backend, s *Store, rdb *redis.Client, l Lease) string {
				b.expire(t, rdb, s.leaseKey(l.Key), b.shortTTL())
				return ""
			}},
		{name: "expired and taken over", expires: true,
			lose: func(t *testing.T, b backend, s *Store, rdb *redis.Client, l Lease) string {
				b.expire(t, rdb, s.leaseKey(l.Key), b.shortTTL())
				other := acquire(t, s, l.Key, time.Minute)
				if ok, err := s.Fill(context.Background(), other, []byte("theirs"), time.Minute, Announce{}); err != nil || !ok {
					t.Fatalf("Fill by the new holder = %v, %v; want true", ok, err)
				}
				return "theirs"
			}},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		rdb := redistest.Client(t, b.Addr)
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				s := b.store(t, "ns"+strconv.Itoa(i))
				ttl := time.Minute
				if tc.expires {
					ttl = b.shortTTL()
				}
				l := acquire(t, s, "k", ttl)
				want := tc.lose(t, b, s, rdb, l)
				ok, err := s.Fill(ctx, l, []byte("loaded"), time.Minute, Announce{})
				if err != nil || ok != tc.wantOK {
					t.Fatalf("Fill = %v, %v; want %v", ok, err, tc.wantOK)
				}
				v, err := s.Get(ctx, "k")
				switch {
				case want == "" && !errors.Is(err, ErrMiss):
					t.Fatalf("Get after a lost Fill = %q, %v; want ErrMiss", v, err)
				case want != "" && (err != nil || string(v) != want):
					t.Fatalf("Get after Fill = %q, %v; want %q", v, err, want)
				}
			})
		}
	})
}

// TestWrongToken: Fill and Release with a token that is not the lease's do
// nothing: no write, the lease stays with its holder, no wake.
func TestWrongToken(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		holder := acquire(t, s, "k", time.Minute)
		otherKey := acquire(t, s, "k2", time.Minute)
		wait(t, s, "k", time.Minute) // a waiter, so a wrongful release would wake
		sub := b.subscribe(t, "wake")
		wake := Announce{Channel: "wake", Messages: [][]byte{[]byte("w")}}

		for _, forged := range []Lease{
			{Key: "k", Token: "forged"},
			{Key: "k", Token: ""},
			{Key: "k", Token: otherKey.Token}, // a real token, of another key
			{Key: "k", Token: strings.ToLower(holder.Token)},
		} {
			if forged.Token == holder.Token {
				continue
			}
			got := sub.collect(nil, func() {
				if ok, err := s.Fill(ctx, forged, []byte("forged"), time.Minute, wake); err != nil || ok {
					t.Errorf("Fill with token %q = %v, %v; want false", forged.Token, ok, err)
				}
				if err := s.Release(ctx, forged, wake); err != nil {
					t.Errorf("Release with token %q: %v", forged.Token, err)
				}
			}, nil)
			if len(got) != 0 {
				t.Errorf("token %q: published %q, want nothing", forged.Token, got)
			}
			if _, err := s.Get(ctx, "k"); !errors.Is(err, ErrMiss) {
				t.Errorf("token %q: Get = %v, want ErrMiss: nothing written", forged.Token, err)
			}
			if tok, err := rdb.Get(ctx, s.leaseKey("k")).Result(); err != nil || tok != holder.Token {
				t.Errorf("token %q: lease holds %q, %v; want the holder's token", forged.Token, tok, err)
			}
			if n, _ := rdb.Exists(ctx, s.waitersKey("k")).Result(); n != 1 {
				t.Errorf("token %q: the waiters mark is gone", forged.Token)
			}
		}
		// The holder still can.
		if ok, err := s.Fill(ctx, holder, []byte("v"), time.Minute, Announce{}); err != nil || !ok {
			t.Fatalf("Fill by the holder = %v, %v; want true", ok, err)
		}
	})
}

// TestWake: Fill and Release publish their wake messages once, after the
// lease ended, and only when someone waited.
func TestWake(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		fill   bool // Fill, else Release
		waited bool
	}{
		{"fill, waited", true, true},
		{"fill, nobody waited", true, false},
		{"release, waited", false, true},
		{"release, nobody waited", false, false},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		rdb := redistest.Client(t, b.Addr)
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ch := "wake" + strconv.Itoa(i)
				s := b.store(t, "ns"+strconv.Itoa(i))
				sub := b.subscribe(t, ch)
				l := acquire(t, s, "k", time.Minute)
				if tc.waited {
					wait(t, s, "k", time.Minute)
					wait(t, s, "k", time.Minute) // two waiters still wake once
				}
				wake := Announce{Channel: ch, Messages: [][]byte{[]byte("w1"), []byte("w2")}}
				check := func(payload string) {
					if n, err := rdb.Exists(ctx, s.leaseKey("k")).Result(); err != nil || n != 0 {
						t.Errorf("wake %q arrived while the lease still exists (%v)", payload, err)
					}
					if v, err := rdb.Get(ctx, s.Key("k")).Result(); tc.fill && (err != nil || v != "v") {
						t.Errorf("wake %q arrived before the value: %q, %v", payload, v, err)
					}
				}
				got := sub.collect(nil, func() {
					if tc.fill {
						if ok, err := s.Fill(ctx, l, []byte("v"), time.Minute, wake); err != nil || !ok {
							t.Errorf("Fill = %v, %v", ok, err)
						}
					} else if err := s.Release(ctx, l, wake); err != nil {
						t.Error(err)
					}
				}, check)
				var want []string
				if tc.waited {
					want = []string{"w1", "w2"}
				}
				if strings.Join(got, "|") != strings.Join(want, "|") {
					t.Fatalf("published %q, want %q", got, want)
				}
				if n, _ := rdb.Exists(ctx, s.leaseKey("k"), s.waitersKey("k")).Result(); n != 0 {
					t.Fatalf("%d of the lease and waiters keys survived", n)
				}
				next, err := s.GetOrLease(ctx, "k", time.Minute)
				wantState := map[bool]LeaseState{true: Found, false: Acquired}[tc.fill]
				if err != nil || next.State != wantState {
					t.Fatalf("GetOrLease afterwards = %+v, %v; want state %d", next, err, wantState)
				}
			})
		}
	})
}

// TestLeaseExpiry: a lease whose holder died runs out, and the next caller
// takes it over.
func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ttl := b.shortTTL()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		dead := acquire(t, s, "k", ttl)
		if r := wait(t, s, "k", ttl); r.Remaining > ttl {
			t.Fatalf("Remaining = %v, more than the lease's ttl %v", r.Remaining, ttl)
		}
		b.expire(t, rdb, s.leaseKey("k"), ttl)
		next := acquire(t, s, "k", time.Minute)
		if next.Token == dead.Token {
			t.Fatal("the new holder got the dead holder's token")
		}
	})
}
