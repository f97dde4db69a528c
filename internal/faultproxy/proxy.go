package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxHeld is the most bytes one direction of one connection holds while it
// is frozen (or waiting out added latency, or delivering to a peer that
// reads slowly). Past it the proxy stops reading from the sender until the
// held bytes are delivered.
const MaxHeld = 4 << 20

// DialTimeout bounds the proxy's dial of its target for each connection it
// accepts; a connection whose dial fails is closed.
const DialTimeout = 5 * time.Second

// readSize is the most bytes a reader takes from a socket at once.
const readSize = 32 << 10

// Mode is what a connection does with the bytes it reads. See the package
// comment.
type Mode int

const (
	// Forward delivers bytes, client→server after the added latency. It is
	// the mode of a new Proxy.
	Forward Mode = iota
	// Silent drops the bytes read from either side, and any held ones.
	Silent
	// Frozen holds the bytes read from either side, up to MaxHeld per
	// direction, for delivery in order once the connection forwards again.
	Frozen
)

func (m Mode) String() string {
	switch m {
	case Forward:
		return "forward"
	case Silent:
		return "silent"
	case Frozen:
		return "frozen"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Scope says which connections [Proxy.Set] changes.
type Scope int

const (
	// AllConns is the connections open now and those accepted from now on.
	AllConns Scope = iota
	// OpenConns is the connections open now only; connections accepted
	// later start in the mode the last Set for new connections chose.
	OpenConns
	// NewConns is the connections accepted from now on only; open ones keep
	// their modes.
	NewConns
)

func (s Scope) String() string {
	switch s {
	case AllConns:
		return "all"
	case OpenConns:
		return "open"
	case NewConns:
		return "new"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// Proxy forwards connections accepted on a loopback address to a target
// address, injecting the faults its methods switch on.
//
// A Proxy is safe for concurrent use by multiple goroutines. Every method
// may be called at any time; after Close, those that change modes, latency
// or connections have no effect.
type Proxy struct {
	target atomic.Pointer[string] // dialed for each new connection; SetTarget changes it
	ln     net.Listener

	latency  atomic.Int64 // time.Duration added client→server
	accepted atomic.Int64 // connections accepted, ever
	dropped  atomic.Int64 // bytes dropped while silent, ever

	mu      sync.Mutex         // guards the fields below
	conns   map[*conn]struct{} // connections not yet torn down
	newMode Mode               // the mode of connections accepted from now on
	closed  bool               // Close was called: accept nothing more

	closeOnce sync.Once
	wg        sync.WaitGroup // every goroutine the proxy started
}

// New returns a proxy listening on 127.0.0.1 (port chosen by the system)
// that forwards to target, a host:port. It does not dial target until a
// connection arrives, so target may come up later. Call Close when done.
func New(target string) (*Proxy, error) {
	if target == "" {
		return nil, errors.New("faultproxy: empty target address")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	p := &Proxy{ln: ln, conns: make(map[*conn]struct{})}
	p.target.Store(&target)
	p.wg.Go(p.serve)
	return p, nil
}

// Addr returns the host:port clients dial to reach the target through the
// proxy.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return *p.target.Load() }

// SetTarget makes connections accepted from now on forward to addr, as a
// failover moves a service's address to another server. Open connections
// keep their server; CutAll ends them.
func (p *Proxy) SetTarget(addr string) { p.target.Store(&addr) }

// Accepted returns how many connections the proxy has accepted.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Open returns how many accepted connections are not yet closed: being
// dialled, forwarding, silent or frozen, or half closed by one peer.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Dropped returns how many bytes the proxy has dropped because their
// connection was silent, counting both directions.
func (p *Proxy) Dropped() int64 { return p.dropped.Load() }

// Held returns how many bytes the proxy holds in all, read and not yet
// delivered: those of frozen connections, those waiting out the added
// latency, and those a slow reader has not taken yet. A test can wait for it
// to know that what a client sent has reached a frozen proxy.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		c.mu.Lock()
		n += c.up.held + c.down.held
		c.mu.Unlock()
	}
	return n
}

// Set puts the connections of scope s into mode m. A change to Forward
// releases what frozen connections held, in order; a change to Silent drops
// it. It panics on an unknown Mode or Scope.
func (p *Proxy) Set(m Mode, s Scope) {
	if m < Forward || m > Frozen {
		panic(fmt.Sprintf("faultproxy: unknown %v", m))
	}
	if s < AllConns || s > NewConns {
		panic(fmt.Sprintf("faultproxy: unknown %v", s))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s != OpenConns {
		p.newMode = m
	}
	if s != NewConns {
		for c := range p.conns {
			c.setMode(m)
		}
	}
}

// Silence makes every connection, open or to come, silent: bytes read from
// either side from now on, and any held, are dropped. Same as
// Set(Silent, AllConns).
func (p *Proxy) Silence() { p.Set(Silent, AllConns) }

// Resume makes every connection, open or to come, forward the bytes it
// reads from now on (and any it held). Same as Set(Forward, AllConns).
func (p *Proxy) Resume() { p.Set(Forward, AllConns) }

// Freeze makes every connection, open or to come, hold the bytes it reads
// until Thaw. Same as Set(Frozen, AllConns).
func (p *Proxy) Freeze() { p.Set(Frozen, AllConns) }

// Thaw delivers what frozen connections held, in order, and forwards from
// then on. It is Resume under the name that pairs with Freeze.
func (p *Proxy) Thaw() { p.Resume() }

// SetLatency delays every chunk of bytes forwarded client→server until d
// after the proxy read it, keeping their order; server→client bytes are not
// delayed. It applies to bytes already waiting, so SetLatency(0) (or any
// d <= 0) releases them at once.
func (p *Proxy) SetLatency(d time.Duration) {
	p.latency.Store(int64(max(d, 0)))
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		signal(c.up.wake)
	}
}

// CutAll resets every open connection on both sides, as a network blip
// would; the proxy keeps accepting new ones. When it returns, Open is 0
// unless a connection arrived meanwhile.
func (p *Proxy) CutAll() {
	for _, c := range p.untrackAll() {
		c.teardown(true)
	}
}

// Close stops accepting, closes every connection and waits for every
// goroutine the proxy started to return. It is idempotent and always
// returns nil; the result makes a Proxy an io.Closer.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.ln.Close()
		p.CutAll()
		p.wg.Wait()
	})
	return nil
}

// untrackAll forgets every connection and returns them.
func (p *Proxy) untrackAll() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	clear(p.conns)
	return cs
}

// serve accepts connections until the listener is closed.
func (p *Proxy) serve() {
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A resource shortage (EMFILE and the like): back off, as
			// net/http's Server does, rather than spin.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		c := p.track(cc)
		if c == nil {
			cc.Close()
			return
		}
		p.wg.Go(c.run)
	}
}

// track registers a newly accepted client socket, or returns nil once the
// proxy is closed.
func (p *Proxy) track(cc net.Conn) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.accepted.Add(1)
	c := newConn(p, cc, p.newMode)
	p.conns[c] = struct{}{}
	return c
}

func (p *Proxy) untrack(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// conn is one proxied connection: the client socket the proxy accepted, the
// server socket it dialled, and a pipe for each direction.
type conn struct {
	p      *Proxy
	client net.Conn
	ctx    context.Context // done once the connection is torn down
	cancel context.CancelFunc

	up   pipe // client→server; the latency applies
	down pipe // server→client

	mu     sync.Mutex // guards the fields below and both pipes' queues
	mode   Mode
	server net.Conn // nil until dialled

	finished     atomic.Int32 // pipes that passed their EOF on
	teardownOnce sync.Once
}

// pipe is one direction of a conn. Its reader queues the chunks it reads;
// its writer delivers them.
type pipe struct {
	src, dst net.Conn      // set before the pipe's goroutines start
	delayed  bool          // the proxy's latency applies
	wake     chan struct{} // cap 1: the writer should look again
	room     chan struct{} // cap 1: the reader may find room now

	// Guarded by conn.mu:
	chunks []chunk // read, not yet delivered, in order
	held   int     // bytes in chunks
	eof    bool    // src ended in an orderly way after chunks
}

type chunk struct {
	b  []byte
	at time.Time // when it was read
}

func newConn(p *Proxy, client net.Conn, m Mode) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{p: p, client: client, ctx: ctx, cancel: cancel, mode: m}
	c.up = pipe{delayed: true, wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
	c.down = pipe{wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
	return c
}

// signal wakes whoever waits on ch, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run dials the target and starts the pipes' goroutines.
func (c *conn) run() {
	ctx, cancel := context.WithTimeout(c.ctx, DialTimeout)
	defer cancel()
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", c.p.Target())
	if err != nil {
		c.teardown(false)
		return
	}
	c.mu.Lock()
	if c.ctx.Err() != nil { // torn down while dialling
		c.mu.Unlock()
		server.Close()
		return
	}
	c.server = server
	c.up.src, c.up.dst = c.client, server
	c.down.src, c.down.dst = server, c.client
	c.mu.Unlock()
	for _, pp := range []*pipe{&c.up, &c.down} {
		c.p.wg.Go(func() { c.read(pp) })
		c.p.wg.Go(func() { c.write(pp) })
	}
}

// setMode puts c in mode m; Silent drops what c holds.
func (c *conn) setMode(m Mode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mode = m
	for _, pp := range []*pipe{&c.up, &c.down} {
		if m == Silent && pp.held > 0 {
			c.p.dropped.Add(int64(pp.held))
			clear(pp.chunks)
			pp.chunks, pp.held = nil, 0
			signal(pp.room)
		}
		signal(pp.wake)
	}
}

// read reads pp.src until it ends, queueing what it reads.
func (c *conn) read(pp *pipe) {
	buf := make([]byte, readSize)
	for {
		n, err := pp.src.Read(buf)
		if n > 0 && !c.put(pp, buf[:n]) {
			return
		}
		if err == io.EOF {
			c.mu.Lock()
			pp.eof = true
			c.mu.Unlock()
			signal(pp.wake)
			return
		}
		if err != nil {
			c.teardown(false)
			return
		}
	}
}

// put queues a copy of b for pp's writer, or drops it while c is silent. It
// waits while pp holds MaxHeld bytes, and returns false if c is torn down
// meanwhile.
func (c *conn) put(pp *pipe, b []byte) bool {
	at := time.Now()
	for {
		c.mu.Lock()
		if c.mode == Silent {
			c.mu.Unlock()
			c.p.dropped.Add(int64(len(b)))
			return true
		}
		if pp.held == 0 || pp.held+len(b) <= MaxHeld {
			pp.chunks = append(pp.chunks, chunk{bytes.Clone(b), at})
			pp.held += len(b)
			c.mu.Unlock()
			signal(pp.wake)
			return true
		}
		c.mu.Unlock()
		select {
		case <-pp.room:
		case <-c.ctx.Done():
			return false
		}
	}
}

// write delivers pp's chunks, and then its EOF, while c forwards.
func (c *conn) write(pp *pipe) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		b, eof, wait := c.next(pp)
		if b != nil {
			if _, err := pp.dst.Write(b); err != nil {
				c.teardown(false)
				return
			}
			continue
		}
		if eof {
			if tc, ok := pp.dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			if c.finished.Add(1) == 2 {
				c.teardown(false)
			}
			return
		}
		var due <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			due = timer.C
		}
		select {
		case <-pp.wake:
		case <-due:
		case <-c.ctx.Done():
			return
		}
		timer.Stop()
	}
}

// next takes the chunk pp's writer may deliver now. If there is none, it
// reports whether pp's EOF may be passed on, or how long until the first
// chunk is due (0: until a wake).
func (c *conn) next(pp *pipe) (b []byte, eof bool, wait time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode != Forward {
		return nil, false, 0
	}
	if len(pp.chunks) == 0 {
		return nil, pp.eof, 0
	}
	if pp.delayed {
		latency := time.Duration(c.p.latency.Load())
		if d := time.Until(pp.chunks[0].at.Add(latency)); d > 0 {
			return nil, false, d
		}
	}
	b = pp.chunks[0].b
	pp.chunks[0] = chunk{}
	pp.chunks = pp.chunks[1:]
	pp.held -= len(b)
	signal(pp.room)
	return b, false, 0
}

// teardown closes both sockets, with a reset (RST) instead of an orderly
// close if abort, stops c's goroutines and forgets c. It is idempotent.
func (c *conn) teardown(abort bool) {
	c.teardownOnce.Do(func() {
		c.cancel()
		c.p.untrack(c)
		c.mu.Lock()
		server := c.server
		c.mu.Unlock()
		for _, s := range []net.Conn{c.client, server} {
			if s == nil {
				continue
			}
			if tc, ok := s.(*net.TCPConn); ok && abort {
				tc.SetLinger(0)
			}
			s.Close()
		}
	})
}
