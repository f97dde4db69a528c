package l2

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// Batch operations. Each of GetMany, GetOrLeaseMany, FillMany and
// ReleaseMany is one round trip for any number of keys (plus, after the
// server lost its scripts, a reload and a second round trip for the keys
// that met NOSCRIPT), bounded by OpTimeout as a whole.

// BatchError is the error of a batch call ([Store.GetMany],
// [Store.GetOrLeaseMany], [Store.FillMany], [Store.ReleaseMany]) some of
// whose entries failed while others succeeded: on a Cluster client the keys
// of a batch go to several masters, and one may fail while the others
// answer; and a script may fail for one key alone. A batch call returns:
//
//   - a nil error: every entry succeeded;
//   - a *BatchError: some entries failed, and the results of the others
//     are valid (a lease they report as Acquired is held, and must be
//     filled, released or marked);
//   - any other error, wrapping [ErrUnavailable]: no entry succeeded, and
//     there are no results.
//
// A BatchError wraps ErrUnavailable (and ErrRejected when a failure was a
// rejection: see [Permanent]) through the entries' errors.
type BatchError struct {
	// Errs has one element per entry of the batch, in order: nil for an
	// entry that succeeded, else its error, which wraps ErrUnavailable.
	Errs []error
}

// Error implements error.
func (e *BatchError) Error() string {
	var (
		n     int
		first error
	)
	for _, err := range e.Errs {
		if err == nil {
			continue
		}
		if n == 0 {
			first = err
		}
		n++
	}
	return fmt.Sprintf("l2: %d of %d batch entries failed; the first: %v", n, len(e.Errs), first)
}

// Unwrap returns the entries' errors, so that errors.Is(err, ErrUnavailable)
// holds for a BatchError.
func (e *BatchError) Unwrap() []error {
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// batchResult returns results and err, the error of a batch call, or no
// results if err says that the call failed as a whole.
func batchResult[T any](results []T, err error) ([]T, error) {
	if err != nil && !errors.As(err, new(*BatchError)) {
		return nil, err
	}
	return results, err
}

// batchErr turns the entries' failures (nil where an entry succeeded, else
// the raw error, which it wraps with op) into a batch call's error: nil when
// none failed, the first failure alone when all failed, else a *BatchError.
func (s *Store) batchErr(op string, errs []error) error {
	failed := 0
	for i, err := range errs {
		if err != nil {
			errs[i] = s.unavailable(op, err)
			failed++
		}
	}
	switch failed {
	case 0:
		return nil
	case len(errs):
		return errs[0]
	}
	return &BatchError{Errs: errs}
}

// GetMany returns the envelope bytes stored for each of keys, in their
// order, with nil for a key that has no value (an empty value is an empty,
// non-nil slice). On a single-node or failover client it sends one MGET; on
// a Cluster client, where one MGET cannot span slots, a pipeline of GETs,
// which go-redis splits among the masters. Its errors are as [BatchError]
// describes; a single MGET fails or succeeds as a whole. The slices share
// the memory of the reply's strings (no copy per value): the caller must
// not modify them.
func (s *Store) GetMany(ctx context.Context, keys []string) ([][]byte, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	rks := make([]string, len(keys))
	for i, k := range keys {
		rks[i] = s.Key(k)
	}
	values := make([][]byte, len(keys))
	if !s.cluster {
		vs, err := s.rdb.MGet(ctx, rks...).Result()
		if err == nil && len(vs) != len(keys) {
			err = fmt.Errorf("MGET of %d keys returned %d values", len(keys), len(vs))
		}
		if err != nil {
			return nil, s.unavailable("MGET", err)
		}
		for i, v := range vs {
			if str, ok := v.(string); ok {
				values[i] = readOnly(str)
			}
		}
		return values, nil
	}
	cmds := make([]*redis.StringCmd, len(keys))
	// The pipeline's own error is the first command's; each command's is
	// read below.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, rk := range rks {
			cmds[i] = p.Get(ctx, rk)
		}
		return nil
	})
	errs := make([]error, len(keys))
	for i, cmd := range cmds {
		str, err := cmd.Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			errs[i] = err
		default:
			values[i] = readOnly(str)
		}
	}
	return batchResult(values, s.batchErr("GET pipeline", errs))
}

// GetOrLeaseMany runs [Store.GetOrLease] for each of keys (with the same
// ttl and now, and a token of its own), in one pipeline, and returns the
// results in the order of keys. Its errors are as [BatchError] describes;
// the result of a failed entry is the zero LeaseResult. Keys should be distinct: a repeated key
// finds the lease its first occurrence took, held by the caller itself.
func (s *Store) GetOrLeaseMany(ctx context.Context, keys []string, ttl time.Duration, now time.Time) ([]LeaseResult, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	tokens := make([]string, len(keys))
	calls := make([]scriptCall, len(keys))
	for i, k := range keys {
		tokens[i] = rand.Text()
		calls[i] = scriptCall{s.getOrLeaseKeys(k), getOrLeaseArgs(tokens[i], ttl, now)}
	}
	cmds := s.evalMany(ctx, getOrLeaseScript, calls)
	results := make([]LeaseResult, len(keys))
	errs := make([]error, len(keys))
	for i, cmd := range cmds {
		v, err := cmd.Slice()
		if err != nil {
			errs[i] = err
			continue
		}
		r, ok := leaseReply(keys[i], tokens[i], v)
		if !ok {
			errs[i] = fmt.Errorf("unexpected reply %v", v)
			continue
		}
		results[i] = r
	}
	return batchResult(results, s.batchErr("get-or-lease pipeline", errs))
}

// Fill is one entry of [Store.FillMany]: the arguments of [Store.Fill].
type Fill struct {
	Lease Lease         // the held lease
	Value []byte        // the envelope bytes to write
	TTL   time.Duration // of the value in Redis
	Wake  Announce      // published if anyone waited for the lease
}

// FillMany runs [Store.Fill] for each of fills, in one pipeline. filled[i]
// reports whether fills[i] was written (false: its lease was lost, or the
// entry failed). Its errors are as [BatchError] describes: an entry that
// failed may or may not have been written, as after a failed Fill.
func (s *Store) FillMany(ctx context.Context, fills []Fill) ([]bool, error) {
	if len(fills) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	calls := make([]scriptCall, len(fills))
	for i, f := range fills {
		k := f.Lease.Key
		keys := []string{s.Key(k), s.leaseKey(k), s.waitersKey(k)}
		calls[i] = scriptCall{keys, f.Wake.scriptArgs(keys[0], f.Lease.Token, f.Value, ms(f.TTL))}
	}
	cmds := s.evalMany(ctx, fillScript, calls)
	filled := make([]bool, len(fills))
	errs := make([]error, len(fills))
	for i, cmd := range cmds {
		n, err := cmd.Int()
		filled[i], errs[i] = n == 1 && err == nil, err
	}
	return batchResult(filled, s.batchErr("fill pipeline", errs))
}

// ReleaseMany runs [Store.Release] for each of leases, in one pipeline,
// publishing wakes[i] for leases[i] if anyone waited for it. wakes is nil
// (no wake messages) or as long as leases; otherwise ReleaseMany sends
// nothing and returns an error that does not wrap ErrUnavailable. Its
// other errors are as [BatchError] describes.
func (s *Store) ReleaseMany(ctx context.Context, leases []Lease, wakes []Announce) error {
	if wakes != nil && len(wakes) != len(leases) {
		return fmt.Errorf("l2: ReleaseMany: %d wakes for %d leases", len(wakes), len(leases))
	}
	if len(leases) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	calls := make([]scriptCall, len(leases))
	for i, l := range leases {
		var wake Announce
		if wakes != nil {
			wake = wakes[i]
		}
		keys := []string{s.leaseKey(l.Key), s.waitersKey(l.Key)}
		calls[i] = scriptCall{keys, wake.scriptArgs(keys[0], l.Token)}
	}
	errs := make([]error, len(leases))
	for i, cmd := range s.evalMany(ctx, releaseScript, calls) {
		errs[i] = cmd.Err()
	}
	return s.batchErr("release pipeline", errs)
}

// scriptCall is one run of a script in a batch: its KEYS and ARGV.
type scriptCall struct {
	keys []string
	args []any
}

// evalMany runs sc once per call, all in one pipeline, and returns one
// command per call, whose reply or error is the call's.
//
// It sends EVALSHA, not EVAL: a batch does not send the script's body once
// per key. A NOSCRIPT reply means the server lost its script cache (a
// restart, a failover, SCRIPT FLUSH; on a Cluster, maybe on one master
// only) and that the call did not run, so it is safe to send again:
// evalMany then loads the script (on every node of a Cluster) and sends
// those calls alone once more, in a second pipeline. If the load fails,
// those calls fail with its error.
func (s *Store) evalMany(ctx context.Context, sc *redis.Script, calls []scriptCall) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	send := func(idx []int) {
		// The pipeline's own error is the first failed command's; each
		// command's is read by the caller.
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range idx {
				cmds[i] = sc.EvalSha(ctx, p, calls[i].keys, calls[i].args...)
			}
			return nil
		})
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	send(all)
	var missing []int
	for i, cmd := range cmds {
		if err := cmd.Err(); errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT") {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return cmds
	}
	if err := sc.Load(ctx, s.rdb).Err(); err != nil {
		for _, i := range missing {
			cmds[i].SetErr(err)
		}
		return cmds
	}
	send(missing)
	return cmds
}

// readOnly returns the bytes of str without copying them; they must not be
// modified. go-redis hands a reply's values over as strings, and a batch
// read would otherwise copy every value once more only to decode it.
func readOnly(str string) []byte {
	if str == "" {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(str), len(str))
}
