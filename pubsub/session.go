package pubsub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/hashslot"
	"github.com/tieredcache/tiered/internal/mono"
)

// A session is one attempt at a subscription: from the connections it opens
// until the first of them fails. Classic pub/sub has one connection
// (shard); sharded pub/sub has one per master of the Cluster, each
// subscribed to the slot channels that master serves. The bus is healthy
// once every shard has confirmed all its channels, and loses the whole
// session when any shard fails: a gap on one shard is a gap of the bus.
type session struct {
	shards    []*shard
	confirmed atomic.Int32 // shards whose channels are all confirmed
}

// A shard is one subscription connection of a session.
type shard struct {
	ps       *redis.PubSub
	addr     string // the server, for logs
	channels int    // confirmations that complete the subscription
	// proof is the mono send time of the newest PING this shard answered
	// after its subscription was confirmed. Written by the shard's
	// receiving goroutine; read by the others to take the minimum.
	proof atomic.Int64
}

func (s *session) close() {
	for _, sh := range s.shards {
		_ = sh.ps.Close()
	}
}

// up reports whether every shard has confirmed its subscription.
func (s *session) up() bool { return int(s.confirmed.Load()) == len(s.shards) }

var errSlotMoved = errors.New("pubsub: Redis moved a slot of the sharded bus away (SUNSUBSCRIBE)")

// open starts a session: SUBSCRIBE to the channel, or in sharded mode one
// SSUBSCRIBE per slot channel on the master that serves it (a Cluster
// rejects an SSUBSCRIBE whose channels span slots, even on one node), the
// masters in parallel. Every call gets a deadline: go-redis dials with the
// context of the call, and a dial through a connection that never answers
// would block the bus. Sharded, the deadline is shardedAllowance.
func (b *Bus) open(ctx context.Context) (*session, error) {
	if !b.sharded {
		ctx, cancel := context.WithTimeout(ctx, b.o.HealthInterval)
		defer cancel()
		ps := b.rdb.Subscribe(ctx, b.o.Channel)
		return &session{shards: []*shard{{ps: ps, channels: 1}}}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.shardedAllowance())
	defer cancel()
	// The client's slot map, so that the bus and the writers agree.
	masters, err := hashslot.Shards(ctx, b.cluster)
	if err != nil {
		return nil, fmt.Errorf("pubsub: %w", err)
	}
	s := &session{}
	var (
		wg   sync.WaitGroup
		errs = make([]error, len(masters))
	)
	for i, m := range masters {
		sh := &shard{ps: m.Client.SSubscribe(ctx), addr: m.Client.Options().Addr, channels: len(m.Slots)}
		s.shards = append(s.shards, sh)
		wg.Go(func() {
			for _, slot := range m.Slots {
				if err := sh.ps.SSubscribe(ctx, hashslot.Channel(b.o.Channel, slot)); err != nil {
					errs[i] = fmt.Errorf("pubsub: SSUBSCRIBE on %s: %w", sh.addr, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// shardedAllowance is how long a sharded session may take to send its
// subscriptions, and then to have them all confirmed: 5 health intervals,
// and at least shardedMinAllowance. 16,384 SSUBSCRIBEs and their replies
// take about 0.2 s on an idle 2-core machine, seconds under the race
// detector and load; a health interval of 200 ms would never be enough.
func (b *Bus) shardedAllowance() time.Duration {
	return max(5*b.o.HealthInterval, shardedMinAllowance)
}

const shardedMinAllowance = 5 * time.Second

// serve receives on every shard of s until one fails or ctx is done, and
// returns the first error. One shard is served on the calling goroutine.
func (b *Bus) serve(ctx context.Context, s *session, bo *backoff) error {
	if len(s.shards) == 1 {
		return b.receive(ctx, s, s.shards[0], bo)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, sh := range s.shards {
		wg.Go(func() {
			err := b.receive(ctx, s, sh, bo)
			once.Do(func() {
				first = err
				cancel()
				s.close() // unblocks the other shards' receives
			})
		})
	}
	wg.Wait()
	return first
}

// receive reads from sh until ctx is done or the session must be replaced,
// and says why. go-redis treats a read timeout as harmless and keeps the
// connection, so a connection that stays open and silent is replaced here:
// when its subscription is not confirmed within a health interval (sharded:
// shardedAllowance), or when
// nothing at all (not even a PONG to the PINGs the pinger sends at least
// every interval) has arrived for two.
func (b *Bus) receive(ctx context.Context, s *session, sh *shard, bo *backoff) error {
	interval := int64(b.o.HealthInterval)
	confirmWithin := interval // a SUBSCRIBE's confirmation
	if b.sharded {
		confirmWithin = int64(b.shardedAllowance())
	}
	start := mono.Now()
	last, confirmed := start, false
	for {
		rctx, cancel := context.WithTimeout(ctx, b.o.HealthInterval)
		msg, err := sh.ps.ReceiveTimeout(rctx, b.o.HealthInterval/4)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := mono.Now()
		if err != nil {
			var ne net.Error
			if !errors.Is(err, context.DeadlineExceeded) && (!errors.As(err, &ne) || !ne.Timeout()) {
				return err
			}
			switch {
			case !confirmed && now-start > confirmWithin:
				b.replaced.Add(1)
				return errNotConfirmed
			case now-last > 2*interval:
				b.replaced.Add(1)
				return errSilent
			}
			continue
		}
		last = now
		switch m := msg.(type) {
		case *redis.Subscription:
			switch {
			case m.Kind == "sunsubscribe":
				return errSlotMoved
			case confirmed:
			case m.Kind == "subscribe" && m.Channel == b.o.Channel,
				m.Kind == "ssubscribe" && m.Count == sh.channels:
				confirmed = true
				if s.confirmed.Add(1) == int32(len(s.shards)) {
					b.subscribed.Add(1)
					b.setUp()
					bo.reset()
				}
			}
		case *redis.Message:
			b.dispatch(m.Payload)
		case *redis.Pong:
			if sent, err := strconv.ParseInt(m.Payload, 10, 64); err == nil && confirmed && sent > sh.proof.Load() {
				sh.proof.Store(sent)
				b.prove(s)
			}
		}
	}
}

// prove raises the bus's proof to the oldest of the shards' proofs, once
// every shard has confirmed: a message on any shard published before that
// time has been applied.
func (b *Bus) prove(s *session) {
	if !s.up() {
		return
	}
	oldest := int64(0)
	for _, sh := range s.shards {
		p := sh.proof.Load()
		if p == 0 {
			return
		}
		if oldest == 0 || p < oldest {
			oldest = p
		}
	}
	for {
		cur := b.proof.Load()
		if oldest <= cur || b.proof.CompareAndSwap(cur, oldest) {
			return
		}
	}
}
