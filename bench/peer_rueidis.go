package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/redis/rueidis"
	"golang.org/x/sync/singleflight"
)

// rueidisPeer is a node of rueidis with server-assisted client-side
// caching (CLIENT TRACKING, opt-in mode, rueidis's default) and a
// cache-aside read written as a user of rueidis writes it: DoCache of a
// GET with a client-side TTL, and on a nil, the loader (one flight per key
// per process, x/sync/singleflight) and a SET. rueidisaside, the
// library's own cache-aside package, is not used: its module could not be
// fetched here.
//
// Redis invalidates the client-side copy when any client changes the key:
// a write on any node reaches every node that read it through DoCache.
type rueidisPeer struct {
	c     rueidis.Client
	ns    string
	group singleflight.Group
}

// openRueidis opens a client with rueidis's defaults: 128 MiB of
// client-side cache per connection, auto-pipelining.
func openRueidis(_ context.Context, addr, ns string) (peer, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
	if err != nil {
		return nil, err
	}
	return &rueidisPeer{c: c, ns: ns}, nil
}

func (p *rueidisPeer) Get(ctx context.Context, key string, src *source) (Value, error) {
	var v Value
	b, err := p.c.DoCache(ctx, p.c.B().Get().Key(p.ns+key).Cache(), localTTL).AsBytes()
	if err == nil {
		err = json.Unmarshal(b, &v)
		return v, err
	}
	if !rueidis.IsRedisNil(err) {
		return v, err
	}
	r, err, _ := p.group.Do(key, func() (any, error) {
		v, err := src.Load(ctx, key)
		if err != nil {
			return v, err
		}
		return v, p.set(ctx, key, v)
	})
	return r.(Value), err
}

func (p *rueidisPeer) set(ctx context.Context, key string, v Value) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return p.c.Do(ctx, p.c.B().Set().Key(p.ns+key).Value(rueidis.BinaryString(b)).Ex(redisTTL).Build()).Error()
}

// GetMany is rueidis.MGetCache (the client-side cache, then one request
// with the GETs it missed), then the loader and a pipeline of SETs for
// the keys Redis lacks.
func (p *rueidisPeer) GetMany(ctx context.Context, keys []string, src *source) (map[string]Value, error) {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = p.ns + k
	}
	msgs, err := rueidis.MGetCache(p.c, ctx, localTTL, full)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Value, len(keys))
	var missing []string
	for i, k := range keys {
		m := msgs[full[i]]
		b, err := m.AsBytes()
		if rueidis.IsRedisNil(err) {
			missing = append(missing, k)
			continue
		}
		if err != nil {
			return nil, err
		}
		var v Value
		if err := json.Unmarshal(b, &v); err != nil {
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
	cmds := make(rueidis.Commands, 0, len(missing))
	for _, k := range missing {
		b, err := json.Marshal(loaded[k])
		if err != nil {
			return nil, err
		}
		out[k] = loaded[k]
		cmds = append(cmds, p.c.B().Set().Key(p.ns+k).Value(rueidis.BinaryString(b)).Ex(redisTTL).Build())
	}
	var errs []error
	for _, r := range p.c.DoMulti(ctx, cmds...) {
		errs = append(errs, r.Error())
	}
	return out, errors.Join(errs...)
}

// Invalidate DELs the key; Redis then tells every client that cached it.
func (p *rueidisPeer) Invalidate(ctx context.Context, key string) error {
	return p.c.Do(ctx, p.c.B().Del().Key(p.ns+key).Build()).Error()
}

func (p *rueidisPeer) Prefill(ctx context.Context, keys []string, src *source) error {
	for chunk := range slices.Chunk(keys, prefillBatch) {
		vals, err := src.BulkLoad(ctx, chunk)
		if err != nil {
			return err
		}
		cmds := make(rueidis.Commands, 0, len(chunk))
		for _, k := range chunk {
			b, err := json.Marshal(vals[k])
			if err != nil {
				return err
			}
			cmds = append(cmds, p.c.B().Set().Key(p.ns+k).Value(rueidis.BinaryString(b)).Ex(redisTTL).Build())
		}
		for _, r := range p.c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *rueidisPeer) Close() error {
	p.c.Close()
	return nil
}
