package tiered

import (
	"context"
	"errors"
)

// This file is the tracing hook (Options.Tracer): spans around the cache's
// operations and loader calls, for a tracing system the caller chooses.
// Package tiered depends on no tracing library; the module
// github.com/tieredcache/tiered/otelcache implements Tracer with
// OpenTelemetry.
//
// The Redis round trips inside an operation are not traced here. The cache
// passes the context Tracer.Start returned to every Redis call it makes for
// the operation, so a tracing hook on the caller's go-redis client (go-redis's
// own redisotel instrumentation) records each command as a child of the
// cache's span. One instrumentation of Redis, the client's, keeps the names,
// attributes and options of those spans what the rest of the service's
// Redis spans are, and traces the commands the cache sends that no
// operation span covers (see below) the same way.
//
// What is traced: every public operation that may reach Redis, once it
// gets past L1, and every loader call (see Op). A read answered by L1 is
// not traced unless Options.TraceL1Hits asks: it is the hot path, and an
// OpenTelemetry span costs some 20 times the hit itself
// (docs/benchmarks.md, "Tracing"). With Tracer nil, an L1 hit makes one
// comparison with nil and one with a nil end function; with a Tracer set
// and TraceL1Hits off, one comparison more and no span. Background work that no caller
// waits for runs on contexts of its own and is not traced, except a
// refresh-ahead load (OpRefresh): outbox deliveries, server checks and
// breaker probes reach a redisotel hook as root spans.

// A Tracer starts a span around an operation of the cache. Start returns
// the context the operation runs in (the span's, so that spans started
// inside it, such as a go-redis hook's, become its children) and a function
// the cache calls once, when the operation ends. A Tracer must be safe for
// concurrent use; end may be called on another goroutine than Start.
//
// Start is called on the goroutine of the caller of the operation, except
// for OpLoad, OpLoadMany and OpRefresh, which run on the cache's. The
// SpanStart and SpanEnd values, and their strings, may be kept.
type Tracer interface {
	Start(ctx context.Context, s SpanStart) (context.Context, func(SpanEnd))
}

// Op names an operation of the cache that a Tracer sees.
type Op string

// The operations a Tracer sees. A read's span (get-or-load, get, get-many,
// get-many-cached) begins once L1 did not answer, or before L1 is
// consulted when Options.TraceL1Hits is set. Scoped's methods are traced
// as the Cache methods they are (Scoped.Clear as invalidate-tags).
const (
	OpGetOrLoad     Op = "get-or-load"     // Cache.GetOrLoad
	OpGet           Op = "get"             // Cache.Get
	OpGetMany       Op = "get-many"        // Cache.GetMany
	OpGetManyCached Op = "get-many-cached" // Cache.GetManyCached
	OpSet           Op = "set"             // Cache.Set and Cache.SetWithTTL
	OpDelete        Op = "delete"          // Cache.Delete
	OpClear         Op = "clear"           // Cache.Clear
	OpInvalidate    Op = "invalidate-tags" // Cache.InvalidateTags and Scoped.Clear
	// OpLoad is one call of a Loader (or of a BulkLoader for one key: a key
	// of a GetMany that waited for another node's lease, or a refresh). It
	// is a child of the read that led the flight; readers that joined the
	// flight (SpanEnd.Shared) have no load of their own.
	OpLoad Op = "load"
	// OpLoadMany is one call of a BulkLoader by GetMany, for SpanStart.Keys
	// keys, a child of the GetMany span.
	OpLoadMany Op = "load-many"
	// OpRefresh is a refresh-ahead of a key (Options.Fresh), in the
	// background: the refresh lease, the load (an OpLoad child) and the
	// fill. It is a child of the read that found the key due, which has
	// usually ended by then.
	OpRefresh Op = "refresh"
)

// SpanStart describes an operation that begins.
type SpanStart struct {
	Op        Op
	Namespace string // Options.Namespace
	// Key is the key of a one-key operation, as stored: a Scoped key is
	// "\x00" + a hash of the identity + "\x00" + the key (see Scoped). It
	// is empty for the other operations. Keys may be personal data: a
	// Tracer should not record them unless asked to.
	Key string
	// Keys is how many keys the operation covers: 1 for a one-key
	// operation; for a batch read, the keys L1 did not answer (every key
	// given, with Options.TraceL1Hits); for Delete and load-many, the keys
	// given; for invalidate-tags, the tags; 0 for Clear.
	Keys int
}

// SpanEnd describes how an operation ended.
type SpanEnd struct {
	// Err is what the operation returned, or, for a load, what the loader
	// returned (ErrNotFound is an answer, not a failure).
	Err error
	// Origin is where a one-key read's answer (a value or ErrNotFound)
	// came from; OriginNone for other errors and other operations.
	Origin Origin
	// Shared is set for a read that joined a flight another caller in this
	// process led: the loader and Redis calls are under the leader's span.
	Shared bool
}

// Origin is where a read's answer came from.
type Origin uint8

// The origins of an answer.
const (
	OriginNone   Origin = iota // no answer: an error, or not a one-key read
	OriginL1                   // L1 (only with Options.TraceL1Hits, or a flight's second look)
	OriginRedis                // Redis: a value, or a miss there that Get reports as ErrNotFound
	OriginLoader               // the loader
	OriginStale                // an expired value served by fail-safe (Options.MaxStale)
)

// String returns "none", "l1", "redis", "loader" or "stale".
func (o Origin) String() string {
	switch o {
	case OriginL1:
		return "l1"
	case OriginRedis:
		return "redis"
	case OriginLoader:
		return "loader"
	case OriginStale:
		return "stale"
	}
	return "none"
}

// startSpan starts a span of op with the cache's Tracer, which must be set.
func (c *Cache[V]) startSpan(ctx context.Context, op Op, key string, keys int) (context.Context, func(SpanEnd)) {
	return c.o.Tracer.Start(ctx, SpanStart{Op: op, Namespace: c.o.Namespace, Key: key, Keys: keys})
}

// readEnd is the SpanEnd of a one-key read: an origin only with an answer.
func readEnd(err error, from Origin, shared bool) SpanEnd {
	if err != nil && !errors.Is(err, ErrNotFound) {
		from = OriginNone
	}
	return SpanEnd{Err: err, Origin: from, Shared: shared}
}
