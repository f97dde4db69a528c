package l2

import "github.com/redis/go-redis/v9"

// Every script touches only keys that share the hash tag {<key>}, so each runs
// on one Redis Cluster slot. Announcements are published by the same script
// that changes the data, after the change: the change and its announcement
// cannot part. The script is handed the command (PUBLISH, or SPUBLISH for a
// sharded bus: see [Announce]) and the channel, so one script serves both.

// setScript writes a value, deletes its lease (so that a load racing this
// write is discarded, and an uncacheable marker is cleared: the value that
// could not be cached has just been replaced), and announces the write.
//
//	KEYS[1] value  KEYS[2] lease
//	ARGV[1] value  ARGV[2] TTL in ms  ARGV[3] PUBLISH or SPUBLISH  ARGV[4] channel  ARGV[5..] messages
var setScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
for i = 5, #ARGV do redis.call(ARGV[3], ARGV[4], ARGV[i]) end
return 1
`)

// deleteScript deletes values and their leases, then announces it.
//
//	KEYS    value and lease keys
//	ARGV[1] PUBLISH or SPUBLISH  ARGV[2] channel  ARGV[3..] messages
var deleteScript = redis.NewScript(`
for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
for i = 3, #ARGV do redis.call(ARGV[1], ARGV[2], ARGV[i]) end
return 1
`)

// uncacheableMarker is what the lease key holds, instead of a token, after
// [Store.MarkUncacheable]. Tokens are base32 (rand.Text) and never equal it.
// The scripts spell it '!'.
const uncacheableMarker = "!"

// expiryLua defines expiry(v), the logical expiry in Unix ms of envelope
// bytes v: the big-endian uint64 at bytes 4..11 (1-based), which every
// envelope version keeps there (envelope.go). It returns nil for bytes that
// are not an envelope (shorter than 11 bytes, or without the magic byte
// 0xE7 = 231): the caller is then handed them, decodes them, finds them
// corrupt and deletes them. Lua numbers are doubles, which hold Unix
// milliseconds exactly.
const expiryLua = `
local function expiry(v)
  if #v < 11 or string.byte(v, 1) ~= 231 then return nil end
  local n = 0
  for i = 4, 11 do n = n * 256 + string.byte(v, i) end
  return n
end
`

// getOrLeaseScript returns the value if there is one that has not expired;
// otherwise, unless the lease key holds the uncacheable marker, it tries to
// take the lease, and when another holds it, marks that someone waits and
// returns the lease's remaining TTL. Doing it all in one script closes the
// window between "miss" and "take the lease" in which a value could land.
// An expired value (logical expiry <= now; Redis keeps it up to MaxStale
// longer) counts as absent, but is returned too, for a caller whose load
// fails to fall back on.
//
//	KEYS[1] value  KEYS[2] lease  KEYS[3] waiters
//	ARGV[1] token  ARGV[2] lease TTL in ms  ARGV[3] now, Unix ms
//
// Returns {1, value} | {2, 0} (lease taken) | {3, pttl} (lease held by
// another) | {4, 0} (uncacheable marker); states 2 to 4 append the expired
// value when there is one.
var getOrLeaseScript = redis.NewScript(expiryLua + `
local v = redis.call('GET', KEYS[1])
if v then
  local e = expiry(v)
  if not e or e > tonumber(ARGV[3]) then return {1, v} end
end
local function reply(state, n)
  if v then return {state, n, v} end
  return {state, n}
end
local holder = redis.call('GET', KEYS[2])
if holder == '!' then return reply(4, 0) end
if not holder then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return reply(2, 0)
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return reply(3, redis.call('PTTL', KEYS[2]))
`)

// refreshLeaseScript takes the lease for a refresh-ahead load of a value
// the caller read, unless the value was replaced since: then it returns
// the new one. Unlike getOrLeaseScript it does not mark waiters when the
// lease is held: the caller serves the value it has and does not wait.
// "Replaced" is told by the logical expiry, compared as the 8 raw bytes
// (exact, with no detour through Lua's doubles); bytes that are not an
// envelope are returned as found, for the caller to delete.
//
//	KEYS[1] value  KEYS[2] lease
//	ARGV[1] token  ARGV[2] lease TTL in ms  ARGV[3] the expiry seen, 8 bytes big-endian
//
// Returns {1, value} | {2, 0} (lease taken) | {3, pttl} (lease held) |
// {4, 0} (uncacheable marker).
var refreshLeaseScript = redis.NewScript(expiryLua + `
local v = redis.call('GET', KEYS[1])
if v and (not expiry(v) or string.sub(v, 4, 11) ~= ARGV[3]) then return {1, v} end
local holder = redis.call('GET', KEYS[2])
if holder == '!' then return {4, 0} end
if not holder then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {2, 0}
end
return {3, redis.call('PTTL', KEYS[2])}
`)

// markUncacheableScript replaces the holder's token by the uncacheable
// marker, so that the nodes that come next load without a lease instead of
// taking it one after another, each failing to cache the same value; and
// wakes waiters, who then find the marker.
//
//	KEYS[1] lease  KEYS[2] waiters
//	ARGV[1] token  ARGV[2] marker TTL in ms  ARGV[3] PUBLISH or SPUBLISH  ARGV[4] channel  ARGV[5..] messages
//
// Returns 1 when marked, 0 when the lease was lost.
var markUncacheableScript = redis.NewScript(`
if ARGV[1] == '!' or redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], '!', 'PX', ARGV[2])
if redis.call('DEL', KEYS[2]) == 1 then
  for i = 5, #ARGV do redis.call(ARGV[3], ARGV[4], ARGV[i]) end
end
return 1
`)

// fillScript is the compare-and-set of a lease holder: it writes the value
// only while the lease still holds the holder's token, then releases the
// lease and, if anyone waited, publishes the wake messages. A token equal to
// the uncacheable marker (forged: real tokens never are) holds nothing.
//
//	KEYS[1] value  KEYS[2] lease  KEYS[3] waiters
//	ARGV[1] token  ARGV[2] value  ARGV[3] TTL in ms  ARGV[4] PUBLISH or SPUBLISH  ARGV[5] channel  ARGV[6..] messages
//
// Returns 1 when written, 0 when the lease was lost (the fill is discarded).
var fillScript = redis.NewScript(`
if ARGV[1] == '!' or redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
if redis.call('DEL', KEYS[3]) == 1 then
  for i = 6, #ARGV do redis.call(ARGV[4], ARGV[5], ARGV[i]) end
end
return 1
`)

// releaseScript deletes the lease only if it still holds the token (never a
// plain DEL; never the uncacheable marker) and wakes waiters.
//
//	KEYS[1] lease  KEYS[2] waiters
//	ARGV[1] token  ARGV[2] PUBLISH or SPUBLISH  ARGV[3] channel  ARGV[4..] messages
var releaseScript = redis.NewScript(`
if ARGV[1] == '!' or redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('DEL', KEYS[2]) == 1 then
  for i = 4, #ARGV do redis.call(ARGV[2], ARGV[3], ARGV[i]) end
end
return 1
`)

// deleteIfEqualScript deletes a value only if it still holds the given bytes:
// removing a corrupt value must not remove a good one written since.
//
//	KEYS[1] value  ARGV[1] expected bytes
var deleteIfEqualScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)
