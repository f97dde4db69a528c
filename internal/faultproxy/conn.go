package faultproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

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

// readSize is the most bytes a reader takes from a socket at once.
const readSize = 32 << 10

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
