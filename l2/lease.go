package l2

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"
)

// The lease protocol (Facebook's memcache leases, adapted to Redis):
//
//  1. On a miss, a node runs [Store.GetOrLease]: one script that returns the
//     value if it landed meanwhile, else takes the lease with
//     SET ns:{k}:lease <random token> NX PX <ttl>, else records that someone
//     waits and reports how long the lease still runs.
//  2. The holder loads and calls [Store.Fill]: a compare-and-set that writes
//     the value only while the lease still holds its token, then deletes the
//     lease and, if anyone waited, publishes a wake message. [Store.Set] and
//     [Store.Delete] delete the lease, so a load that raced a write is
//     discarded instead of writing an old value into Redis.
//  3. A holder that fails calls [Store.Release] (compare-and-delete, never a
//     plain DEL). A holder that dies leaves the lease to expire; a waiter's
//     next GetOrLease then takes it over.
//
// The lease is an efficiency device: it makes the fleet load a cold key once.
// Correctness does not depend on it: the compare-and-set keeps stale loads
// out of Redis, and the L1 fill guard keeps them out of each process.

// Lease is a held lease on one key.
type Lease struct {
	Key   string // the user key
	Token string // random; proves ownership to Fill and Release
}

// LeaseState is the outcome of [Store.GetOrLease].
type LeaseState int

const (
	// Found: Value holds the envelope bytes that were in Redis.
	Found LeaseState = iota + 1
	// Acquired: Lease is now held by the caller, who should load and Fill.
	Acquired
	// Held: another node holds the lease for about Remaining more.
	Held
)

// LeaseResult is what [Store.GetOrLease] found.
type LeaseResult struct {
	State     LeaseState
	Value     []byte        // with Found
	Lease     Lease         // with Acquired
	Remaining time.Duration // with Held
}

// GetOrLease returns k's value if there is one, else takes k's lease for ttl
// if it is free, else reports that another holds it. See the protocol above.
func (s *Store) GetOrLease(ctx context.Context, k string, ttl time.Duration) (LeaseResult, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	token := rand.Text()
	v, err := getOrLeaseScript.Run(ctx, s.rdb,
		[]string{s.Key(k), s.leaseKey(k), s.waitersKey(k)}, token, ms(ttl)).Slice()
	if err != nil {
		return LeaseResult{}, s.unavailable("get-or-lease script", err)
	}
	if len(v) == 2 {
		switch state, _ := v[0].(int64); state {
		case 1:
			str, _ := v[1].(string)
			return LeaseResult{State: Found, Value: []byte(str)}, nil
		case 2:
			return LeaseResult{State: Acquired, Lease: Lease{Key: k, Token: token}}, nil
		case 3:
			pttl, _ := v[1].(int64)
			return LeaseResult{State: Held, Remaining: time.Duration(max(pttl, 0)) * time.Millisecond}, nil
		}
	}
	return LeaseResult{}, s.unavailable("get-or-lease script", fmt.Errorf("unexpected reply %v", v))
}

// Fill writes value with ttl if l is still held, releases l, and publishes
// wake if anyone waited. It reports false when the lease was lost (deleted by
// a write, or expired): the value was not written.
func (s *Store) Fill(ctx context.Context, l Lease, value []byte, ttl time.Duration, wake Announce) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	args := wake.scriptArgs(l.Token, value, ms(ttl))
	n, err := fillScript.Run(ctx, s.rdb,
		[]string{s.Key(l.Key), s.leaseKey(l.Key), s.waitersKey(l.Key)}, args...).Int()
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
	args := wake.scriptArgs(l.Token)
	err := releaseScript.Run(ctx, s.rdb, []string{s.leaseKey(l.Key), s.waitersKey(l.Key)}, args...).Err()
	if err != nil {
		return s.unavailable("release script", err)
	}
	return nil
}
