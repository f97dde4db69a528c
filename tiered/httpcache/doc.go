// Package httpcache is net/http middleware that caches responses in a
// [tiered.Cache]: in each process's memory and in Redis, coherent across a
// fleet, with one handler run per cold key for the whole fleet.
//
// # Mechanism
//
// [New] returns a [Middleware] for one route (or a group of routes with the
// same rules); its [Middleware.Handler] wraps the route's handler. For a
// cacheable request the middleware builds a key and calls the cache's
// GetOrLoad. On a miss the loader, which runs once per key per fleet (the
// cache's flight and Redis lease), tags the entry (tiered.AddTags, before
// the handler reads anything), then runs the handler into a recorder and
// returns the recorded [Response]; its TTL is set with tiered.OverrideTTL.
// Every request waiting on that flight is served from the result, each with
// its own copy of the headers. Responses are stored with [Codec], a compact
// binary encoding.
//
// # Safety rules
//
//   - Only GET and HEAD are cached; a Range request passes through. HEAD
//     shares GET's entry: on a miss the handler runs as a GET so that the
//     stored body is whole, and a HEAD gets the headers only.
//   - A response is stored only if HTTP allows a shared cache to: no
//     Set-Cookie, no Cache-Control private, no-store or no-cache, no
//     Trailer, a status in [Options.Statuses] (default 200, 203, 204, 301,
//     404, 410), a max-age or s-maxage above zero if it has one, and a Vary
//     that names only headers of [Options.Vary] (which are in the key).
//     Such a response still reaches the client whose request ran the
//     handler (streamed as the handler writes it); the other requests of
//     that flight run the handler themselves, uncached: a response that
//     may not be stored is never shared.
//   - A request with credentials (Authorization or Cookie) passes through
//     uncached, unless the route declares a [Scope]: [Public] (the response
//     is the same for everyone) or [PerIdentity] (the entry lives in the
//     cache's tiered.Scope of the identity: its key carries the identity's
//     hash, and it is tagged [IdentityTag]; without an identity the request
//     passes through). A custom [Options.Key] cannot drop the scope: its
//     key is stored inside it.
//   - The handler always runs with the request whose key it fills. A
//     handler under a shared key must not read who the caller is (from a
//     cookie, from the context): its response would be served to
//     everyone. That is what PerIdentity is for.
//
// # Keys
//
// A key is "GET " + Options.Key(r) (default [DefaultKey]: host, escaped
// path, query sorted by name), one line per Options.Vary header with the
// request's values; a PerIdentity route stores it in the identity's
// tiered.Scope, which prefixes the identity's hash. A key over the cache's
// MaxKeyBytes passes through uncached.
//
// # Freshness and validation
//
// A response is stored for its s-maxage, else its max-age, capped by
// [Options.MaxTTL], else for [Options.TTL] (default the cache's TTL).
// Hits carry Age, the seconds since the response was stored, and its
// original Date (set at store time when the handler set none). Hop-by-hop
// headers are not stored. A 200 or 203 response without an ETag gets a strong one
// made from its body's SHA-256; a request whose If-None-Match matches the
// ETag of a cached response gets 304 Not Modified from the cache.
//
// # Large bodies
//
// A body is buffered up to [Options.MaxBodyBytes]. Past that, the recorder
// sends what it has to the leading request's client and streams the rest
// through; nothing is stored, and the other requests of the flight run the
// handler themselves.
//
// # X-Cache
//
// Every response gets an X-Cache header, [Hit], [Miss] or [Bypass], unless
// [Options.DisableXCache].
//
// docs/http.md in the repository has examples of each rule.
package httpcache
