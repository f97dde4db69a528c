package faultproxy

import (
	"errors"
	"fmt"
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
