package otelcache

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tieredcache/tiered/tiered"
)

// Span attributes of Tracer, beside NamespaceKey.
const (
	// KeyKey carries the key of a one-key operation, only with
	// TracerOptions.RecordKeys.
	KeyKey = attribute.Key("tiered.key")
	// KeysKey carries how many keys a batch operation covers
	// (tiered.SpanStart.Keys), on get-many, get-many-cached, load-many,
	// delete of several keys and invalidate-tags (its tags).
	KeysKey = attribute.Key("tiered.keys")
	// OriginKey carries where a one-key read's answer came from: "l1",
	// "redis", "loader" or "stale" (tiered.Origin); absent without one.
	OriginKey = attribute.Key("tiered.origin")
	// SharedKey is true on a read that joined a flight another caller led:
	// its load and Redis spans are under the leader's span.
	SharedKey = attribute.Key("tiered.shared")
)

// SpanPrefix starts the name of every span of Tracer: "tiered.get-or-load",
// "tiered.load", ... (the operation is a tiered.Op).
const SpanPrefix = "tiered."

// TracerOptions configures Tracer. A nil *TracerOptions means defaults.
type TracerOptions struct {
	// RecordKeys adds the key of one-key operations to their spans as
	// KeyKey. Keys are often personal data (a user ID, an e-mail) that a
	// trace backend should not hold, so they are left out unless asked
	// for. A Scoped key is recorded as stored: a hash of the identity,
	// not the identity (see tiered.Scoped). Default false.
	RecordKeys bool

	// Attributes are added to every span. Default none.
	Attributes []attribute.KeyValue
}

// Tracer returns a tiered.Tracer for tiered.Options.Tracer that starts an
// OpenTelemetry span on tr for each traced operation of the cache, named
// SpanPrefix + the operation ("tiered.get-or-load"), of kind internal,
// with the attributes NamespaceKey, KeysKey for batch operations, KeyKey
// with TracerOptions.RecordKeys, and TracerOptions.Attributes; it ends
// with OriginKey and SharedKey for reads. An error other than
// tiered.ErrNotFound (an answer, not a failure) is recorded on the span
// (RecordError) and sets its status to codes.Error.
//
// The loader's span is a child of the read that led its flight. Redis
// round trips are not traced here: add go-redis's redisotel tracing hook to
// the client the cache uses, and its spans nest under these (the cache
// passes the span's context to every Redis call of the operation).
//
// tr is usually tp.Tracer("github.com/tieredcache/tiered/otelcache") of
// the application's TracerProvider. A nil tr returns nil (no tracing).
func Tracer(tr trace.Tracer, opts *TracerOptions) tiered.Tracer {
	if tr == nil {
		return nil
	}
	t := &tracer{tr: tr}
	if opts != nil {
		t.keys = opts.RecordKeys
		t.attrs = append([]attribute.KeyValue(nil), opts.Attributes...)
	}
	return t
}

type tracer struct {
	tr    trace.Tracer
	keys  bool
	attrs []attribute.KeyValue
}

// batch reports whether s is an operation whose count of keys is worth an
// attribute (KeysKey).
func batch(s tiered.SpanStart) bool {
	switch s.Op {
	case tiered.OpGetMany, tiered.OpGetManyCached, tiered.OpLoadMany, tiered.OpInvalidate:
		return true
	case tiered.OpDelete:
		return s.Keys != 1
	}
	return false
}

func (t *tracer) Start(ctx context.Context, s tiered.SpanStart) (context.Context, func(tiered.SpanEnd)) {
	var buf [4]attribute.KeyValue
	attrs := append(buf[:0], NamespaceKey.String(s.Namespace))
	if batch(s) {
		attrs = append(attrs, KeysKey.Int(s.Keys))
	}
	if t.keys && s.Key != "" {
		attrs = append(attrs, KeyKey.String(s.Key))
	}
	attrs = append(attrs, t.attrs...)
	ctx, span := t.tr.Start(ctx, SpanPrefix+string(s.Op),
		trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
	return ctx, func(e tiered.SpanEnd) { end(span, e) }
}

// end ends span with e.
func end(span trace.Span, e tiered.SpanEnd) {
	if e.Origin != tiered.OriginNone {
		span.SetAttributes(OriginKey.String(e.Origin.String()))
	}
	if e.Shared {
		span.SetAttributes(SharedKey.Bool(true))
	}
	if e.Err != nil && !errors.Is(e.Err, tiered.ErrNotFound) {
		span.RecordError(e.Err)
		span.SetStatus(codes.Error, e.Err.Error())
	}
	span.End()
}
