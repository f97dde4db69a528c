package tiered

import "context"

// This file is fail-safe: serving a value that expired when the loader
// cannot give a fresh one (Options.MaxStale, Options.SoftTimeout).

// ReadInfo reports how a read was served, for a caller that wants to know.
// Put a pointer to one in the read's context with WithReadInfo; GetOrLoad,
// GetMany, Get and GetManyCached fill it in before they return. One ReadInfo
// serves one read at a time.
//
// A read that served an expired value returns it with a nil error (that is
// the point of fail-safe: callers carry on), so ReadInfo and Stats.StaleServed
// are how a service notices, for example to mark a response as stale.
type ReadInfo struct {
	// Stale lists the keys the read answered with an expired value
	// through fail-safe (see Options.MaxStale), in no particular order.
	Stale []string
	// StaleCause is why the first of them was served stale: the loader's
	// error, or an error wrapping ErrLoadTimeout or ErrSoftTimeout.
	StaleCause error
}

type readInfoKey struct{}

// WithReadInfo returns a context that makes a read fill in info.
func WithReadInfo(ctx context.Context, info *ReadInfo) context.Context {
	return context.WithValue(ctx, readInfoKey{}, info)
}

// noteStale records in ctx's ReadInfo, if any, that key was served stale.
func noteStale(ctx context.Context, key string, cause error) {
	info, ok := ctx.Value(readInfoKey{}).(*ReadInfo)
	if !ok || info == nil {
		return
	}
	if info.StaleCause == nil {
		info.StaleCause = cause
	}
	info.Stale = append(info.Stale, key)
}
