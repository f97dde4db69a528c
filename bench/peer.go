package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file holds what every workload shares: the value, the source of
// truth the loaders read (the "database"), and the peer interface that
// each library implements in a file of its own (peer_*.go).

// Value is what every library caches: a small struct, about 250 bytes
// as JSON, as a user would cache a row.
type Value struct {
	ID      string `json:"id" msgpack:"id"`
	Version int64  `json:"version" msgpack:"version"`
	Payload string `json:"payload" msgpack:"payload"`
}

// payloadBytes is the length of every Value's payload: random base64, which
// neither JSON nor go-redis/cache's s2 compression can shrink.
const payloadBytes = 200

// payload is the payload of every value, made once per run.
var payload = func() string {
	b := make([]byte, payloadBytes*3/4)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}()

// Cache timings of every library, so that they differ only in mechanism.
const (
	redisTTL = 10 * time.Minute // the Redis TTL of every value
	localTTL = time.Minute      // the longest a value lives in a local cache
)

// source is the source of truth: a version per key, bumped by writers, and
// a count of loads per key. A load costs delay (time.Sleep, so about 1 ms
// at least on Linux: Go's timers have millisecond resolution there). It is
// safe for concurrent use.
type source struct {
	delay time.Duration
	loads atomic.Int64

	mu       sync.Mutex
	versions map[string]int64 // guarded by mu; absent means version 1
	perKey   map[string]int   // guarded by mu; loads per key
}

func newSource(delay time.Duration) *source {
	return &source{delay: delay, versions: map[string]int64{}, perKey: map[string]int{}}
}

// leaderKey marks a caller's context so that the loader can tell which
// caller's flight ran it (see markLeader).
type leaderKey struct{}

// withLeaderFlag returns ctx carrying flag, which Load sets if it runs on
// this context (or one derived from it: tiered's flights keep the first
// caller's values).
func withLeaderFlag(ctx context.Context, flag *atomic.Bool) context.Context {
	return context.WithValue(ctx, leaderKey{}, flag)
}

// Load returns key's current value, after the source's delay.
func (s *source) Load(ctx context.Context, key string) (Value, error) {
	if f, ok := ctx.Value(leaderKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	s.loads.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perKey[key]++
	return s.valueLocked(key), nil
}

// BulkLoad returns the current values of keys, after one delay.
func (s *source) BulkLoad(ctx context.Context, keys []string) (map[string]Value, error) {
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	s.loads.Add(int64(len(keys)))
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Value, len(keys))
	for _, k := range keys {
		s.perKey[k]++
		out[k] = s.valueLocked(k)
	}
	return out, nil
}

func (s *source) valueLocked(key string) Value {
	v := s.versions[key]
	if v == 0 {
		v = 1
	}
	return Value{ID: key, Version: v, Payload: payload}
}

// Bump makes a new version of key and returns it.
func (s *source) Bump(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.versions[key]
	if v == 0 {
		v = 1
	}
	s.versions[key] = v + 1
	return v + 1
}

// LoadsOf returns how many times key was loaded.
func (s *source) LoadsOf(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perKey[key]
}

// A peer is one node's cache of one library, used the way its
// documentation shows, with a cache-aside read. Each peer has its own
// Redis client(s) and local cache; peers share nothing but the server and
// the source. A peer is safe for concurrent use, except Close.
type peer interface {
	// Get returns key's value: from the local cache, else Redis, else
	// src.Load (storing what it loaded).
	Get(ctx context.Context, key string, src *source) (Value, error)
	// GetMany is Get of many keys, through the library's batch read or,
	// lacking one, a loop of Get.
	GetMany(ctx context.Context, keys []string, src *source) (map[string]Value, error)
	// Invalidate is what a writer calls after it changed key in the
	// source: key leaves Redis and this node's local cache, and, if the
	// library can, every other node's.
	Invalidate(ctx context.Context, key string) error
	// Prefill writes the current values of keys into Redis, in this
	// library's encoding, without touching any local cache.
	Prefill(ctx context.Context, keys []string, src *source) error
	// Close releases the peer's clients.
	Close() error
}

// kind is one library under test.
type kind struct {
	name string // as the table shows it
	// open builds one node whose Redis keys start with ns.
	open func(ctx context.Context, addr, ns string) (peer, error)
	// invalidates says whether a write on one node drops the key from
	// the other nodes' local caches.
	invalidates bool
	// local says whether the library has a local (in-process) cache.
	local bool
}

// kinds are the libraries, in the order of the table's columns.
var kinds = []kind{
	{name: "tiered", open: openTiered, invalidates: true, local: true},
	{name: "go-redis/cache", open: openGoCache, invalidates: false, local: true},
	{name: "rueidis", open: openRueidis, invalidates: true, local: true},
	{name: "go-redis", open: openGoRedis, invalidates: true, local: false},
}

// kindNames returns the names of kinds.
func kindNames() []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.name
	}
	return names
}

// openNodes opens count nodes of k on addr, sharing namespace ns; close
// them with closeNodes, also when it fails.
func openNodes(ctx context.Context, k kind, addr, ns string, count int) ([]peer, error) {
	nodes := make([]peer, 0, count)
	for i := range count {
		p, err := k.open(ctx, addr, ns)
		if err != nil {
			return nodes, fmt.Errorf("%s node %d: %w", k.name, i, err)
		}
		nodes = append(nodes, p)
	}
	return nodes, nil
}

// openEach opens one node of every kind of kinds on addr, each in a
// namespace of its own (prefix and its index); close them with closeNodes,
// also when it fails.
func openEach(ctx context.Context, kinds []kind, addr, prefix string) ([]peer, error) {
	nodes := make([]peer, 0, len(kinds))
	for i, k := range kinds {
		p, err := k.open(ctx, addr, prefix+strconv.Itoa(i))
		if err != nil {
			return nodes, fmt.Errorf("%s: %w", k.name, err)
		}
		nodes = append(nodes, p)
	}
	return nodes, nil
}

func closeNodes(nodes []peer) {
	for _, p := range nodes {
		_ = p.Close()
	}
}

// goRedisClient is the go-redis client of every go-redis based node:
// ContextTimeoutEnabled, as tiered asks its users to set, and go-redis's
// defaults otherwise (pool of 10 per CPU, 3 s read timeout).
func goRedisClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
}

// A diagnoser is a peer that can tell where its reads went (tiered's
// Stats), for the progress log.
type diagnoser interface{ diagnostics() string }

// logDiagnostics logs p's diagnostics, if it has any.
func logDiagnostics(what string, p peer) {
	if d, ok := p.(diagnoser); ok {
		logf("%s: %s", what, d.diagnostics())
	}
}
