package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

func TestNewOptions(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t, redistest.RefusedAddr(t)) // the buses only try to subscribe
	for _, tc := range []struct {
		name    string
		rdb     redis.UniversalClient
		opts    *Options
		wantErr bool
		check   func(t *testing.T, b *Bus)
	}{
		{name: "defaults", rdb: rdb, opts: nil, check: func(t *testing.T, b *Bus) {
			if b.Channel() != DefaultChannel || len(b.NodeID()) != 16 || b.o.HealthInterval != DefaultHealthInterval {
				t.Fatalf("Channel, NodeID, interval = %q, %q, %v; want %q, 16 characters, %v",
					b.Channel(), b.NodeID(), b.o.HealthInterval, DefaultChannel, DefaultHealthInterval)
			}
		}},
		{name: "explicit", rdb: rdb, opts: &Options{Channel: "ch", NodeID: strings.Repeat("n", MaxNodeIDBytes), HealthInterval: time.Minute},
			check: func(t *testing.T, b *Bus) {
				if b.Channel() != "ch" || b.NodeID() != strings.Repeat("n", MaxNodeIDBytes) || b.o.HealthInterval != time.Minute {
					t.Fatalf("Channel, NodeID, interval = %q, %q, %v", b.Channel(), b.NodeID(), b.o.HealthInterval)
				}
			}},
		{name: "nil client", rdb: nil, wantErr: true},
		{name: "node ID too long", rdb: rdb, opts: &Options{NodeID: strings.Repeat("n", MaxNodeIDBytes+1)}, wantErr: true},
		{name: "negative HealthInterval", rdb: rdb, opts: &Options{HealthInterval: -time.Second}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := New(tc.rdb, tc.opts)
			if tc.wantErr {
				if err == nil {
					b.Close()
					t.Fatal("New succeeded, want an error")
				}
				if !strings.HasPrefix(err.Error(), "pubsub: ") {
					t.Fatalf("error %q lacks the pubsub: prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			tc.check(t, b)
		})
	}

	t.Run("node IDs differ", func(t *testing.T) {
		t.Parallel()
		ids := make(map[string]bool)
		for range 10 {
			b, err := New(rdb, nil)
			if err != nil {
				t.Fatal(err)
			}
			b.Close()
			if ids[b.NodeID()] {
				t.Fatalf("node ID %q drawn twice", b.NodeID())
			}
			ids[b.NodeID()] = true
		}
	})
}

func TestBusEncode(t *testing.T) {
	t.Parallel()
	b, err := New(redistest.Client(t, redistest.RefusedAddr(t)), &Options{NodeID: "me"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out, err := b.Encode(Wake, "ns", []string{"a", "b"})
	if err != nil || len(out) != 1 {
		t.Fatalf("Encode = %d messages, %v", len(out), err)
	}
	m, err := Decode(out[0])
	if want := (Message{Kind: Wake, NodeID: "me", Namespace: "ns", Keys: []string{"a", "b"}}); err != nil || !reflect.DeepEqual(m, want) {
		t.Fatalf("Decode(bus.Encode) = %+v, %v; want %+v", m, err, want)
	}
}

func TestWaitHealthy(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		b := startBus(t, be.Addr, nil)
		waitHealthy(t, b)
		waitHealthy(t, b) // again, at once
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if b.Healthy() {
			t.Fatal("Healthy() after Close")
		}
		if err := b.WaitHealthy(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitHealthy after Close = %v, want ErrClosed", err)
		}
	})
}

// TestUnreachable: a bus whose server cannot be reached stays unhealthy,
// WaitHealthy honours its context and ends with Close, and Close does not
// hang on the reconnection attempts.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	b := startBus(t, redistest.RefusedAddr(t), &Options{HealthInterval: 50 * time.Millisecond})

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := b.WaitHealthy(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitHealthy = %v, want context.DeadlineExceeded", err)
	}
	if b.Healthy() {
		t.Fatal("Healthy() with no server")
	}

	waiting := make(chan error, 1)
	go func() { waiting <- b.WaitHealthy(context.Background()) }()
	closed := make(chan struct{})
	go func() {
		b.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(waitTimeout):
		t.Fatal("Close hung")
	}
	select {
	case err := <-waiting:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitHealthy blocked across Close returned %v, want ErrClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("WaitHealthy still blocked after Close")
	}
}

// TestDelivery: a message from another node reaches every handler of its
// namespace, once, and no other; a node ignores its own messages.
func TestDelivery(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		rdb := redistest.Client(t, be.Addr)
		recv := healthyBus(t, be.Addr, &Options{NodeID: "receiver"})
		send := healthyBus(t, be.Addr, &Options{NodeID: "sender"})
		p1, p2, q, own := newRecorder(recv), newRecorder(recv), newRecorder(recv), newRecorder(send)
		recv.Register("p", p1)
		recv.Register("p", p2)
		recv.Register("q", q)
		send.Register("p", own)
		recs := map[*recorder]string{p1: "p", p2: "p", q: "q", own: "p"}
		for _, r := range []*recorder{p1, p2, q, own} {
			r.pending() // a Reset from the first subscription, if registered in time
		}

		inv := func(keys ...string) []event { return []event{{"invalidate", keys, true}} }
		wake := func(keys ...string) []event { return []event{{"wake", keys, true}} }
		big := make([]string, 40)
		for i := range big {
			big[i] = fmt.Sprintf("%d-%s", i, strings.Repeat("k", MaxMessageBytes/20))
		}
		var bigEvents []event
		for _, part := range encode(t, Message{Kind: Invalidate, NodeID: "sender", Namespace: "p", Keys: big}) {
			m, _ := Decode(part)
			bigEvents = append(bigEvents, inv(m.Keys...)...)
		}
		if len(bigEvents) < 2 {
			t.Fatalf("the large key set fits %d message, want several", len(bigEvents))
		}

		var sentBySender, published uint64
		for _, tc := range []struct {
			name string
			m    Message
			want map[*recorder][]event
		}{
			{"invalidate p", Message{Invalidate, "sender", "p", []string{"k1", "k2"}},
				map[*recorder][]event{p1: inv("k1", "k2"), p2: inv("k1", "k2")}},
			{"wake p", Message{Wake, "sender", "p", []string{"k"}},
				map[*recorder][]event{p1: wake("k"), p2: wake("k")}},
			{"invalidate q", Message{Invalidate, "sender", "q", []string{"x"}},
				map[*recorder][]event{q: inv("x")}},
			{"namespace without handlers", Message{Invalidate, "sender", "r", []string{"x"}}, nil},
			{"namespace is matched exactly", Message{Invalidate, "sender", "P", []string{"x"}}, nil},
			{"from a third node", Message{Invalidate, "third", "p", []string{"k"}},
				map[*recorder][]event{p1: inv("k"), p2: inv("k"), own: inv("k")}},
			{"from the receiver itself", Message{Invalidate, "receiver", "p", []string{"k"}},
				map[*recorder][]event{own: inv("k")}},
			{"split into several messages", Message{Invalidate, "sender", "p", big},
				map[*recorder][]event{p1: bigEvents, p2: bigEvents}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				parts := encode(t, tc.m)
				if tc.m.NodeID == "sender" {
					sentBySender += uint64(len(parts))
				}
				published += uint64(len(parts)) + 2 // and a flush of p and of q
				publish(t, rdb, recv, parts...)
				got := flush(t, rdb, recv, recs)
				for r, ns := range recs {
					if !reflect.DeepEqual(got[r], tc.want[r]) {
						t.Errorf("handler of %q on %s: calls %+v, want %+v", ns, r.bus.NodeID(), got[r], tc.want[r])
					}
				}
			})
		}
		if s := send.Stats(); s.Own != sentBySender || s.Garbled != 0 || s.Gaps != 0 {
			t.Errorf("sender stats = %+v, want Own = %d, no garbled, no gaps", s, sentBySender)
		}
		// The receiver has handled the last flush message.
		if s := recv.Stats(); s.Own != 1 || s.Garbled != 0 || s.Gaps != 0 || s.Received != published {
			t.Errorf("receiver stats = %+v, want Own = 1, no garbled, no gaps, Received = %d", s, published)
		}
	})
}

// TestOwnMessages: a bus ignores what it published itself, and counts it.
func TestOwnMessages(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		rdb := redistest.Client(t, be.Addr)
		b := healthyBus(t, be.Addr, nil)
		r := newRecorder(b)
		b.Register("ns", r)
		r.pending()
		for _, kind := range []Kind{Invalidate, Wake} {
			out, err := b.Encode(kind, "ns", []string{"k"})
			if err != nil {
				t.Fatal(err)
			}
			publish(t, rdb, b, out...)
		}
		if got := flush(t, rdb, b, map[*recorder]string{r: "ns"}); len(got[r]) != 0 {
			t.Fatalf("own messages reached the handler: %+v", got[r])
		}
		if s := b.Stats(); s.Own != 2 || s.Received != 3 {
			t.Fatalf("stats = %+v, want Own = 2 and Received = 3 (with the flush)", s)
		}
	})
}

// TestGarbled: payloads that do not decode are counted and ignored, and the
// bus goes on working.
func TestGarbled(t *testing.T) {
	t.Parallel()
	garbled := [][]byte{
		[]byte(""),
		[]byte("garbage"),
		[]byte("T"),
		{'T', 2, 1, 1, 'n', 2, 'n', 's', 1, 1, 'k'},                 // version 2
		{'T', 1, 1, 1, 'n', 2, 'n', 's', 1, 1, 'k', 0},              // trailing byte
		append([]byte{'T', 1, 1}, make([]byte, MaxMessageBytes)...), // too large
	}
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		rdb := redistest.Client(t, be.Addr)
		b := healthyBus(t, be.Addr, nil)
		r := newRecorder(b)
		b.Register("ns", r)
		r.pending()
		publish(t, rdb, b, garbled...)
		if got := flush(t, rdb, b, map[*recorder]string{r: "ns"}); len(got[r]) != 0 {
			t.Fatalf("garbled messages reached the handler: %+v", got[r])
		}
		if s := b.Stats(); s.Garbled != uint64(len(garbled)) || s.Received != uint64(len(garbled))+1 {
			t.Fatalf("stats = %+v, want Garbled = %d and Received = %d", s, len(garbled), len(garbled)+1)
		}
		if !b.Healthy() {
			t.Fatal("garbled messages made the bus unhealthy")
		}
		publish(t, rdb, b, encode(t, Message{Kind: Wake, NodeID: "other", Namespace: "ns", Keys: []string{"k"}})...)
		if e := r.next(t); e.op != "wake" || !reflect.DeepEqual(e.keys, []string{"k"}) {
			t.Fatalf("after garbled messages, handler got %+v, want a wake of k", e)
		}
	})
}

func TestUnregister(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		rdb := redistest.Client(t, be.Addr)
		b := healthyBus(t, be.Addr, nil)
		kept, dropped, alone := newRecorder(b), newRecorder(b), newRecorder(b)
		b.Register("p", kept)
		unregister := b.Register("p", dropped)
		unregisterAlone := b.Register("q", alone)
		unregister()
		unregister() // idempotent
		unregisterAlone()
		for _, r := range []*recorder{kept, dropped, alone} {
			r.pending()
		}
		for _, ns := range []string{"p", "q"} {
			publish(t, rdb, b, encode(t, Message{Kind: Invalidate, NodeID: "other", Namespace: ns, Keys: []string{"k"}})...)
		}
		// flush's own messages would reach no unregistered handler either:
		// check kept, then that the others saw nothing at all.
		got := flush(t, rdb, b, map[*recorder]string{kept: "p"})
		if want := []event{{"invalidate", []string{"k"}, true}}; !reflect.DeepEqual(got[kept], want) {
			t.Fatalf("registered handler got %+v, want %+v", got[kept], want)
		}
		if es := append(dropped.pending(), alone.pending()...); len(es) != 0 {
			t.Fatalf("unregistered handlers were called: %+v", es)
		}
		// A namespace can be registered again.
		again := newRecorder(b)
		b.Register("q", again)
		if got := flush(t, rdb, b, map[*recorder]string{again: "q"}); len(got[again]) != 0 {
			t.Fatalf("re-registered handler got %+v before the flush", got[again])
		}
	})
}

// checkRecovered checks what a bus must have done to come back from a gap:
// it reset every handler twice, when it lost the subscription and when it
// regained it, both times while reporting unhealthy (so before Healthy()
// turned true), counted the gap, and delivers messages again.
func checkRecovered(t *testing.T, rdb *redis.Client, b *Bus, recs map[*recorder]string, wantGaps uint64) {
	t.Helper()
	for r, ns := range recs {
		for _, when := range []string{"lost", "regained"} {
			e := r.next(t)
			if e.op != "reset" {
				t.Fatalf("handler of %q: call %+v when the subscription was %s, want a reset", ns, e, when)
			}
			if e.healthy {
				t.Fatalf("handler of %q was reset while the bus reported healthy (subscription %s)", ns, when)
			}
		}
	}
	waitHealthy(t, b)
	for r, ns := range recs {
		if es := r.pending(); len(es) != 0 {
			t.Fatalf("handler of %q: more calls after its reset: %+v", ns, es)
		}
	}
	if s := b.Stats(); s.Gaps != wantGaps {
		t.Fatalf("Stats.Gaps = %d, want %d", s.Gaps, wantGaps)
	}
	for _, ns := range []string{"p", "q"} {
		publish(t, rdb, b, encode(t, Message{Kind: Invalidate, NodeID: "other", Namespace: ns, Keys: []string{"after"}})...)
	}
	got := flush(t, rdb, b, recs)
	for r, ns := range recs {
		if want := []event{{"invalidate", []string{"after"}, true}}; !reflect.DeepEqual(got[r], want) {
			t.Fatalf("handler of %q after the gap: calls %+v, want %+v", ns, got[r], want)
		}
	}
}

// registerThree registers handlers for namespaces p (two) and q, and drops
// the Reset of the first subscription.
func registerThree(b *Bus) map[*recorder]string {
	recs := map[*recorder]string{newRecorder(b): "p", newRecorder(b): "p", newRecorder(b): "q"}
	for r, ns := range recs {
		b.Register(ns, r)
	}
	return recs
}

func drain(recs map[*recorder]string) {
	for r := range recs {
		r.pending()
	}
}

// TestClientKill: after CLIENT KILL TYPE pubsub the bus reports unhealthy,
// resubscribes, resets every handler before reporting healthy again, and
// counts the gap. Only a real server has CLIENT KILL.
func TestClientKill(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redistest.Client(t, srv.Addr)
	logs := newLogCapture()
	b := startBus(t, srv.Addr, &Options{Logger: slogLogger(logs)})
	logs.bus.Store(b)
	recs := registerThree(b)
	waitHealthy(t, b)
	drain(recs)

	ctx := context.Background()
	for gap := uint64(1); gap <= 2; gap++ {
		n, err := rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
		if err != nil || n != 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 1 client killed", n, err)
		}
		if gap == 1 {
			// The log is rate-limited to one record per 5s: only the
			// first gap is sure to log.
			if r := logs.waitLog(t, "pubsub: subscription lost"); r.healthy {
				t.Fatal("the bus logged the lost subscription while reporting healthy")
			}
		}
		checkRecovered(t, rdb, b, recs, gap)
	}
}

func slogLogger(h *logCapture) *slog.Logger { return slog.New(h) }

// TestConnectionCut: the bus's connection is closed and the server stays
// unreachable for a while: the bus reports unhealthy for as long, then
// recovers as after CLIENT KILL. Runs on every backend through a proxy.
func TestConnectionCut(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		rdb := redistest.Client(t, be.Addr)
		p := startProxy(t, be.Addr)
		b := startBus(t, p.addr(), &Options{HealthInterval: 100 * time.Millisecond})
		recs := registerThree(b)
		waitHealthy(t, b)
		drain(recs)

		p.cut(true)
		waitUnhealthy(t, b)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := b.WaitHealthy(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitHealthy while cut off = %v, want context.DeadlineExceeded", err)
		}
		if es := b.Stats(); es.Gaps != 0 {
			t.Fatalf("Stats.Gaps = %d before the bus resubscribed", es.Gaps)
		}
		// A message published now is lost: hence the reset to come.
		publish(t, rdb, b, encode(t, Message{Kind: Invalidate, NodeID: "other", Namespace: "p", Keys: []string{"lost"}})...)
		p.thaw()
		checkRecovered(t, rdb, b, recs, 1)
	})
}

// TestSilentConnection: a connection that stops answering without being
// closed is detected by the PING health check within two intervals, and
// replaced.
func TestSilentConnection(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		rdb := redistest.Client(t, be.Addr)
		p := startProxy(t, be.Addr)
		logs := newLogCapture()
		b := startBus(t, p.addr(), &Options{HealthInterval: 100 * time.Millisecond, Logger: slogLogger(logs)})
		logs.bus.Store(b)
		recs := registerThree(b)
		waitHealthy(t, b)
		drain(recs)

		p.freeze()
		if r := logs.waitLog(t, "pubsub: subscription lost"); r.healthy {
			t.Fatal("the bus logged the silent connection while reporting healthy")
		}
		if s := b.Stats(); s.Replaced != 1 {
			t.Fatalf("Stats.Replaced = %d, want 1", s.Replaced)
		}
		waitUnhealthy(t, b)
		p.thaw()
		checkRecovered(t, rdb, b, recs, 1)
	})
}

// TestServerRestart: miniredis closed and restarted on the same port drops
// the subscription like a server restart; the bus recovers.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	mr := redistest.Mini(t).Mini
	b := startBus(t, mr.Addr(), &Options{HealthInterval: 100 * time.Millisecond})
	recs := registerThree(b)
	waitHealthy(t, b)
	drain(recs)

	mr.Close()
	waitUnhealthy(t, b)
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, redistest.Client(t, mr.Addr()), b, recs, 1)
}

// TestClose: Close is idempotent, safe from several goroutines, stops the
// bus goroutine (TestMain's leakcheck also checks), and returns promptly
// even while the connection is silently dead.
func TestClose(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		for _, tc := range []struct {
			name   string
			before func(p *proxy)
		}{
			{"healthy", func(*proxy) {}},
			{"connection frozen", (*proxy).freeze},
			{"connection cut", func(p *proxy) { p.cut(true) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := startProxy(t, be.Addr)
				b := startBus(t, p.addr(), &Options{HealthInterval: time.Minute})
				r := newRecorder(b)
				b.Register("ns", r)
				waitHealthy(t, b)
				tc.before(p)

				closed := make(chan struct{})
				go func() {
					var wg sync.WaitGroup
					for range 4 {
						wg.Go(func() {
							if err := b.Close(); err != nil {
								t.Errorf("Close = %v", err)
							}
						})
					}
					wg.Wait()
					close(closed)
				}()
				select {
				case <-closed:
				case <-time.After(waitTimeout):
					t.Fatal("Close hung")
				}
				select {
				case <-b.done:
				default:
					t.Fatal("Close returned before the bus goroutine ended")
				}
				if err := b.Close(); err != nil {
					t.Fatalf("Close after Close = %v", err)
				}
				if b.Healthy() {
					t.Fatal("Healthy() after Close")
				}
				if err := b.WaitHealthy(context.Background()); !errors.Is(err, ErrClosed) {
					t.Fatalf("WaitHealthy after Close = %v, want ErrClosed", err)
				}
			})
		}
	})
}

// TestIdleBusKeepsSubscription: a healthy subscription that hears nothing
// (no messages, no readers asking for proofs) is kept, however long
// MaxStaleness is. A pinger that waited a quarter of MaxStaleness after
// every PING would, with MaxStaleness a minute, PING every 15 s, and the
// health check would replace the "silent" connection every two intervals:
// a gap and an L1 reset each time.
func TestIdleBusKeepsSubscription(t *testing.T) {
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		b := healthyBus(t, be.Addr, &Options{MaxStaleness: time.Minute, HealthInterval: 200 * time.Millisecond})
		time.Sleep(2 * time.Second)
		if st := b.Stats(); st.Gaps != 0 || st.Replaced != 0 || st.Pings < 5 {
			t.Fatalf("an idle, healthy subscription over 10 health intervals: %+v; want no gap, no replacement, a PING per interval", st)
		}
	})
}
