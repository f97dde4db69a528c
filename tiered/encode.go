package tiered

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tieredcache/tiered/l2"
)

// This file turns values into the envelopes stored in Redis, with their
// TTLs, and back into what every node returns (roundTrip).

// sealed is a value ready for Redis, and the value every node decodes
// from it.
type sealed[V any] struct {
	v        V             // what the codec gives back (see roundTrip)
	env      []byte        // the envelope
	ttl      time.Duration // until its logical expiry; bounds its L1 TTL
	redisTTL time.Duration // its Redis TTL: ttl, plus MaxStale for a value
	envelope l2.Envelope   // env decoded, without its payload
}

// meta returns the meta of an L1 entry holding s's value.
func (s sealed[V]) meta() meta { return metaOf(s.envelope) }

// encode returns the envelope for v (or for "not found") and its TTLs.
// override, when > 0, replaces the cache's TTL (see OverrideTTL).
func (c *Cache[V]) encode(v V, negative bool, override time.Duration) (sealed[V], error) {
	if negative {
		ttl := c.negativeTTL(override)
		env := l2.Envelope{Negative: true, Expiry: time.Now().Add(ttl)}
		return sealed[V]{env: env.AppendBinary(make([]byte, 0, l2.HeaderSize)), ttl: ttl, redisTTL: ttl, envelope: env}, nil
	}
	payload, err := c.o.Codec.Marshal(v)
	if err != nil {
		c.stats.rejected.Add(1)
		return sealed[V]{}, wrap(err, ErrEncode)
	}
	if len(payload) > c.o.MaxValueBytes {
		c.stats.rejected.Add(1)
		return sealed[V]{}, fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(payload), c.o.MaxValueBytes)
	}
	if v, err = c.roundTrip(v, payload); err != nil {
		c.stats.rejected.Add(1)
		return sealed[V]{}, err
	}
	ttl := c.o.TTL
	if override > 0 {
		ttl = min(override, c.o.MaxTTL)
	}
	base := ttl
	if j := c.scaled(c.o.Jitter, base); j > 0 {
		ttl += rand.N(j)
	}
	now := time.Now()
	env := l2.Envelope{Expiry: now.Add(ttl), Payload: payload}
	if c.o.Fresh > 0 {
		env.Fresh = now.Add(c.scaled(c.o.Fresh, base))
	}
	b := env.AppendBinary(make([]byte, 0, l2.HeaderSize+len(payload)))
	env.Payload = nil
	return sealed[V]{v: v, env: b, ttl: ttl, redisTTL: ttl + c.o.MaxStale, envelope: env}, nil
}

// roundTrip returns the value the other nodes decode from payload, v's
// encoding, so that this node caches and returns the same value as they
// do: a codec may be lossy (JSON turns invalid UTF-8 into U+FFFD and drops
// unexported fields). It costs one Unmarshal per Set and per load (see
// docs/benchmarks.md), skipped for a codec that declares itself lossless.
// A payload that does not decode would be corrupt on every other node: it
// is an encoding error.
func (c *Cache[V]) roundTrip(v V, payload []byte) (V, error) {
	if c.lossless {
		return v, nil
	}
	var rt V
	if err := c.o.Codec.Unmarshal(payload, &rt); err != nil {
		return v, wrap(fmt.Errorf("the codec cannot decode its own encoding: %w", err), ErrEncode)
	}
	return rt, nil
}

// negativeTTL is the TTL of a cached "not found", given a load's override.
func (c *Cache[V]) negativeTTL(override time.Duration) time.Duration {
	if override > 0 {
		return min(override, c.o.MaxTTL)
	}
	return c.o.NegativeTTL
}

// scaled returns d, a duration set for Options.TTL, in proportion for an
// entry whose own TTL is ttl.
func (c *Cache[V]) scaled(d, ttl time.Duration) time.Duration {
	if d <= 0 || ttl == c.o.TTL {
		return d
	}
	return time.Duration(float64(d) * float64(ttl) / float64(c.o.TTL))
}
