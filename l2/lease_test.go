package l2

import (
	"bytes"
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
	r, err := s.GetOrLease(context.Background(), k, ttl, time.Now())
	if err != nil || r.State != Acquired {
		t.Fatalf("GetOrLease(%q) = %+v, %v; want Acquired", k, r, err)
	}
	return r.Lease
}

// wait registers a waiter for k's lease and fails the test unless another
// holds it.
func wait(t *testing.T, s *Store, k string, ttl time.Duration) LeaseResult {
	t.Helper()
	r, err := s.GetOrLease(context.Background(), k, ttl, time.Now())
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

		first, err := s.GetOrLease(ctx, "k", ttl, time.Now())
		if err != nil || first.State != Acquired || first.Lease.Key != "k" || first.Lease.Token == "" || first.Value != nil {
			t.Fatalf("first GetOrLease = %+v, %v; want Acquired with a token for k", first, err)
		}
		if tok, err := rdb.Get(ctx, s.leaseKey("k")).Result(); err != nil || tok != first.Lease.Token {
			t.Fatalf("lease key holds %q, %v; want the token", tok, err)
		}
		if pttl, _ := rdb.PTTL(ctx, s.leaseKey("k")).Result(); pttl <= 0 || pttl > ttl {
			t.Fatalf("lease PTTL = %v, want in (0, %v]", pttl, ttl)
		}

		second, err := s.GetOrLease(ctx, "k", ttl, time.Now())
		if err != nil || second.State != Held || second.Remaining <= 0 || second.Remaining > ttl || second.Lease != (Lease{}) {
			t.Fatalf("second GetOrLease = %+v, %v; want Held with Remaining in (0, %v]", second, err, ttl)
		}

		if ok, err := s.Fill(ctx, first.Lease, []byte("v"), time.Hour, Announce{}); err != nil || !ok {
			t.Fatalf("Fill by the holder = %v, %v; want true", ok, err)
		}
		third, err := s.GetOrLease(ctx, "k", ttl, time.Now())
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
		r, err := s.GetOrLease(ctx, "k", time.Minute, time.Now())
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

// TestWrongToken: Fill, Release and MarkUncacheable with a token that is not
// the lease's do nothing: no write, the lease stays with its holder, no
// wake.
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
			{Key: "k", Token: uncacheableMarker},
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
				if err := s.MarkUncacheable(ctx, forged, time.Minute, wake); err != nil {
					t.Errorf("MarkUncacheable with token %q: %v", forged.Token, err)
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
		end    string // how the holder ends the lease: fill, release or mark (MarkUncacheable)
		waited bool
	}{
		{"fill, waited", "fill", true},
		{"fill, nobody waited", "fill", false},
		{"release, waited", "release", true},
		{"release, nobody waited", "release", false},
		{"mark uncacheable, waited", "mark", true},
		{"mark uncacheable, nobody waited", "mark", false},
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
				// What the lease key holds once the lease ended: nothing, or
				// the marker.
				wantLease := map[string]string{"mark": uncacheableMarker}[tc.end]
				check := func(payload string) {
					if tok, err := rdb.Get(ctx, s.leaseKey("k")).Result(); tok != wantLease || (wantLease == "") != errors.Is(err, redis.Nil) {
						t.Errorf("wake %q arrived while the lease key holds %q, %v; want %q", payload, tok, err, wantLease)
					}
					if v, err := rdb.Get(ctx, s.Key("k")).Result(); tc.end == "fill" && (err != nil || v != "v") {
						t.Errorf("wake %q arrived before the value: %q, %v", payload, v, err)
					}
				}
				got := sub.collect(nil, func() {
					switch tc.end {
					case "fill":
						if ok, err := s.Fill(ctx, l, []byte("v"), time.Minute, wake); err != nil || !ok {
							t.Errorf("Fill = %v, %v", ok, err)
						}
					case "release":
						if err := s.Release(ctx, l, wake); err != nil {
							t.Error(err)
						}
					case "mark":
						if err := s.MarkUncacheable(ctx, l, time.Minute, wake); err != nil {
							t.Error(err)
						}
					}
				}, check)
				var want []string
				if tc.waited {
					want = []string{"w1", "w2"}
				}
				if strings.Join(got, "|") != strings.Join(want, "|") {
					t.Fatalf("published %q, want %q", got, want)
				}
				if n, _ := rdb.Exists(ctx, s.waitersKey("k")).Result(); n != 0 {
					t.Fatal("the waiters key survived")
				}
				if tok, _ := rdb.Get(ctx, s.leaseKey("k")).Result(); tok != wantLease {
					t.Fatalf("lease key holds %q, want %q", tok, wantLease)
				}
				next, err := s.GetOrLease(ctx, "k", time.Minute, time.Now())
				wantState := map[string]LeaseState{"fill": Found, "release": Acquired, "mark": Uncacheable}[tc.end]
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

// envelope returns the envelope bytes of a value with the given logical
// expiry.
func envelope(expiry time.Time) []byte {
	return Envelope{Expiry: expiry, Payload: []byte(`"v"`)}.AppendBinary(nil)
}

// withByte returns a copy of b with b[i] set to c.
func withByte(b []byte, i int, c byte) []byte {
	b = bytes.Clone(b)
	b[i] = c
	return b
}

// TestGetOrLeaseExpiry: GetOrLease reads the logical expiry in the value's
// envelope. A value past it counts as absent (the lease is taken, or is
// held, or the key is uncacheable) and comes back as Stale; a live one, or
// bytes that are not an envelope, are Found.
func TestGetOrLeaseExpiry(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_700_000_000_000)
	ms := func(d time.Duration) uint64 { return uint64(now.Add(d).UnixMilli()) }
	cases := []struct {
		name      string
		value     []byte // in Redis before the call; nil: none
		lease     string // in the lease key before the call: "", another's token, the marker
		want      LeaseState
		wantStale bool // value comes back as Stale
	}{
		{name: "live", value: envelope(now.Add(time.Second)), want: Found},
		{name: "a millisecond from expiry", value: envelope(now.Add(time.Millisecond)), want: Found},
		{name: "at expiry", value: envelope(now), want: Acquired, wantStale: true},
		{name: "expired", value: envelope(now.Add(-time.Hour)), want: Acquired, wantStale: true},
		{name: "expired, lease held", value: envelope(now.Add(-time.Second)), lease: "other", want: Held, wantStale: true},
		{name: "expired, uncacheable", value: envelope(now.Add(-time.Second)), lease: uncacheableMarker, want: Uncacheable, wantStale: true},
		{name: "live, lease held", value: envelope(now.Add(time.Second)), lease: "other", want: Found},
		{name: "live, uncacheable", value: envelope(now.Add(time.Second)), lease: uncacheableMarker, want: Found},
		{name: "version 1, expired", value: header(0xE7, 1, 0, ms(-time.Second), 0, []byte("x")), want: Acquired, wantStale: true},
		{name: "version 1, live", value: header(0xE7, 1, 0, ms(time.Second), 0, []byte("x")), want: Found},
		{name: "negative, expired", value: Envelope{Negative: true, Expiry: now}.AppendBinary(nil), want: Acquired, wantStale: true},
		{name: "refresh point passed, live", value: Envelope{Expiry: now.Add(time.Second), Fresh: now.Add(-time.Second)}.AppendBinary(nil), want: Found},
		{name: "latest expiry", value: header(0xE7, 2, 0, 1<<62, 0, nil), want: Found},
		{name: "expiry field all ones", value: header(0xE7, 2, 0, ^uint64(0), 0, nil), want: Found},
		// Bytes that are not an envelope are Found, for the caller to
		// decode, find corrupt and delete.
		{name: "not an envelope", value: []byte("v"), want: Found},
		{name: "empty", value: []byte{}, want: Found},
		{name: "10 bytes of an expired envelope", value: envelope(now.Add(-time.Second))[:10], want: Found},
		{name: "11 bytes of an expired envelope", value: envelope(now.Add(-time.Second))[:11], want: Acquired, wantStale: true},
		{name: "expired, wrong magic", value: withByte(envelope(now.Add(-time.Second)), 0, 0xE6), want: Found},
		{name: "no value", want: Acquired},
		{name: "no value, lease held", lease: "other", want: Held},
		{name: "no value, uncacheable", lease: uncacheableMarker, want: Uncacheable},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				k := strconv.Itoa(i)
				if tc.value != nil {
					if err := rdb.Set(ctx, s.Key(k), tc.value, time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
				}
				if tc.lease != "" {
					if err := rdb.Set(ctx, s.leaseKey(k), tc.lease, time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
				}
				r, err := s.GetOrLease(ctx, k, time.Minute, now)
				if err != nil || r.State != tc.want {
					t.Fatalf("GetOrLease = %+v, %v; want state %d", r, err, tc.want)
				}
				if tc.want == Found && !bytes.Equal(r.Value, tc.value) {
					t.Fatalf("Value = %x, want %x", r.Value, tc.value)
				}
				if wantStale := map[bool][]byte{true: tc.value}[tc.wantStale]; !bytes.Equal(r.Stale, wantStale) || (r.Stale == nil) != (wantStale == nil) {
					t.Fatalf("Stale = %x, want %x", r.Stale, wantStale)
				}
				wantLease := tc.lease
				if tc.want == Acquired {
					wantLease = r.Lease.Token
				}
				if tok, _ := rdb.Get(ctx, s.leaseKey(k)).Result(); tok != wantLease {
					t.Fatalf("lease key holds %q, want %q", tok, wantLease)
				}
				if n, _ := rdb.Exists(ctx, s.waitersKey(k)).Result(); (n == 1) != (tc.want == Held) {
					t.Fatalf("waiters key exists: %v; want it only with Held", n == 1)
				}
				// GetOrLease reads; it leaves even an expired value alone.
				if v, err := rdb.Get(ctx, s.Key(k)).Bytes(); tc.value != nil && (err != nil || !bytes.Equal(v, tc.value)) {
					t.Fatalf("value after GetOrLease = %x, %v; want it unchanged", v, err)
				}
			})
		}
	})
}

// TestUncacheable: once a holder marks its key uncacheable, GetOrLease
// reports Uncacheable (to every node, without making it wait) until a Set
// or Delete of the key or the marker's TTL ends it; the holder can no
// longer Fill or Release.
func TestUncacheable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		expires bool // the marker gets a short TTL, which end lets run out
		// end runs after the marker is checked; nil for nothing.
		end  func(t *testing.T, b backend, s *Store, rdb *redis.Client)
		want LeaseState // of GetOrLease after end
	}{
		{name: "nothing ends it", want: Uncacheable},
		{name: "set", want: Found, end: func(t *testing.T, _ backend, s *Store, _ *redis.Client) {
			if err := s.Set(context.Background(), "k", []byte("v"), time.Minute, Announce{}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "delete", want: Acquired, end: func(t *testing.T, _ backend, s *Store, _ *redis.Client) {
			if err := s.Delete(context.Background(), []string{"k"}, Announce{}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "marker expires", expires: true, want: Acquired, end: func(t *testing.T, b backend, s *Store, rdb *redis.Client) {
			b.expire(t, rdb, s.leaseKey("k"), b.shortTTL())
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
				l := acquire(t, s, "k", time.Minute)
				if err := s.MarkUncacheable(ctx, l, ttl, Announce{}); err != nil {
					t.Fatal(err)
				}
				if pttl, _ := rdb.PTTL(ctx, s.leaseKey("k")).Result(); pttl <= 0 || pttl > ttl {
					t.Fatalf("marker PTTL = %v, want in (0, %v]", pttl, ttl)
				}
				for range 2 { // every node is told, none waits
					if r, err := s.GetOrLease(ctx, "k", time.Minute, time.Now()); err != nil || r.State != Uncacheable {
						t.Fatalf("GetOrLease after MarkUncacheable = %+v, %v; want Uncacheable", r, err)
					}
				}
				if n, _ := rdb.Exists(ctx, s.waitersKey("k")).Result(); n != 0 {
					t.Fatal("GetOrLease of an uncacheable key registered a waiter")
				}
				// The marker is no token: not the holder's, not its own.
				for _, l := range []Lease{l, {Key: "k", Token: uncacheableMarker}} {
					if ok, err := s.Fill(ctx, l, []byte("loaded"), time.Minute, Announce{}); err != nil || ok {
						t.Fatalf("Fill with token %q after MarkUncacheable = %v, %v; want false", l.Token, ok, err)
					}
					if err := s.Release(ctx, l, Announce{}); err != nil {
						t.Fatal(err)
					}
					if err := s.MarkUncacheable(ctx, l, time.Hour, Announce{}); err != nil {
						t.Fatal(err)
					}
				}
				if tok, _ := rdb.Get(ctx, s.leaseKey("k")).Result(); tok != uncacheableMarker {
					t.Fatalf("lease key holds %q, want the marker", tok)
				}
				if pttl, _ := rdb.PTTL(ctx, s.leaseKey("k")).Result(); pttl > ttl {
					t.Fatalf("marker PTTL = %v after a second MarkUncacheable, want it not renewed (<= %v)", pttl, ttl)
				}
				if _, err := s.Get(ctx, "k"); !errors.Is(err, ErrMiss) {
					t.Fatalf("Get = %v, want ErrMiss: nothing written", err)
				}
				if tc.end != nil {
					tc.end(t, b, s, rdb)
				}
				if r, err := s.GetOrLease(ctx, "k", time.Minute, time.Now()); err != nil || r.State != tc.want {
					t.Fatalf("GetOrLease at the end = %+v, %v; want state %d", r, err, tc.want)
				}
			})
		}
	})
}

// TestRefreshLease: RefreshLease takes the lease for a refresh-ahead load
// of the value the caller saw, returns the value if it was replaced, and
// never registers a waiter.
func TestRefreshLease(t *testing.T) {
	t.Parallel()
	seen := time.UnixMilli(1_700_000_000_000)
	cases := []struct {
		name  string
		value []byte // in Redis; nil: none
		lease string // in the lease key: "", another's token, the marker
		want  LeaseState
	}{
		{name: "same value", value: envelope(seen), want: Acquired},
		{name: "same value, lease held", value: envelope(seen), lease: "other", want: Held},
		{name: "same value, uncacheable", value: envelope(seen), lease: uncacheableMarker, want: Uncacheable},
		{name: "same value, refresh point set", value: Envelope{Expiry: seen, Fresh: seen.Add(-time.Second)}.AppendBinary(nil), want: Acquired},
		{name: "same expiry, version 1", value: header(0xE7, 1, 0, uint64(seen.UnixMilli()), 0, nil), want: Acquired},
		{name: "no value", want: Acquired},
		{name: "replaced", value: envelope(seen.Add(time.Millisecond)), want: Found},
		{name: "replaced by an earlier expiry", value: envelope(seen.Add(-time.Hour)), want: Found},
		{name: "replaced, lease held", value: envelope(seen.Add(time.Second)), lease: "other", want: Found},
		{name: "not an envelope", value: []byte("v"), want: Found},
		{name: "same expiry bytes, wrong magic", value: withByte(envelope(seen), 0, 0xE6), want: Found},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s, rdb := b.store(t, "ns"), redistest.Client(t, b.Addr)
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				k := strconv.Itoa(i)
				if tc.value != nil {
					if err := rdb.Set(ctx, s.Key(k), tc.value, time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
				}
				if tc.lease != "" {
					if err := rdb.Set(ctx, s.leaseKey(k), tc.lease, time.Minute).Err(); err != nil {
						t.Fatal(err)
					}
				}
				r, err := s.RefreshLease(ctx, k, seen, time.Minute)
				if err != nil || r.State != tc.want || r.Stale != nil {
					t.Fatalf("RefreshLease = %+v, %v; want state %d, no Stale", r, err, tc.want)
				}
				wantLease := tc.lease
				switch tc.want {
				case Found:
					if !bytes.Equal(r.Value, tc.value) {
						t.Fatalf("Value = %x, want %x", r.Value, tc.value)
					}
				case Acquired:
					if r.Lease.Key != k || r.Lease.Token == "" {
						t.Fatalf("Lease = %+v, want a token for %q", r.Lease, k)
					}
					wantLease = r.Lease.Token
				case Held:
					if r.Remaining <= 0 || r.Remaining > time.Minute {
						t.Fatalf("Remaining = %v, want in (0, 1m]", r.Remaining)
					}
				}
				if tok, _ := rdb.Get(ctx, s.leaseKey(k)).Result(); tok != wantLease {
					t.Fatalf("lease key holds %q, want %q", tok, wantLease)
				}
				if n, _ := rdb.Exists(ctx, s.waitersKey(k)).Result(); n != 0 {
					t.Fatal("RefreshLease registered a waiter")
				}
			})
		}
	})
}

// TestRefreshLeaseFill: the refresh's Fill is the compare-and-set of any
// holder: a write of the key during the refresh makes it fail, so the
// refresh cannot overwrite a newer value.
func TestRefreshLeaseFill(t *testing.T) {
	t.Parallel()
	seen := time.Now().Add(time.Hour)
	cases := []struct {
		name   string
		during func(t *testing.T, s *Store) // runs between RefreshLease and Fill
		wantOK bool
		want   []byte // in Redis afterwards; nil: none
	}{
		{name: "nothing happened", wantOK: true, want: []byte("refreshed"),
			during: func(*testing.T, *Store) {}},
		{name: "set during the refresh", want: []byte("written"),
			during: func(t *testing.T, s *Store) {
				if err := s.Set(context.Background(), "k", []byte("written"), time.Minute, Announce{}); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "delete during the refresh",
			during: func(t *testing.T, s *Store) {
				if err := s.Delete(context.Background(), []string{"k"}, Announce{}); err != nil {
					t.Fatal(err)
				}
			}},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				s := b.store(t, "ns"+strconv.Itoa(i))
				if err := s.Set(ctx, "k", envelope(seen), time.Hour, Announce{}); err != nil {
					t.Fatal(err)
				}
				r, err := s.RefreshLease(ctx, "k", seen, time.Minute)
				if err != nil || r.State != Acquired {
					t.Fatalf("RefreshLease = %+v, %v; want Acquired", r, err)
				}
				tc.during(t, s)
				if ok, err := s.Fill(ctx, r.Lease, []byte("refreshed"), time.Minute, Announce{}); err != nil || ok != tc.wantOK {
					t.Fatalf("Fill = %v, %v; want %v", ok, err, tc.wantOK)
				}
				v, err := s.Get(ctx, "k")
				switch {
				case tc.want == nil && !errors.Is(err, ErrMiss):
					t.Fatalf("Get = %q, %v; want ErrMiss", v, err)
				case tc.want != nil && (err != nil || !bytes.Equal(v, tc.want)):
					t.Fatalf("Get = %q, %v; want %q", v, err, tc.want)
				}
			})
		}
	})
}
