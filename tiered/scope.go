package tiered

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// This file is scoped keys: entries that belong to one identity (a user, a
// tenant) and can never be mistaken for shared ones.

// scopeMark starts every scoped key and no shared one: checkKey rejects a
// shared key that starts with it (ErrKeyReserved).
const scopeMark = "\x00"

// Scoped is the view of a Cache in which every key belongs to one identity.
// Get it with Cache.Scope. Its keys are stored as
//
//	"\x00" + h + "\x00" + key
//
// where h is the hex of the first 16 bytes of SHA-256(identity): Redis and
// the invalidation messages hold the hash, never the identity, and a shared
// key (which may not start with "\x00") never equals a scoped one. Every
// entry loaded or written through the view is tagged ScopeTag(identity),
// so Clear drops all of the identity's entries, fleet-wide.
//
// A Scoped is a small value, safe for concurrent use; make one per request.
type Scoped[V any] struct {
	c      *Cache[V]
	prefix string
	tag    string
}

// Scope returns the view of c for identity.
//
// Use it for anything that depends on who asks. A loader runs once per key
// for all its callers, with the first caller's context values: a loader of
// a shared key that reads the user from its context (a key "me", a cart)
// caches one user's data for everyone. Under a Scoped key the identity is
// part of the key, so each identity has its own flight and its own entry.
func (c *Cache[V]) Scope(identity string) Scoped[V] {
	h := scopeHash(identity)
	return Scoped[V]{c: c, prefix: scopeMark + h + scopeMark, tag: scopeTag(h)}
}

// ScopeTag returns the tag every entry of Scope(identity) carries:
// InvalidateTags(ctx, ScopeTag(id)) is Scope(id).Clear(ctx).
func ScopeTag(identity string) string { return scopeTag(scopeHash(identity)) }

// scopeHash is what stands for an identity in keys and tags.
func scopeHash(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return hex.EncodeToString(sum[:16])
}

func scopeTag(hash string) string { return scopeMark + "scope:" + hash }

// Key returns the key under which c stores key for this identity.
func (s Scoped[V]) Key(key string) string { return s.prefix + key }

// loader wraps l: it tags the load with the scope's tag before l runs, and
// hands l the caller's key, not the stored one.
func (s Scoped[V]) loader(key string, l Loader[V]) Loader[V] {
	return LoaderFunc[V](func(ctx context.Context, _ string) (V, error) {
		if err := AddTags(ctx, s.tag); err != nil {
			var zero V
			return zero, err
		}
		return l.Load(ctx, key)
	})
}

// GetOrLoad is Cache.GetOrLoad of this identity's key. loader receives key
// as given here.
func (s Scoped[V]) GetOrLoad(ctx context.Context, key string, loader Loader[V]) (V, error) {
	if loader == nil {
		return s.c.getOrLoad(ctx, s.Key(key), nil)
	}
	return s.c.getOrLoad(ctx, s.Key(key), s.loader(key, loader))
}

// Get is Cache.Get of this identity's key.
func (s Scoped[V]) Get(ctx context.Context, key string) (V, error) {
	return s.c.get(ctx, s.Key(key))
}

// GetMany is Cache.GetMany of this identity's keys; loader and the result
// see the keys as given here.
func (s Scoped[V]) GetMany(ctx context.Context, keys []string, loader BulkLoader[V]) (map[string]V, error) {
	if loader == nil {
		return nil, ErrNilLoader
	}
	scoped := BulkLoaderFunc[V](func(ctx context.Context, ks []string) (map[string]V, error) {
		if err := AddTags(ctx, s.tag); err != nil {
			return nil, err
		}
		m, err := loader.BulkLoad(ctx, s.unscopeKeys(ks))
		if err != nil || m == nil {
			return nil, err
		}
		out := make(map[string]V, len(m))
		for k, v := range m {
			out[s.Key(k)] = v
		}
		return out, nil
	})
	res, err := s.c.many(ctx, s.keys(keys), scoped, false)
	return s.unscope(res), s.unscopeErr(err)
}

// GetManyCached is Cache.GetManyCached of this identity's keys.
func (s Scoped[V]) GetManyCached(ctx context.Context, keys []string) (map[string]V, error) {
	res, err := s.c.many(ctx, s.keys(keys), nil, false)
	return s.unscope(res), s.unscopeErr(err)
}

// Set is Cache.Set of this identity's key, tagged with the scope's tag. If
// the tag cannot be recorded, the key is deleted instead (an untagged value
// would survive Clear) and the error returned.
func (s Scoped[V]) Set(ctx context.Context, key string, v V) error {
	return s.tracedSet(ctx, key, v, 0)
}

// SetWithTTL is Cache.SetWithTTL of this identity's key; see Set.
func (s Scoped[V]) SetWithTTL(ctx context.Context, key string, v V, ttl time.Duration) error {
	if ttl <= 0 || ttl > s.c.o.MaxTTL {
		return s.c.SetWithTTL(ctx, key, v, ttl) // its ErrInvalidTTL
	}
	return s.tracedSet(ctx, key, v, ttl)
}

// tracedSet is set in a span of OpSet, when the cache has a Tracer.
func (s Scoped[V]) tracedSet(ctx context.Context, key string, v V, ttl time.Duration) error {
	if s.c.o.Tracer == nil { // do not build the stored key twice
		return s.set(ctx, key, v, ttl)
	}
	return s.c.runWrite(ctx, OpSet, s.Key(key), 1, func(ctx context.Context) error { return s.set(ctx, key, v, ttl) })
}

func (s Scoped[V]) set(ctx context.Context, key string, v V, ttl time.Duration) error {
	k := s.Key(key)
	if err := s.c.checkKey(k); err != nil {
		return err
	}
	if err := s.c.addTags(ctx, []string{k}, []string{s.tag}); err != nil {
		if derr := s.c.delete(ctx, k); derr != nil {
			return derr
		}
		return err
	}
	return s.c.set(ctx, k, v, ttl)
}

// Delete is Cache.Delete of this identity's keys.
func (s Scoped[V]) Delete(ctx context.Context, keys ...string) error {
	return s.c.tracedDelete(ctx, s.keys(keys))
}

// Clear drops every entry of this identity, from Redis and from every
// node's L1: InvalidateTags of the scope's tag.
func (s Scoped[V]) Clear(ctx context.Context) error {
	return s.c.InvalidateTags(ctx, s.tag)
}

// keys returns the stored keys of keys.
func (s Scoped[V]) keys(keys []string) []string {
	stored := make([]string, len(keys))
	for i, k := range keys {
		stored[i] = s.Key(k)
	}
	return stored
}

// unscopeKeys returns the keys given to the view for stored keys.
func (s Scoped[V]) unscopeKeys(stored []string) []string {
	keys := make([]string, len(stored))
	for i, k := range stored {
		keys[i] = k[len(s.prefix):]
	}
	return keys
}

func (s Scoped[V]) unscope(m map[string]V) map[string]V {
	if m == nil {
		return nil
	}
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k[len(s.prefix):]] = v
	}
	return out
}

func (s Scoped[V]) unscopeErr(err error) error {
	be, ok := err.(*BatchError)
	if !ok {
		return err
	}
	errs := make(map[string]error, len(be.Errs))
	for k, e := range be.Errs {
		if len(k) >= len(s.prefix) && k[:len(s.prefix)] == s.prefix {
			k = k[len(s.prefix):]
		}
		errs[k] = e
	}
	return &BatchError{Errs: errs}
}
