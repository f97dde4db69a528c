// Package faultproxy is a loopback TCP proxy that injects network faults,
// for tests that run real servers and real clients: a connection that stays
// open but goes silent, a server that stops answering for a while, added
// latency, and a blip that cuts every connection.
//
// A [Proxy] listens on 127.0.0.1 and, for every connection it accepts,
// dials its target and copies bytes both ways. Each direction of each
// connection has a reader, which reads what one peer sends, and a writer,
// which delivers it to the other peer in order. Between them sits the
// connection's [Mode], consulted as bytes are read and as they are
// delivered:
//
//   - [Forward] delivers them (client→server after the added latency of
//     [Proxy.SetLatency]);
//   - [Silent] drops them as they are read, in both directions, and keeps
//     nothing for later: the peers see a black hole, like a dead NAT entry.
//     Both sockets stay open;
//   - [Frozen] holds them, up to [MaxHeld] bytes per direction, and
//     delivers them in order once the connection forwards again, like a
//     paused server. Past MaxHeld the proxy stops reading that side, so the
//     sender's socket buffers fill and its writes block: nothing is lost.
//
// A peer's orderly close (FIN) travels like a byte after those before it:
// it is held while the connection is silent or frozen. Once both directions
// have passed theirs on, the proxy closes both sockets.
//
// Modes are set with [Proxy.Set], which takes a [Scope]: the connections
// open now, those accepted from now on, or both. [Proxy.Silence],
// [Proxy.Freeze], [Proxy.Resume] and [Proxy.Thaw] are Set for both. A
// connection takes the proxy's mode for new connections when it is
// accepted, and keeps its own mode from then on until a Set reaches it; it
// is dialled in every mode, so a silent connection has a live server socket
// behind it.
//
// [Proxy.CutAll] resets every open connection on both sides, like a network
// blip, and the proxy keeps accepting. [Proxy.Close] stops everything and
// waits for every goroutine the proxy started.
//
// The proxy works on bytes, not packets: the kernel still acknowledges what
// a peer sends and answers TCP keepalives on the proxy's sockets, so a
// silent connection never dies of a TCP timeout. Only the application's own
// timeouts (a PING left unanswered, a read deadline) can tell it is dead,
// which is what fault tests of those timeouts need.
//
// The proxy makes no attempt at speed; it is for tests, not benchmarks of
// the network path.
package faultproxy
