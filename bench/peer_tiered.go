package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/tiered"
)

// tieredPeer is a node of tiered: its own client and cache (whose own bus
// subscribes for invalidations), with the library's defaults but for TTL.
type tieredPeer struct {
	rdb   *redis.Client
	cache *tiered.Cache[Value]
	addr  string
	ns    string
}

// tieredOptions are the options of every tiered node: TTL set, everything
// else tiered's default (L1: 64 MiB, L1TTL min(TTL, 1m), MaxStaleness
// 100 ms, OpTimeout 200 ms, WriteTimeout 1 s, LeaseTTL 5 s).
func tieredOptions(ns string) *tiered.Options {
	return &tiered.Options{Namespace: ns, TTL: redisTTL}
}

func openTiered(ctx context.Context, addr, ns string) (peer, error) {
	p := &tieredPeer{rdb: goRedisClient(addr), addr: addr, ns: ns}
	var err error
	if p.cache, err = tiered.New[Value](p.rdb, tieredOptions(ns)); err != nil {
		p.rdb.Close()
		return nil, err
	}
	// Measure the cache in use, not one still subscribing: until it is
	// ready it reads through to Redis.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.cache.WaitReady(wctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("tiered never ready: %w", err)
	}
	return p, nil
}

// The source is a tiered.Loader and a tiered.BulkLoader itself: wrapping
// its methods in a LoaderFunc on every call would allocate a closure that
// a user's long-lived loader does not.
var (
	_ tiered.Loader[Value]     = (*source)(nil)
	_ tiered.BulkLoader[Value] = (*source)(nil)
)

func (p *tieredPeer) Get(ctx context.Context, key string, src *source) (Value, error) {
	return p.cache.GetOrLoad(ctx, key, src)
}

func (p *tieredPeer) GetMany(ctx context.Context, keys []string, src *source) (map[string]Value, error) {
	return p.cache.GetMany(ctx, keys, src)
}

func (p *tieredPeer) Invalidate(ctx context.Context, key string) error {
	return p.cache.Delete(ctx, key)
}

// Prefill reads keys through a cache of its own with L1 off, so that Redis
// holds them in tiered's envelope and this node's L1 stays empty. It is
// setup, not measured: its Redis calls get generous timeouts, so that a
// loaded machine cannot leave keys unfilled (a fill that times out leaves
// the key's lease until LeaseTTL), and it checks that Redis holds every key.
func (p *tieredPeer) Prefill(ctx context.Context, keys []string, src *source) error {
	o := tieredOptions(p.ns)
	o.DisableL1 = true
	o.OpTimeout = 10 * time.Second
	o.BreakerFailures = -1
	c, err := tiered.New[Value](p.rdb, o)
	if err != nil {
		return err
	}
	defer c.Close()
	for chunk := range slices.Chunk(keys, prefillBatch/10) {
		if _, err := c.GetMany(ctx, chunk, src); err != nil {
			return err
		}
		got, err := c.GetManyCached(ctx, chunk)
		if err != nil {
			return err
		}
		if len(got) != len(chunk) {
			return fmt.Errorf("prefill: Redis holds %d of %d keys after GetMany", len(got), len(chunk))
		}
	}
	return nil
}

func (p *tieredPeer) Close() error {
	err := p.cache.Close()
	p.rdb.Close()
	return err
}

// diagnostics returns the cache's counters that tell where reads went, for
// the progress log (see diagnoser).
func (p *tieredPeer) diagnostics() string {
	s := p.cache.Stats()
	return fmt.Sprintf("L1Hits=%d L2Hits=%d Misses=%d Loads=%d LeaseWaits=%d L1Unproven=%d L2Errors=%d BreakerOpens=%d BreakerSkips=%d Resets=%d Purges=%d Corrupt=%d",
		s.L1Hits, s.L2Hits, s.Misses, s.Loads, s.LeaseWaits, s.L1Unproven, s.L2Errors, s.BreakerOpens, s.BreakerSkips, s.Resets, s.Purges, s.Corrupt)
}
