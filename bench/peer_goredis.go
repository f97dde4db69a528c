package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// goRedisPeer is plain go-redis with no local cache: GET, and on a miss the
// loader (one flight per key per process, x/sync/singleflight) and a SET.
// Every read is a round trip, so no node can serve another's old value from
// memory; it is the baseline.
type goRedisPeer struct {
	rdb   *redis.Client
	ns    string
	group singleflight.Group
}

func openGoRedis(_ context.Context, addr, ns string) (peer, error) {
	return &goRedisPeer{rdb: goRedisClient(addr), ns: ns}, nil
}

func (p *goRedisPeer) Get(ctx context.Context, key string, src *source) (Value, error) {
	var v Value
	b, err := p.rdb.Get(ctx, p.ns+key).Bytes()
	if err == nil {
		err = json.Unmarshal(b, &v)
		return v, err
	}
	if !errors.Is(err, redis.Nil) {
		return v, err
	}
	r, err, _ := p.group.Do(key, func() (any, error) {
		v, err := src.Load(ctx, key)
		if err != nil {
			return v, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, err
		}
		return v, p.rdb.Set(ctx, p.ns+key, b, redisTTL).Err()
	})
	return r.(Value), err
}

// GetMany is one MGET, then the loader and a pipeline of SETs for the keys
// Redis lacks.
func (p *goRedisPeer) GetMany(ctx context.Context, keys []string, src *source) (map[string]Value, error) {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = p.ns + k
	}
	res, err := p.rdb.MGet(ctx, full...).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]Value, len(keys))
	var missing []string
	for i, k := range keys {
		s, ok := res[i].(string)
		if !ok {
			missing = append(missing, k)
			continue
		}
		var v Value
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	if len(missing) == 0 {
		return out, nil
	}
	loaded, err := src.BulkLoad(ctx, missing)
	if err != nil {
		return nil, err
	}
	pipe := p.rdb.Pipeline()
	for _, k := range missing {
		b, err := json.Marshal(loaded[k])
		if err != nil {
			return nil, err
		}
		out[k] = loaded[k]
		pipe.Set(ctx, p.ns+k, b, redisTTL)
	}
	_, err = pipe.Exec(ctx)
	return out, err
}

func (p *goRedisPeer) Invalidate(ctx context.Context, key string) error {
	return p.rdb.Del(ctx, p.ns+key).Err()
}

func (p *goRedisPeer) Prefill(ctx context.Context, keys []string, src *source) error {
	return prefillJSON(ctx, p.rdb, p.ns, keys, src)
}

func (p *goRedisPeer) Close() error { return p.rdb.Close() }

// prefillBatch is how many keys a prefill writes per pipeline.
const prefillBatch = 1000

// prefillJSON SETs the JSON of keys' current values under ns, in pipelines.
func prefillJSON(ctx context.Context, rdb *redis.Client, ns string, keys []string, src *source) error {
	for chunk := range slices.Chunk(keys, prefillBatch) {
		vals, err := src.BulkLoad(ctx, chunk)
		if err != nil {
			return err
		}
		pipe := rdb.Pipeline()
		for _, k := range chunk {
			b, err := json.Marshal(vals[k])
			if err != nil {
				return err
			}
			pipe.Set(ctx, ns+k, b, redisTTL)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}
