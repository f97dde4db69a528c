package pubsub

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// waitTimeout bounds every wait for something the bus does asynchronously.
const waitTimeout = 10 * time.Second

// startBus starts a bus on its own client of addr, closed when t ends.
func startBus(t *testing.T, addr string, opts *Options) *Bus {
	t.Helper()
	rdb := redistest.Client(t, addr)
	b, err := New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() {
			b.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Error("Bus.Close hung")
		}
	})
	return b
}

// healthyBus is startBus, then waits until the bus is healthy.
func healthyBus(t *testing.T, addr string, opts *Options) *Bus {
	t.Helper()
	b := startBus(t, addr, opts)
	waitHealthy(t, b)
	return b
}

func waitHealthy(t *testing.T, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.WaitHealthy(ctx); err != nil {
		t.Fatalf("bus never became healthy: %v", err)
	}
	if !b.Healthy() {
		t.Fatal("WaitHealthy returned but Healthy() is false")
	}
}

// publish publishes each payload on the bus's channel.
func publish(t *testing.T, rdb *redis.Client, b *Bus, payloads ...[]byte) {
	t.Helper()
	for _, p := range payloads {
		if err := rdb.Publish(context.Background(), b.Channel(), p).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// encode encodes m, which must fit one message or more.
func encode(t *testing.T, m Message) [][]byte {
	t.Helper()
	out, err := Encode(m)
	if err != nil || len(out) == 0 {
		t.Fatalf("Encode(%+v) = %d messages, %v", m, len(out), err)
	}
	return out
}

// event is one call of a Handler method.
type event struct {
	op      string // "invalidate", "wake", "reset", "deliver" or "purge"
	keys    []string
	healthy bool // what the bus's Healthy() said during the call
}

// recorder is a Handler that records its calls. Deliver and Purge call
// deliver and purge when set, and succeed otherwise.
type recorder struct {
	bus     *Bus
	events  chan event
	deliver func(ctx context.Context, keys []string) error
	purge   func(ctx context.Context) error
}

func newRecorder(b *Bus) *recorder {
	return &recorder{bus: b, events: make(chan event, 1000)}
}

func (r *recorder) Invalidate(keys []string) {
	r.events <- event{"invalidate", slices.Clone(keys), r.bus.Healthy()}
}
func (r *recorder) Wake(keys []string) {
	r.events <- event{"wake", slices.Clone(keys), r.bus.Healthy()}
}
func (r *recorder) Reset() { r.events <- event{"reset", nil, r.bus.Healthy()} }
func (r *recorder) Deliver(ctx context.Context, keys []string) error {
	r.events <- event{"deliver", slices.Clone(keys), r.bus.Healthy()}
	if r.deliver != nil {
		return r.deliver(ctx, keys)
	}
	return nil
}
func (r *recorder) Purge(ctx context.Context) error {
	r.events <- event{"purge", nil, r.bus.Healthy()}
	if r.purge != nil {
		return r.purge(ctx)
	}
	return nil
}

// next returns the next call.
func (r *recorder) next(t *testing.T) event {
	t.Helper()
	select {
	case e := <-r.events:
		return e
	case <-time.After(waitTimeout):
		t.Fatal("handler not called")
		return event{}
	}
}

// pending returns the calls already recorded, without waiting.
func (r *recorder) pending() []event {
	var es []event
	for {
		select {
		case e := <-r.events:
			es = append(es, e)
		default:
			return es
		}
	}
}

// flushKey is the key of the messages flush publishes.
const flushKey = "\x00flush"

// flush publishes, from a node of its own, an invalidation of flushKey in
// each namespace, and returns, for each recorder, the calls it got before
// that invalidation. The bus runs handlers one message at a time, in the
// order Redis delivered them, so these are all the calls caused by what was
// published before flush.
func flush(t *testing.T, rdb *redis.Client, b *Bus, recs map[*recorder]string) map[*recorder][]event {
	t.Helper()
	seen := make(map[string]bool)
	for _, ns := range recs {
		if !seen[ns] {
			seen[ns] = true
			publish(t, rdb, b, encode(t, Message{Kind: Invalidate, NodeID: "flusher", Namespace: ns, Keys: []string{flushKey}})...)
		}
	}
	got := make(map[*recorder][]event)
	for r := range recs {
		for {
			e := r.next(t)
			if e.op == "invalidate" && slices.Equal(e.keys, []string{flushKey}) {
				break
			}
			got[r] = append(got[r], e)
		}
	}
	return got
}

// logRecord is a log record with the bus's health when it was logged.
type logRecord struct {
	msg     string
	healthy bool
}

// logCapture is a slog.Handler that sends each record's message, with the
// bus's Healthy() at that moment, on a channel.
type logCapture struct {
	bus     atomic.Pointer[Bus]
	records chan logRecord
}

func newLogCapture() *logCapture { return &logCapture{records: make(chan logRecord, 100)} }

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	healthy := false
	if b := c.bus.Load(); b != nil {
		healthy = b.Healthy()
	}
	select {
	case c.records <- logRecord{r.Message, healthy}:
	default:
	}
	return nil
}
func (c *logCapture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *logCapture) WithGroup(string) slog.Handler      { return c }

// waitLog waits for a record whose message starts with prefix.
func (c *logCapture) waitLog(t *testing.T, prefix string) logRecord {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case r := <-c.records:
			if strings.HasPrefix(r.msg, prefix) {
				return r
			}
		case <-timeout:
			t.Fatalf("no %q log record", prefix)
		}
	}
}

// waitUnhealthy polls until b reports unhealthy. Use it only while the bus
// cannot recover, so that the state cannot be missed.
func waitUnhealthy(t *testing.T, b *Bus) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for b.Healthy() {
		if time.Now().After(deadline) {
			t.Fatal("bus still healthy")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// proxy is a TCP proxy in front of a Redis server that a test can cut or
// freeze, to kill the bus's connection or make it silently dead.
type proxy struct {
	l      net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]bool // both sides of every proxied connection
	refuse bool              // accepted connections are closed at once
	open   chan struct{}     // closed while bytes may flow
	closed bool

	wg sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target, conns: make(map[net.Conn]bool), open: make(chan struct{})}
	close(p.open)
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse || p.closed
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(c, up) })
		p.wg.Go(func() { p.pump(up, c) })
	}
}

// pump copies src to dst, holding the bytes while the proxy is frozen.
func (p *proxy) pump(src, dst net.Conn) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			open := p.open
			p.mu.Unlock()
			<-open
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes every proxied connection; while refuse is set, new ones are
// closed as soon as they are accepted.
func (p *proxy) cut(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	conns := p.conns
	p.conns = make(map[net.Conn]bool)
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// freeze stops forwarding bytes in both directions, on every connection
// open or to come, without closing any: a silently dead network.
func (p *proxy) freeze() {
	p.mu.Lock()
	p.open = make(chan struct{})
	p.mu.Unlock()
}

// thaw undoes freeze and cut's refusal.
func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = false
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.l.Close()
	p.thaw()
	p.cut(true)
	p.wg.Wait()
}
