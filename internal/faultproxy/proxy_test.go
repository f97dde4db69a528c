package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/poll"
	"github.com/tieredcache/tiered/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// waitTimeout bounds every wait for something that must happen. It is
// generous: a loaded 2-core machine running -race is slow, and a correct
// run never waits for it.
const waitTimeout = 5 * time.Second

// quiet is how long a test watches a socket to see that nothing arrives.
// Nothing is expected, so a longer watch only slows the test down; a
// broken proxy would deliver within microseconds.
const quiet = 100 * time.Millisecond

// backend is a TCP server that hands each connection it accepts to the
// test, or echoes it.
type backend struct {
	ln    net.Listener
	echo  bool
	conns chan net.Conn // accepted connections, unless echo

	mu    sync.Mutex // guards owned
	owned []net.Conn // every accepted connection, closed at cleanup

	wg sync.WaitGroup // the accept loop and the echo goroutines
}

func newBackend(t *testing.T, echo bool) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, echo: echo, conns: make(chan net.Conn, 16)}
	b.wg.Go(b.serve)
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.owned {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.owned = append(b.owned, c)
		b.mu.Unlock()
		if b.echo {
			b.wg.Go(func() {
				io.Copy(c, c)
				c.Close()
			})
			continue
		}
		b.conns <- c
	}
}

// next returns the next connection the backend accepted.
func (b *backend) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-b.conns:
		return c
	case <-time.After(waitTimeout):
		t.Fatal("the backend accepted no connection")
		return nil
	}
}

// newProxy returns a proxy to target, closed when t ends.
func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dial connects to addr, closed when t ends.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pair returns a client connection through p to b, and b's side of it,
// after a byte has gone each way.
func pair(t *testing.T, p *Proxy, b *backend) (client, server net.Conn) {
	t.Helper()
	client = dial(t, p.Addr())
	server = b.next(t)
	send(t, client, "h")
	expect(t, server, "h")
	send(t, server, "i")
	expect(t, client, "i")
	return client, server
}

func send(t *testing.T, c net.Conn, s string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// expect reads len(want) bytes from c and checks they are want.
func expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	got := make([]byte, len(want))
	if n, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q: got %q, %v", want, got[:n], err)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// expectQuiet checks that nothing arrives on c for a while.
func expectQuiet(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(quiet))
	var buf [64]byte
	n, err := c.Read(buf[:])
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %q, %v; want nothing until the deadline", buf[:n], err)
	}
}

// expectClosed checks that c ends (EOF or reset) with no more bytes.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	got, err := io.ReadAll(c)
	if len(got) > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %q, %v; want the connection closed", got, err)
	}
}

// waitFor polls cond until it holds. It is for counters the proxy updates
// after the event a test can see.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, waitTimeout, 2*time.Millisecond, what, cond)
}

// waitDropped waits until p has dropped n bytes in all, so that bytes sent
// before are known to be gone, not waiting in a socket buffer.
func waitDropped(t *testing.T, p *Proxy, n int64) {
	t.Helper()
	waitFor(t, "dropped bytes", func() bool { return p.Dropped() >= n })
	if got := p.Dropped(); got != n {
		t.Fatalf("Dropped() = %d, want %d", got, n)
	}
}

func TestNewRejectsEmptyTarget(t *testing.T) {
	t.Parallel()
	if p, err := New(""); err == nil {
		p.Close()
		t.Fatal("New(\"\") succeeded")
	}
}

func TestForwardEcho(t *testing.T) {
	t.Parallel()
	b := newBackend(t, true)
	p := newProxy(t, b.addr())
	c := dial(t, p.Addr())
	for _, s := range []string{"hello", "world", string(bytes.Repeat([]byte("x"), 3*readSize+7))} {
		send(t, c, s)
		expect(t, c, s)
	}
	if got := p.Accepted(); got != 1 {
		t.Errorf("Accepted() = %d, want 1", got)
	}
	if got := p.Open(); got != 1 {
		t.Errorf("Open() = %d, want 1", got)
	}
}

// TestHalfClose: an orderly close travels after the bytes before it, and
// the proxy closes both sockets once both directions have ended.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	c, s := pair(t, p, b)
	send(t, c, "last")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "last")
	expectClosed(t, s)
	send(t, s, "reply")
	s.Close()
	expect(t, c, "reply")
	expectClosed(t, c)
	waitFor(t, "Open() == 0", func() bool { return p.Open() == 0 })
}

func TestSilence(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	c, s := pair(t, p, b)

	p.Silence()
	send(t, c, "lost-up")
	send(t, s, "lost-down")
	// A connection accepted while silent is dialled but silent too.
	c2 := dial(t, p.Addr())
	s2 := b.next(t)
	send(t, c2, "lost2")
	waitDropped(t, p, int64(len("lost-up")+len("lost-down")+len("lost2")))
	expectQuiet(t, s)
	expectQuiet(t, c)
	expectQuiet(t, s2)

	// Resume forwards what is read from now on; nothing dropped comes back.
	p.Resume()
	for _, cs := range [][2]net.Conn{{c, s}, {c2, s2}} {
		send(t, cs[0], "up")
		expect(t, cs[1], "up")
		send(t, cs[1], "down")
		expect(t, cs[0], "down")
	}
	if got := p.Open(); got != 2 {
		t.Errorf("Open() = %d, want 2", got)
	}
}

// TestSilenceHoldsEOF: a silent connection hides a peer's close too.
func TestSilenceHoldsEOF(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	c, s := pair(t, p, b)
	p.Silence()
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectQuiet(t, s)
	p.Resume()
	expectClosed(t, s)
}

func TestFreezeThaw(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	c, s := pair(t, p, b)

	p.Freeze()
	send(t, c, "one,")
	send(t, c, "two")
	send(t, s, "back")
	c2 := dial(t, p.Addr()) // frozen from the start
	s2 := b.next(t)
	send(t, c2, "new")
	expectQuiet(t, s)
	expectQuiet(t, c)
	expectQuiet(t, s2)

	waitFor(t, "the bytes to be held", func() bool { return p.Held() == len("one,two")+len("back")+len("new") })
	p.Thaw()
	expect(t, s, "one,two")
	expect(t, c, "back")
	expect(t, s2, "new")
	if got := p.Dropped(); got != 0 {
		t.Errorf("Dropped() = %d, want 0", got)
	}
}

// TestFreezeThenSilenceDrops: Silence drops what a frozen connection held.
func TestFreezeThenSilenceDrops(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	c, s := pair(t, p, b)
	p.Freeze()
	send(t, c, "held")
	waitFor(t, "the bytes to be held", func() bool { return p.Held() == len("held") })
	p.Silence()
	if got := p.Held(); got != 0 {
		t.Errorf("Held() = %d after Silence, want 0", got)
	}
	waitDropped(t, p, int64(len("held")))
	p.Resume()
	send(t, c, "after")
	expect(t, s, "after")
}

// TestFreezeBound: a frozen connection holds at most MaxHeld bytes per
// direction and then stops reading, so the sender blocks; nothing is lost.
func TestFreezeBound(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	c, s := pair(t, p, b)
	p.Freeze()

	// Far more than MaxHeld plus what loopback socket buffers can take
	// (tcp_rmem's maximum is often 32 MiB).
	var pattern [251]byte
	for i := range pattern {
		pattern[i] = byte(i)
	}
	data := bytes.Repeat(pattern[:], (64<<20)/len(pattern))
	wrote := make(chan error, 1)
	go func() {
		c.SetWriteDeadline(time.Now().Add(2 * waitTimeout))
		_, err := c.Write(data)
		wrote <- err
	}()
	waitFor(t, "the proxy to hold MaxHeld bytes", func() bool { return p.Held() > MaxHeld-readSize })
	select {
	case err := <-wrote:
		t.Fatalf("a write of %d bytes into a frozen proxy returned (%v); want it blocked", len(data), err)
	case <-time.After(quiet):
	}
	if got := p.Held(); got > MaxHeld {
		t.Fatalf("Held() = %d, over MaxHeld = %d", got, MaxHeld)
	}

	p.Thaw()
	got := make([]byte, len(data))
	s.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("bytes delivered after Thaw differ from those written")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	t.Run("delays client to server in order", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t, true)
		p := newProxy(t, b.addr())
		c := dial(t, p.Addr())
		send(t, c, "warm")
		expect(t, c, "warm")
		const d = 50 * time.Millisecond
		p.SetLatency(d)
		start := time.Now()
		for _, s := range []string{"a", "b", "c"} {
			send(t, c, s)
		}
		expect(t, c, "abc")
		if rtt := time.Since(start); rtt < d {
			t.Errorf("round trip took %v with %v of latency", rtt, d)
		}
	})
	t.Run("server to client is not delayed", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t, false)
		p := newProxy(t, b.addr())
		c, s := pair(t, p, b)
		p.SetLatency(time.Hour)
		send(t, s, "down")
		expect(t, c, "down")
	})
	t.Run("zero releases waiting bytes", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t, false)
		p := newProxy(t, b.addr())
		c, s := pair(t, p, b)
		p.SetLatency(time.Hour)
		send(t, c, "up")
		expectQuiet(t, s)
		p.SetLatency(0)
		expect(t, s, "up")
	})
}

func TestCutAll(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	c1, s1 := pair(t, p, b)
	c2, s2 := pair(t, p, b)
	p.Freeze() // a cut connection's held bytes go too
	send(t, c1, "held")

	p.CutAll()
	if got := p.Open(); got != 0 {
		t.Errorf("Open() = %d after CutAll, want 0", got)
	}
	for _, c := range []net.Conn{c1, c2, s1, s2} {
		expectClosed(t, c)
	}

	// The proxy keeps accepting, in the mode it was in.
	p.Thaw()
	pair(t, p, b)
	if got, want := p.Accepted(), int64(3); got != want {
		t.Errorf("Accepted() = %d, want %d", got, want)
	}
	if got := p.Open(); got != 1 {
		t.Errorf("Open() = %d, want 1", got)
	}
}

// TestScopes: Set changes open connections, new ones, or both.
func TestScopes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		scope                 Scope
		openSilent, newSilent bool
	}{
		{AllConns, true, true},
		{OpenConns, true, false},
		{NewConns, false, true},
	} {
		t.Run(tc.scope.String(), func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, false)
			p := newProxy(t, b.addr())
			oldC, oldS := pair(t, p, b)
			p.Set(Silent, tc.scope)
			newC := dial(t, p.Addr())
			newS := b.next(t)
			var dropped int64
			for _, x := range []struct {
				name   string
				c, s   net.Conn
				silent bool
			}{
				{"open", oldC, oldS, tc.openSilent},
				{"new", newC, newS, tc.newSilent},
			} {
				send(t, x.c, "ping")
				if !x.silent {
					expect(t, x.s, "ping")
					continue
				}
				dropped += int64(len("ping"))
				waitDropped(t, p, dropped)
				expectQuiet(t, x.s)
			}
		})
	}
}

func TestDialFailureClosesClient(t *testing.T) {
	t.Parallel()
	p := newProxy(t, redistest.RefusedAddr(t))
	c := dial(t, p.Addr())
	expectClosed(t, c)
	waitFor(t, "Open() == 0", func() bool { return p.Open() == 0 })
	if got := p.Accepted(); got != 1 {
		t.Errorf("Accepted() = %d, want 1", got)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	c1, s1 := pair(t, p, b)
	p.Freeze()
	c2 := dial(t, p.Addr()) // frozen, mid-stream
	s2 := b.next(t)
	send(t, c2, "held")

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { p.Close() })
	}
	wg.Wait()
	if got := p.Open(); got != 0 {
		t.Errorf("Open() = %d after Close, want 0", got)
	}
	for _, c := range []net.Conn{c1, s1, c2, s2} {
		expectClosed(t, c)
	}
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		c.Close()
		t.Error("the proxy accepted a connection after Close")
	}
	// Every method is harmless after Close.
	p.Silence()
	p.Resume()
	p.SetLatency(time.Second)
	p.CutAll()
	p.Close()
}

func TestSetPanicsOnUnknownValues(t *testing.T) {
	t.Parallel()
	b := newBackend(t, false)
	p := newProxy(t, b.addr())
	for _, tc := range []struct {
		m Mode
		s Scope
	}{{Mode(7), AllConns}, {Forward, Scope(-1)}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Set(%v, %v) did not panic", tc.m, tc.s)
				}
			}()
			p.Set(tc.m, tc.s)
		}()
	}
}
