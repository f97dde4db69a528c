package httpcache

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// This file holds the HTTP rules: what may be stored, for how long, which
// headers are kept, keys, ETags.

// hopByHop are the headers that concern one connection, never stored
// (RFC 9110 section 7.6.1), with those the middleware sets itself.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Age", XCacheHeader, "Content-Length",
}

// directives parses the Cache-Control headers of h into lower-case
// directive names and their values ("" when none).
func directives(h http.Header) map[string]string {
	var d map[string]string
	for _, line := range h.Values("Cache-Control") {
		for part := range strings.SplitSeq(line, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			name, val, _ := strings.Cut(part, "=")
			if d == nil {
				d = make(map[string]string)
			}
			d[strings.ToLower(strings.TrimSpace(name))] = strings.Trim(strings.TrimSpace(val), `"`)
		}
	}
	return d
}

// maxAge returns the response's s-maxage, or else its max-age, and
// whether it has one. A malformed value counts as 0: do not store.
func maxAge(d map[string]string) (time.Duration, bool) {
	for _, name := range []string{"s-maxage", "max-age"} {
		if v, ok := d[name]; ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return 0, true
			}
			return time.Duration(min(n, int64(1<<31))) * time.Second, true
		}
	}
	return 0, false
}

// storable reports whether a response with status and header may be
// stored under the rules of m, and its TTL (0: the cache's own).
func (m *Middleware) storable(status int, h http.Header) (ttl time.Duration, ok bool) {
	if !slices.Contains(m.o.Statuses, status) {
		return 0, false
	}
	if len(h.Values("Set-Cookie")) > 0 || len(h.Values("Trailer")) > 0 {
		return 0, false
	}
	d := directives(h)
	for _, no := range []string{"no-store", "no-cache", "private"} {
		if _, ok := d[no]; ok {
			return 0, false
		}
	}
	for _, line := range h.Values("Vary") {
		for name := range strings.SplitSeq(line, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			if _, ok := slices.BinarySearch(m.o.Vary, name); !ok {
				return 0, false // "*", or a header the key does not hold
			}
		}
	}
	ttl = m.o.TTL
	if age, ok := maxAge(d); ok {
		if age <= 0 {
			return 0, false
		}
		ttl = age
		if m.o.MaxTTL > 0 {
			ttl = min(ttl, m.o.MaxTTL)
		}
	}
	return ttl, true
}

// storedHeader returns what is stored of h: a copy without hop-by-hop
// headers (and those named by Connection).
func storedHeader(h http.Header) http.Header {
	s := h.Clone()
	if s == nil {
		s = make(http.Header)
	}
	for _, line := range h.Values("Connection") {
		for name := range strings.SplitSeq(line, ",") {
			if name = strings.TrimSpace(name); name != "" {
				s.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		s.Del(name)
	}
	return s
}

// strongETag is the ETag the middleware gives a body whose handler set
// none: a strong validator from the body's SHA-256 (its first 16 bytes,
// base64url), so equal bodies get equal ETags on every node.
func strongETag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// notModified reports whether the request's If-None-Match matches etag,
// with the weak comparison RFC 9110 section 13.1.2 prescribes for it.
func notModified(r *http.Request, etag string) bool {
	inm := r.Header.Values("If-None-Match")
	if len(inm) == 0 || etag == "" {
		return false
	}
	for _, line := range inm {
		for tag := range strings.SplitSeq(line, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == strings.TrimPrefix(etag, "W/") {
				return true
			}
		}
	}
	return false
}

// conditional are the request headers the handler does not see when it
// runs to fill the cache: what it stores must be the full response.
var conditional = []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range", "Range"}

// DefaultKey is the default Options.Key: the request's host, escaped path
// and query with its parameters sorted by name (the order of the values
// of one name is kept). A query that does not parse is used as it is.
func DefaultKey(r *http.Request) string {
	q := r.URL.RawQuery
	if v, err := url.ParseQuery(q); err == nil {
		q = v.Encode()
	}
	return r.Host + r.URL.EscapedPath() + "?" + q
}

// IdentityTag returns the tag of every entry cached for identity by a
// PerIdentity route: tiered.ScopeTag(identity), since such entries live in
// the cache's Scope of the identity. After a change to what one user sees
// everywhere (a logout, new permissions), InvalidateTags(ctx,
// IdentityTag(id)) drops all of that user's entries. The tag holds a hash
// of the identity, never the identity.
func IdentityTag(identity string) string {
	return tiered.ScopeTag(identity)
}

// key returns the cache key of r. Layout, fields separated by newlines
// (which neither a host, an escaped path, a canonical query nor a header
// value holds):
//
//	GET <Options.Key(r)>
//	<Vary header>: <its values, comma-joined>   (one line per Options.Vary)
//
// A per-identity route stores it in the identity's tiered.Scope, which
// prefixes it with the identity's hash.
func (m *Middleware) key(r *http.Request) string {
	var b strings.Builder
	b.WriteString("GET ")
	b.WriteString(m.o.Key(r))
	for _, h := range m.o.Vary {
		b.WriteString("\n")
		b.WriteString(h)
		b.WriteString(": ")
		b.WriteString(strings.Join(r.Header.Values(h), ", "))
	}
	return b.String()
}
