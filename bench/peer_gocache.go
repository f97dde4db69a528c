package main

import (
	"context"
	"errors"
	"slices"

	"github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"
)

// goCacheLocalSize is the size, in entries, of go-redis/cache's TinyLFU
// local cache: as many as the Zipf workload's keys, so that every library
// can hold the whole key space (the library's README uses 1,000).
const goCacheLocalSize = 50_000

// goCachePeer is a node of go-redis/cache v9: its own client and TinyLFU
// local cache. It has no cross-node invalidation: another node's Delete
// leaves this node's local copy until its local TTL.
type goCachePeer struct {
	rdb   *redis.Client
	cache *cache.Cache
	ns    string
}

func openGoCache(_ context.Context, addr, ns string) (peer, error) {
	rdb := goRedisClient(addr)
	return &goCachePeer{
		rdb: rdb,
		cache: cache.New(&cache.Options{
			Redis:      rdb,
			LocalCache: cache.NewTinyLFU(goCacheLocalSize, localTTL),
		}),
		ns: ns,
	}, nil
}

// Get is Once, the library's cache-aside read: local, Redis, then the
// loader (one flight per key per process), storing in both.
func (p *goCachePeer) Get(ctx context.Context, key string, src *source) (Value, error) {
	var v Value
	err := p.cache.Once(&cache.Item{
		Ctx:   ctx,
		Key:   p.ns + key,
		Value: &v,
		TTL:   redisTTL,
		Do: func(it *cache.Item) (any, error) {
			return src.Load(it.Context(), key)
		},
	})
	return v, err
}

// GetMany loops over Get: the library has no batch read.
func (p *goCachePeer) GetMany(ctx context.Context, keys []string, src *source) (map[string]Value, error) {
	out := make(map[string]Value, len(keys))
	var errs []error
	for _, k := range keys {
		v, err := p.Get(ctx, k, src)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[k] = v
	}
	return out, errors.Join(errs...)
}

func (p *goCachePeer) Invalidate(ctx context.Context, key string) error {
	return p.cache.Delete(ctx, p.ns+key)
}

// Prefill SETs the library's own encoding (msgpack, s2 above 64 bytes), in
// pipelines.
func (p *goCachePeer) Prefill(ctx context.Context, keys []string, src *source) error {
	for chunk := range slices.Chunk(keys, prefillBatch) {
		vals, err := src.BulkLoad(ctx, chunk)
		if err != nil {
			return err
		}
		pipe := p.rdb.Pipeline()
		for _, k := range chunk {
			b, err := p.cache.Marshal(vals[k])
			if err != nil {
				return err
			}
			pipe.Set(ctx, p.ns+k, b, redisTTL)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (p *goCachePeer) Close() error { return p.rdb.Close() }
