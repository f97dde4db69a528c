package l2

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"
)

// The lease protocol (Facebook's memcache leases, adapted to Redis):
//
//  1. On a miss, a node runs [Store.GetOrLease]: one script that returns the
//     value if it landed meanwhile, else takes the lease with
//     SET ns:{k}:lease <random token> PX <ttl> if it is free, else records
//     that someone waits and reports how long the lease still runs.
//  2. The holder loads and calls [Store.Fill]: a compare-and-set that writes
//     the value only while the lease still holds its token, then deletes the
//     lease and, if anyone waited, publishes a wake message. [Store.Set] and
//     [Store.Delete] delete the lease, so a load that raced a write is
//     discarded instead of writing an old value into Redis.
//  3. A holder that fails calls [Store.Release] (compare-and-delete, never a
//     plain DEL). A holder that dies leaves the lease to expire; a waiter's
//     next GetOrLease then takes it over.
//  4. A holder that loaded a value it cannot cache (too large) calls
//     [Store.MarkUncacheable]: the lease key then holds a marker instead of
//     a token until its TTL runs out or a Set or Delete of the key removes
//     it, and GetOrLease reports [Uncacheable] instead of handing the lease
//     to the next node, which would load, fail to cache and release in turn.
//
// A value is absent for GetOrLease when its logical expiry (in the envelope,
// not the Redis TTL) has passed: with fail-safe, Redis keeps values past it.
// GetOrLease then returns the expired bytes beside the lease state, for a
// caller whose load fails to serve instead. [Store.RefreshLease] takes the
// lease for a refresh-ahead load of a value that has not expired.
//
// The lease is an efficiency device: it makes the fleet load a cold key once.
// Correctness does not depend on it: the compare-and-set keeps stale loads
// out of Redis, and the L1 fill guard keeps them out of each process.

// Lease is a held lease on one key.
type Lease struct {
	Key   string // the user key
	Token string // random; proves ownership to Fill and Release
}

// LeaseState is the outcome of [Store.GetOrLease] and [Store.RefreshLease].
type LeaseState int

const (
	// Found: Value holds the envelope bytes that were in Redis (for
	// GetOrLease, a value that has not expired, or bytes that are not an
	// envelope, which the caller should find corrupt and delete).
	Found LeaseState = iota + 1
	// Acquired: Lease is now held by the caller, who should load and Fill
	// (or Release, or MarkUncacheable).
	Acquired
	// Held: another node holds the lease for about Remaining more.
	Held
	// Uncacheable: a holder found the key's value too large to cache and
	// marked it so (see [Store.MarkUncacheable]). The caller should load
	// without a lease and not write the result to Redis. The state lasts
	// until the marker's TTL runs out or a Set or Delete of the key.
	Uncacheable
)

// LeaseResult is what [Store.GetOrLease] or [Store.RefreshLease] found.
type LeaseResult struct {
	State     LeaseState
	Value     []byte        // with Found
	Lease     Lease         // with Acquired
	Remaining time.Duration // with Held
	// Stale, with Acquired, Held and Uncacheable from GetOrLease, holds the
	// envelope bytes of the key's expired value if Redis still has one
	// (fail-safe): not to be served as a hit, but in place of a load that
	// failed. Nil when there is none (and always from RefreshLease).
	Stale []byte
}

// GetOrLease returns k's value if there is one that has not expired at now,
// else takes k's lease for ttl if it is free, else reports that another
// holds it or that the key is uncacheable. See the protocol above. now is
// the caller's clock: a value expires when now reaches the logical expiry
// in its envelope, and the nodes' clocks are assumed to agree within what
// TTLs tolerate.
func (s *Store) GetOrLease(ctx context.Context, k string, ttl time.Duration, now time.Time) (LeaseResult, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	token := rand.Text()
	v, err := getOrLeaseScript.Run(ctx, s.rdb, s.getOrLeaseKeys(k), getOrLeaseArgs(token, ttl, now)...).Slice()
	if err != nil {
		return LeaseResult{}, s.unavailable("get-or-lease script", err)
	}
	r, ok := leaseReply(k, token, v)
	if !ok {
		return LeaseResult{}, s.unavailable("get-or-lease script", fmt.Errorf("unexpected reply %v", v))
	}
	return r, nil
}

// getOrLeaseKeys and getOrLeaseArgs are the KEYS and ARGV of
// getOrLeaseScript, shared by GetOrLease and GetOrLeaseMany.
func (s *Store) getOrLeaseKeys(k string) []string {
	return []string{s.Key(k), s.leaseKey(k), s.waitersKey(k)}
}

func getOrLeaseArgs(token string, ttl time.Duration, now time.Time) []any {
	return []any{token, ms(ttl), now.UnixMilli()}
}

// leaseReply parses the reply of getOrLeaseScript or refreshLeaseScript, run
// for user key k with token. It reports false for a reply of another shape.
func leaseReply(k, token string, v []any) (LeaseResult, bool) {
	if len(v) < 2 || len(v) > 3 {
		return LeaseResult{}, false
	}
	state, _ := v[0].(int64)
	var r LeaseResult
	switch state {
	case 1:
		str, ok := v[1].(string)
		return LeaseResult{State: Found, Value: []byte(str)}, ok && len(v) == 2
	case 2:
		r = LeaseResult{State: Acquired, Lease: Lease{Key: k, Token: token}}
	case 3:
		pttl, _ := v[1].(int64)
		r = LeaseResult{State: Held, Remaining: time.Duration(max(pttl, 0)) * time.Millisecond}
	case 4:
		r = LeaseResult{State: Uncacheable}
	default:
		return LeaseResult{}, false
	}
	if len(v) == 3 {
		stale, ok := v[2].(string)
		if !ok {
			return LeaseResult{}, false
		}
		r.Stale = []byte(stale)
	}
	return r, true
}

// RefreshLease takes k's lease for ttl for a refresh-ahead load of the
// value the caller read, whose logical expiry was seen. If k now holds a
// value with another logical expiry (it was replaced since it was read),
// or bytes that are not an envelope, it returns Found with them and takes
// nothing. Otherwise (the same value, or none) it returns Acquired, Held
// (without registering the caller as a waiter: it serves what it has), or
// Uncacheable. The holder ends the lease as after GetOrLease: a Set or
// Delete during the load makes its Fill fail.
func (s *Store) RefreshLease(ctx context.Context, k string, seen time.Time, ttl time.Duration) (LeaseResult, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	token := rand.Text()
	seenBytes := binary.BigEndian.AppendUint64(nil, uint64(seen.UnixMilli()))
	v, err := refreshLeaseScript.Run(ctx, s.rdb, []string{s.Key(k), s.leaseKey(k)}, token, ms(ttl), seenBytes).Slice()
	if err != nil {
		return LeaseResult{}, s.unavailable("refresh-lease script", err)
	}
	r, ok := leaseReply(k, token, v)
	if !ok || r.Stale != nil {
		return LeaseResult{}, s.unavailable("refresh-lease script", fmt.Errorf("unexpected reply %v", v))
	}
	return r, nil
}

// MarkUncacheable, called by the holder of l instead of Fill when the value
// it loaded cannot be cached (too large), replaces l's token by the
// uncacheable marker for ttl, if l is still held, and publishes wake if
// anyone waited. Until the marker expires or a Set or Delete of the key
// removes it, GetOrLease and RefreshLease report [Uncacheable], so the next
// nodes load without a lease at once instead of taking it one after
// another. A lost lease is left alone, silently, as by Release.
func (s *Store) MarkUncacheable(ctx context.Context, l Lease, ttl time.Duration, wake Announce) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	keys := []string{s.leaseKey(l.Key), s.waitersKey(l.Key)}
	err := markUncacheableScript.Run(ctx, s.rdb, keys, wake.scriptArgs(keys[0], l.Token, ms(ttl))...).Err()
	if err != nil {
		return s.unavailable("mark-uncacheable script", err)
	}
	return nil
}

// Fill writes value with ttl if l is still held, releases l, and publishes
// wake if anyone waited. It reports false when the lease was lost (deleted by
// a write, or expired): the value was not written.
func (s *Store) Fill(ctx context.Context, l Lease, value []byte, ttl time.Duration, wake Announce) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	keys := []string{s.Key(l.Key), s.leaseKey(l.Key), s.waitersKey(l.Key)}
	n, err := fillScript.Run(ctx, s.rdb, keys, wake.scriptArgs(keys[0], l.Token, value, ms(ttl))...).Int()
	if err != nil {
		return false, s.unavailable("fill script", err)
	}
	return n == 1, nil
}

// Release gives l up without writing a value, if it is still held, and
// publishes wake if anyone waited.
func (s *Store) Release(ctx context.Context, l Lease, wake Announce) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	keys := []string{s.leaseKey(l.Key), s.waitersKey(l.Key)}
	err := releaseScript.Run(ctx, s.rdb, keys, wake.scriptArgs(keys[0], l.Token)...).Err()
	if err != nil {
		return s.unavailable("release script", err)
	}
	return nil
}
