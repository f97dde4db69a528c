package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tieredcache/tiered/internal/faultproxy"
)

// The faults of -chaos, in the order they run. Each starts at its share of
// the load phase (fault i of n at i/(n+1) of -seconds), or when the one
// before has ended if that is later, so that each one's recovery shows in
// the table before the next begins.
//
// With -chaos every node reaches Redis through two loopback fault proxies
// of the parent's (internal/faultproxy): one for the cache's client, one for
// the client of its invalidation bus. They forward bytes unchanged until a
// fault says otherwise.
const (
	chaosPause   = time.Second             // how long CLIENT PAUSE holds commands
	chaosOutage  = 1500 * time.Millisecond // how long a killed server stays down
	silentLimit  = 5 * time.Second         // for the silenced bus to notice
	silentVictim = 0                       // the node whose subscription goes silent
)

// nodeProxies are the fault proxies in front of one node's Redis clients.
type nodeProxies struct {
	data *faultproxy.Proxy // the cache's client: reads, writes, leases
	bus  *faultproxy.Proxy // the bus's client: the subscription (and INFO)
}

// startProxies starts a pair of proxies to target for each of n nodes. On
// error it closes those it started.
func startProxies(n int, target string) ([]nodeProxies, error) {
	var ps []nodeProxies
	for range n {
		data, err := faultproxy.New(target)
		if err != nil {
			closeProxies(ps)
			return nil, err
		}
		bus, err := faultproxy.New(target)
		if err != nil {
			data.Close()
			closeProxies(ps)
			return nil, err
		}
		ps = append(ps, nodeProxies{data: data, bus: bus})
	}
	return ps, nil
}

func closeProxies(ps []nodeProxies) {
	for _, p := range ps {
		p.data.Close()
		p.bus.Close()
	}
}

// fault is one step of -chaos: do injects the fault and undoes it, and
// describes what happened.
type fault struct {
	name string
	do   func(ctx context.Context) (string, error)
}

func (d *driver) faults() []fault {
	return []fault{
		{"cut every node's Redis connections", d.cut},
		{fmt.Sprintf("CLIENT PAUSE %d ALL", chaosPause.Milliseconds()), func(ctx context.Context) (string, error) {
			return d.pause(ctx, "ALL")
		}},
		{fmt.Sprintf("CLIENT PAUSE %d WRITE", chaosPause.Milliseconds()), func(ctx context.Context) (string, error) {
			return d.pause(ctx, "WRITE")
		}},
		{fmt.Sprintf("%s's subscription goes silent", d.nodes[silentVictim].name), d.silence},
		{"kill Redis and restart it", d.kill},
	}
}

// chaos runs the faults over the load phase, which began at start and ends
// when load is done. A fault that has begun runs to its end on ctx, even
// past the load phase, so that no fault is left in place.
func (d *driver) chaos(ctx, load context.Context, start time.Time) {
	fs := d.faults()
	for i, f := range fs {
		at := start.Add(d.cfg.Duration * time.Duration(i+1) / time.Duration(len(fs)+1))
		t := time.NewTimer(time.Until(at))
		select {
		case <-t.C:
		case <-load.Done():
			t.Stop()
			d.out.printf("--- chaos %d/%d (%s): not run, the load phase ended first", i+1, len(fs), f.name)
			continue
		}
		d.out.printf("--- %s chaos %d/%d: %s", since(start), i+1, len(fs), f.name)
		what, err := f.do(ctx)
		if err != nil {
			if ctx.Err() == nil {
				d.fail("chaos %d/%d (%s): %v", i+1, len(fs), f.name, err)
			}
			continue
		}
		d.out.printf("--- %s chaos %d/%d: %s", since(start), i+1, len(fs), what)
	}
}

func since(start time.Time) string {
	return fmt.Sprintf("%.1fs", time.Since(start).Seconds())
}

// cut resets every connection of every node to Redis, as a network blip
// would; the proxies accept new ones at once.
func (d *driver) cut(context.Context) (string, error) {
	n := 0
	for _, p := range d.proxies {
		n += p.data.Open() + p.bus.Open()
		p.data.CutAll()
		p.bus.CutAll()
	}
	return fmt.Sprintf("reset %d connections (subscriptions included) with RST", n), nil
}

// pause pauses the server for chaosPause in mode ALL or WRITE.
func (d *driver) pause(ctx context.Context, mode string) (string, error) {
	if err := d.redis.pause(ctx, mode, chaosPause); err != nil {
		return "", err
	}
	how := "the server held every client's "
	if mode == "WRITE" {
		how += "write commands (scripts and PUBLISH included)"
	} else {
		how += "commands"
	}
	if d.redis.mr != nil {
		how += " (miniredis: a command hook held them)"
	}
	return fmt.Sprintf("pause over: %s for %v", how, chaosPause), nil
}

// silence makes the victim node's subscription connection silent, like a
// dead NAT entry: what either side sends on it is dropped and the socket
// stays open. The node's other connections, and any new one, work. It waits
// until the node's bus notices (it replaces a connection that has answered
// nothing for two health intervals), then lets the proxy forward on every
// connection again: by then the node has closed the silent one.
func (d *driver) silence(ctx context.Context) (string, error) {
	n, p := d.nodes[silentVictim], d.proxies[silentVictim].bus
	before, err := d.nodeStats(ctx, n, "/stats")
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	p.Set(faultproxy.Silent, faultproxy.OpenConns)
	defer p.Set(faultproxy.Forward, faultproxy.OpenConns)
	for {
		s, err := d.nodeStats(ctx, n, "/stats")
		if err == nil && s.Bus.Replaced > before.Bus.Replaced {
			return fmt.Sprintf("%s's bus noticed after %v and replaced the connection; silence lifted",
				n.name, time.Since(t0).Round(10*time.Millisecond)), nil
		}
		if time.Since(t0) > silentLimit {
			return "", fmt.Errorf("%s's bus did not replace its silent connection within %v", n.name, silentLimit)
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		}
	}
}

// kill kills the server and restarts it empty (see redisServer.kill).
func (d *driver) kill(ctx context.Context) (string, error) {
	return d.redis.kill(ctx, chaosOutage)
}
