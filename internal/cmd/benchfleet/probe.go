package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// publishProbe measures raw go-redis PUBLISH → receive latency on a channel
// of its own, with its own publisher and subscriber clients, and the PING
// round trip.
type publishProbe struct {
	pub, sub redis.UniversalClient
	ps       *redis.PubSub
	recv     chan received
	seq      int
}

// received is a message the probe's subscriber got, and when.
type received struct {
	payload string
	at      time.Time
}

// probeChannel is the probe's channel, apart from the buses'.
const probeChannel = "benchfleet:probe"

// newPublishProbe subscribes the probe on tg and starts its receiver.
func newPublishProbe(ctx context.Context, tg target) (*publishProbe, error) {
	p := &publishProbe{pub: tg.client(), sub: tg.client(), recv: make(chan received, 1)}
	p.ps = p.sub.Subscribe(ctx, probeChannel)
	// Receive returns the subscription confirmation first.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := p.ps.Receive(cctx); err != nil {
		close(p.recv) // no receiver goroutine to close it
		p.close()
		return nil, fmt.Errorf("probe subscription: %w", err)
	}
	go func() {
		defer close(p.recv)
		for {
			m, err := p.ps.ReceiveMessage(context.Background())
			if err != nil {
				return // closed
			}
			p.recv <- received{payload: m.Payload, at: time.Now()}
		}
	}()
	return p, nil
}

// publish sends one message, stamped with its send time, and returns how long
// the subscriber took to receive it.
func (p *publishProbe) publish(ctx context.Context) (time.Duration, error) {
	p.seq++
	t0 := time.Now()
	payload := strconv.Itoa(p.seq) + ":" + strconv.FormatInt(t0.UnixNano(), 10)
	if err := p.pub.Publish(ctx, probeChannel, payload).Err(); err != nil {
		return 0, fmt.Errorf("probe PUBLISH: %w", err)
	}
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	select {
	case r, ok := <-p.recv:
		if !ok {
			return 0, errors.New("probe subscription closed")
		}
		if r.payload != payload {
			return 0, fmt.Errorf("probe received %q, want %q", r.payload, payload)
		}
		return r.at.Sub(t0), nil
	case <-timeout.C:
		return 0, errors.New("probe message not received in 5s")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// ping returns the round trip of one PING.
func (p *publishProbe) ping(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	if err := p.pub.Ping(ctx).Err(); err != nil {
		return 0, fmt.Errorf("probe PING: %w", err)
	}
	return time.Since(t0), nil
}

// close closes the probe's clients and waits for its receiver to stop.
func (p *publishProbe) close() {
	p.ps.Close()
	p.sub.Close()
	p.pub.Close()
	for range p.recv { // wait for the receiver to stop
	}
}
