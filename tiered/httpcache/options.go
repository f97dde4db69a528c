package httpcache

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// Errors of the package; check them with errors.Is.
var (
	// ErrInvalidOptions is wrapped by the errors of New.
	ErrInvalidOptions = errors.New("httpcache: invalid options")
	// ErrCorrupt is wrapped by Codec.Unmarshal for bytes that are not an
	// encoded Response. The cache then counts the value corrupt, deletes
	// it and runs the handler again.
	ErrCorrupt = errors.New("httpcache: corrupt stored response")
	// ErrCodecType is wrapped by Codec for a value that is not a Response.
	ErrCodecType = errors.New("httpcache: the codec takes *Response values")
)

// Defaults for [Options].
const (
	// DefaultMaxBodyBytes is the largest body stored when
	// Options.MaxBodyBytes is zero: tiered.DefaultMaxValueBytes less 64 KiB
	// for the status and headers.
	DefaultMaxBodyBytes = tiered.DefaultMaxValueBytes - 64<<10
	// XCacheHeader is the response header that says how a request was
	// served: "hit", "miss" or "bypass".
	XCacheHeader = "X-Cache"
)

// DefaultStatuses are the status codes stored when Options.Statuses is
// nil: 200, 203, 204, 301, 404 and 410.
var DefaultStatuses = []int{
	http.StatusOK, http.StatusNonAuthoritativeInfo, http.StatusNoContent,
	http.StatusMovedPermanently, http.StatusNotFound, http.StatusGone,
}

// scopeKind tells the three kinds of Scope apart.
type scopeKind uint8

const (
	anonymous scopeKind = iota
	public
	perIdentity
)

// A Scope says whose response a route's response is, and so who may share
// it. The zero Scope is the safe default: responses are shared, but a
// request that carries credentials (an Authorization or a Cookie header)
// passes through uncached, since its response may be private.
type Scope struct {
	kind     scopeKind
	identity func(*http.Request) (string, bool)
}

// Public is the Scope of a route whose response is the same for everyone:
// requests are cached and served from the cache whether or not they carry
// credentials. Declare it only for a handler that never reads who the
// caller is.
var Public = Scope{kind: public}

// PerIdentity is the Scope of a route whose response depends on who asks.
// identity returns the caller's identity (a user ID, a tenant), or false
// when there is none, in which case the request passes through uncached.
// The identity's SHA-256 is part of the key (Redis never holds the
// identity itself), so each identity has entries of its own, and each
// entry is tagged with [IdentityTag] of the identity, so that
// InvalidateTags(ctx, IdentityTag(id)) drops all of one identity's entries.
//
// identity must read the request only (headers, a verified token, a value
// an authentication middleware put in its context): the handler then runs
// with that same request.
func PerIdentity(identity func(*http.Request) (string, bool)) Scope {
	return Scope{kind: perIdentity, identity: identity}
}

// Options configures a [Middleware]: one route, or a group of routes with
// the same rules. Every field is optional; each states its default.
type Options struct {
	// TTL is how long a response is stored when it carries neither
	// s-maxage nor max-age. Default 0: the cache's tiered.Options.TTL.
	TTL time.Duration

	// MaxTTL caps the TTL a response asks for with Cache-Control s-maxage
	// (preferred) or max-age. Default TTL; when both are zero, the cache's
	// tiered.Options.MaxTTL, which caps every TTL anyway.
	MaxTTL time.Duration

	// Scope says who may share a response; see [Scope]. Default the zero
	// Scope: requests with credentials pass through.
	Scope Scope

	// Vary lists the request headers that the route's responses may vary
	// on: their values are part of the key. A response whose Vary header
	// names another header (or "*") is not stored. Default none.
	Vary []string

	// Tags returns the tags of a request's response (for example
	// "product:42"); InvalidateTags of any of them drops it on every node.
	// Default: no tags (besides the identity tag of a PerIdentity route).
	Tags func(*http.Request) []string

	// Key returns the part of the key that names the resource. The
	// middleware adds the Vary values and the scope (the identity hash) to
	// it, so a custom Key cannot make two identities share an entry.
	// Default [DefaultKey]: host, path and sorted query.
	Key func(*http.Request) string

	// Statuses are the status codes that may be stored. Default
	// DefaultStatuses.
	Statuses []int

	// MaxBodyBytes is the largest body stored; a longer one is streamed to
	// its client and not stored. Keep it below the cache's
	// tiered.Options.MaxValueBytes less the headers' size: a response that
	// encodes to more is served but not stored. Default
	// DefaultMaxBodyBytes.
	MaxBodyBytes int

	// DisableXCache turns the X-Cache response header off. Default false:
	// every response through the middleware has one.
	DisableXCache bool

	// Now is the clock of Stored and Age, a seam for tests. Default
	// time.Now.
	Now func() time.Time
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
}

// withDefaults validates o and fills in defaults.
func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.TTL < 0 || r.MaxTTL < 0 {
		return r, invalid("TTL and MaxTTL must not be negative")
	}
	if r.MaxTTL == 0 {
		r.MaxTTL = r.TTL
	}
	if r.TTL > 0 && r.MaxTTL < r.TTL {
		return r, invalid("MaxTTL %v is less than TTL %v", r.MaxTTL, r.TTL)
	}
	if r.Scope.kind == perIdentity && r.Scope.identity == nil {
		return r, invalid("PerIdentity with a nil identity function")
	}
	if r.MaxBodyBytes < 0 {
		return r, invalid("MaxBodyBytes must not be negative")
	}
	if r.MaxBodyBytes == 0 {
		r.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if r.Statuses == nil {
		r.Statuses = DefaultStatuses
	}
	for _, s := range r.Statuses {
		if s < 200 || s > 999 || s == http.StatusPartialContent || s == http.StatusNotModified {
			return r, invalid("status %d cannot be stored", s)
		}
	}
	vary := make([]string, 0, len(r.Vary))
	for _, h := range r.Vary {
		h = http.CanonicalHeaderKey(strings.TrimSpace(h))
		if h == "" || h == "*" {
			return r, invalid("bad Vary header name %q", h)
		}
		if h == "Authorization" || h == "Cookie" {
			return r, invalid("Vary on %s: use PerIdentity to key by who asks", h)
		}
		vary = append(vary, h)
	}
	slices.Sort(vary)
	r.Vary = slices.Compact(vary)
	if r.Key == nil {
		r.Key = DefaultKey
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return r, nil
}
