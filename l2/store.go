package l2

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/hashslot"
)

// DefaultOpTimeout bounds each Redis call when [Options.OpTimeout] is zero.
const DefaultOpTimeout = 200 * time.Millisecond

// Errors returned by [Store]. A miss, a Redis failure and a corrupt value are
// three different things.
var (
	// ErrMiss means Redis holds no value for the key.
	ErrMiss = errors.New("l2: miss")
	// ErrUnavailable wraps every failure to talk to Redis: a network error, a
	// timeout, a server error reply.
	ErrUnavailable = errors.New("l2: redis unavailable")
	// ErrRejected is wrapped, beside ErrUnavailable, by a command that Redis
	// answered with an error reply that retrying cannot cure (a script
	// error, WRONGTYPE, CROSSSLOT, NOPERM): see [Permanent].
	ErrRejected = errors.New("l2: command rejected")
	// ErrInvalidNamespace is returned by New for an empty namespace or one
	// with a brace, which would change the Cluster hash tag of every key.
	ErrInvalidNamespace = errors.New("l2: invalid namespace")
)

// Options configures a [Store].
type Options struct {
	// Namespace prefixes every key. Required; must not contain '{' or '}'.
	Namespace string
	// OpTimeout bounds every Redis call. Default [DefaultOpTimeout].
	OpTimeout time.Duration
}

// Announce is what a write publishes on the invalidation channel, in the
// same script as the write. Messages are already encoded; a zero Announce
// publishes nothing.
type Announce struct {
	Channel  string
	Messages [][]byte
	// Sharded publishes with SPUBLISH on the channel of the written key's
	// hash slot, hashslot.Channel(Channel, slot), instead of with PUBLISH
	// on Channel: the sharded bus of a Cluster (package pubsub), where a
	// script may only publish in the slot of its keys.
	Sharded bool
}

// route returns the command and the channel that announce a change of the
// Redis key rk.
func (a Announce) route(rk string) (cmd, channel string) {
	if !a.Sharded || len(a.Messages) == 0 {
		return "PUBLISH", a.Channel
	}
	return "SPUBLISH", hashslot.Channel(a.Channel, hashslot.Of(rk))
}

// scriptArgs returns the ARGV of a script that changes the Redis key rk (or
// keys in its slot): head, then a's command, channel and messages, which
// every announcing script takes last.
func (a Announce) scriptArgs(rk string, head ...any) []any {
	cmd, channel := a.route(rk)
	args := make([]any, 0, len(head)+2+len(a.Messages))
	args = append(append(args, head...), cmd, channel)
	for _, m := range a.Messages {
		args = append(args, m)
	}
	return args
}

// publish sends a's messages outside a script, routed as a change of rk
// would be.
func (s *Store) publish(ctx context.Context, a Announce, rk string) error {
	cmd, channel := a.route(rk)
	for _, m := range a.Messages {
		if err := s.rdb.Do(ctx, cmd, channel, m).Err(); err != nil {
			return s.unavailable(cmd, err)
		}
	}
	return nil
}

// Store is the Redis tier of one namespace: values in envelopes, their leases
// and the scripts that keep the two consistent.
//
// Key layout, for a user key k in namespace ns:
//
//	ns:{k}          the value (an envelope)
//	ns:{k}:lease    the lease token of the node loading k, or the
//	                uncacheable marker (see [Store.MarkUncacheable])
//	ns:{k}:waiters  set while another node waits for the lease
//
// The braces make k the Redis Cluster hash tag, so a value and its helper keys
// share one slot and one script can touch them all.
//
// A Store is safe for concurrent use by multiple goroutines.
type Store struct {
	rdb       redis.UniversalClient
	ns        string
	opTimeout time.Duration
	cluster   bool                 // scripts must not span slots
	cc        *redis.ClusterClient // rdb, when it is one
}

// New returns a Store over rdb, which may be a single-node, failover or
// cluster client. It starts no goroutines.
func New(rdb redis.UniversalClient, opts *Options) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("l2: nil redis client")
	}
	if opts == nil || opts.Namespace == "" || strings.ContainsAny(opts.Namespace, "{}") {
		return nil, fmt.Errorf("%w: %q", ErrInvalidNamespace, nsOf(opts))
	}
	if opts.OpTimeout < 0 {
		return nil, errors.New("l2: OpTimeout must not be negative")
	}
	s := &Store{rdb: rdb, ns: opts.Namespace, opTimeout: opts.OpTimeout}
	if s.opTimeout == 0 {
		s.opTimeout = DefaultOpTimeout
	}
	s.cc, s.cluster = rdb.(*redis.ClusterClient)
	return s, nil
}

func nsOf(o *Options) string {
	if o == nil {
		return ""
	}
	return o.Namespace
}

// unavailable wraps err, the failure of op, in ErrUnavailable, and in
// ErrRejected too when retrying cannot cure it.
//
// On a Cluster client, every failure but a cancelled call also asks go-redis
// to reload the slot map. go-redis reloads it by itself on MOVED, ASK and
// READONLY replies, and otherwise every ClusterStateReloadInterval (60 s by
// default): a master that was SIGKILLed answers nothing, so without this
// the client would keep dialling it for up to a minute after its replica
// took over. go-redis runs at most one reload per 200 ms.
func (s *Store) unavailable(op string, err error) error {
	if s.cc != nil && !errors.Is(err, context.Canceled) {
		s.cc.ReloadState(context.Background())
	}
	if permanent(err) {
		return fmt.Errorf("%w: %w: %s: %w", ErrUnavailable, ErrRejected, op, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}

// Get returns the envelope bytes stored for k, [ErrMiss], or an error wrapping
// [ErrUnavailable].
func (s *Store) Get(ctx context.Context, k string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	b, err := s.rdb.Get(ctx, s.Key(k)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrMiss
	}
	if err != nil {
		return nil, s.unavailable("GET", err)
	}
	return b, nil
}

func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// Set stores value for k with ttl, deletes k's lease (discarding a racing
// load) and publishes ann, all in one script.
//
// Set and Delete are bounded by ctx alone, not by OpTimeout: a write should
// not give up where a read would (package tiered gives them a deadline), and
// a call kept waiting through a paused server lands when it resumes. Both
// are safe to retry after an error: the script may have run with only its
// reply lost, and running it again writes the same state and announces it
// again.
func (s *Store) Set(ctx context.Context, k string, value []byte, ttl time.Duration, ann Announce) error {
	rk := s.Key(k)
	args := ann.scriptArgs(rk, value, ms(ttl))
	if err := setScript.Run(ctx, s.rdb, []string{rk, s.leaseKey(k)}, args...).Err(); err != nil {
		return s.unavailable("set script", err)
	}
	return nil
}

// Delete deletes keys and their leases, then publishes ann. Like Set, it is
// bounded by ctx alone and safe to retry. On a single node
// or failover client that is one script; on a Cluster client, whose scripts
// cannot span slots, each key is deleted by its own script in one pipeline
// and ann is published after all of them succeeded.
func (s *Store) Delete(ctx context.Context, keys []string, ann Announce) error {
	if len(keys) == 0 {
		return nil
	}
	if !s.cluster {
		rk := make([]string, 0, 2*len(keys))
		for _, k := range keys {
			rk = append(rk, s.Key(k), s.leaseKey(k))
		}
		if err := deleteScript.Run(ctx, s.rdb, rk, ann.scriptArgs(rk[0])...).Err(); err != nil {
			return s.unavailable("delete script", err)
		}
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			// EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT.
			deleteScript.Eval(ctx, p, []string{s.Key(k), s.leaseKey(k)}, Announce{}.scriptArgs("")...)
		}
		return nil
	})
	if err != nil {
		return s.unavailable("delete pipeline", err)
	}
	return s.publish(ctx, ann, s.Key(keys[0]))
}

// DeleteIfEqual deletes k's value only if it still holds old. It removes a
// corrupt value without removing a good one written since it was read.
func (s *Store) DeleteIfEqual(ctx context.Context, k string, old []byte) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	n, err := deleteIfEqualScript.Run(ctx, s.rdb, []string{s.Key(k)}, old).Int()
	if err != nil {
		return false, s.unavailable("delete-if-equal script", err)
	}
	return n == 1, nil
}
