package l2

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/hashslot"
)

// This file holds what the cache needs when Redis misbehaves rather than
// when it serves: telling a transient failure from a command Redis will
// never accept, purging a namespace, the marker that detects a server that
// came back with old data, and the persistence check.

// permanent reports whether err is an error reply that retrying cannot cure.
// Replies that mean "not now" (LOADING, BUSY, TRYAGAIN, CLUSTERDOWN,
// MASTERDOWN, READONLY during a failover, OOM, NOREPLICAS, max clients) are
// transient, like network errors and timeouts; every other error reply
// (a script error, WRONGTYPE, CROSSSLOT, NOPERM, NOSCRIPT in a pipeline) is
// permanent.
func permanent(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	for _, p := range []string{"LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN",
		"READONLY", "OOM", "NOREPLICAS", "max number of clients"} {
		if redis.HasErrorPrefix(err, p) {
			return false
		}
	}
	return true
}

// Permanent reports whether err, returned by a Store method, is an error
// reply that retrying the same command cannot cure ([ErrRejected]).
func Permanent(err error) bool { return errors.Is(err, ErrRejected) }

// runMarkerKey holds the run ID of the server on which the namespace was
// last checked. It has no braces, so it cannot collide with a value key.
func (s *Store) runMarkerKey() string { return s.ns + ":run_id" }

// CheckRun compares the namespace's run marker with runID, the run ID of
// the server the caller is connected to. When the marker holds another run
// ID (the server restarted with its data, or failed over, since the
// namespace was last checked), it purges the namespace, sets the marker to
// runID, and reports purged = true. A server restarted from an RDB or AOF
// file brings back values that writes acknowledged since the file was
// written had removed, and the marker with them: the old run ID in it is
// how such a restart shows. A missing marker (a new namespace, a server
// that came back empty) is set without a purge.
func (s *Store) CheckRun(ctx context.Context, runID string) (purged bool, err error) {
	return s.checkMarker(ctx, s.runMarkerKey(), runID, func(ctx context.Context) error {
		return s.Purge(ctx, Announce{})
	})
}

// checkMarker compares the run marker under key with runID, and when it
// holds another run ID calls purge, then sets the marker to runID. A
// missing marker is set without a purge. changed reports a purge.
func (s *Store) checkMarker(ctx context.Context, key, runID string, purge func(context.Context) error) (changed bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	got, err := s.rdb.Get(cctx, key).Result()
	if errors.Is(err, redis.Nil) {
		// Set it, unless another node just did: then compare with that.
		var set bool
		if set, err = s.rdb.SetNX(cctx, key, runID, 0).Result(); err != nil {
			return false, s.unavailable("SETNX run marker", err)
		}
		if set {
			return false, nil
		}
		got, err = s.rdb.Get(cctx, key).Result()
	}
	if err != nil {
		return false, s.unavailable("GET run marker", err)
	}
	if got == runID {
		return false, nil
	}
	if err := purge(ctx); err != nil {
		return false, err
	}
	cctx, cancel = context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.rdb.Set(cctx, key, runID, 0).Err(); err != nil {
		return true, s.unavailable("SET run marker", err)
	}
	return true, nil
}

// Purge deletes every key of the namespace (values, leases, the run marker)
// with SCAN and UNLINK, on every master of a Cluster, then publishes ann.
// It is bounded by ctx; each SCAN and UNLINK by OpTimeout.
//
// It deletes the leases first, in a pass of their own: a load that holds a
// lease taken before the purge then cannot fill after its value's key was
// passed (its compare-and-set finds the lease gone). A value written by a
// Set while the purge runs may survive it, as a write after it would.
func (s *Store) Purge(ctx context.Context, ann Announce) error {
	for _, pattern := range []string{globEscape(s.ns) + ":*:lease", globEscape(s.ns) + ":*"} {
		if err := s.unlinkAll(ctx, pattern); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	return s.publish(cctx, ann, s.runMarkerKey())
}

// unlinkAll deletes the keys that match pattern on every master.
func (s *Store) unlinkAll(ctx context.Context, pattern string) error {
	if s.cc != nil {
		return s.cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return s.unlinkOn(ctx, c, pattern)
		})
	}
	return s.unlinkOn(ctx, s.rdb, pattern)
}

// unlinkOn deletes the keys that match pattern on the server of c. On a
// Cluster, where even one node rejects a command whose keys span slots, the
// keys a SCAN returns are unlinked one UNLINK per slot, in a pipeline of
// the Cluster client (which follows a slot that has just moved).
func (s *Store) unlinkOn(ctx context.Context, c redis.Cmdable, pattern string) error {
	var cursor uint64
	for {
		cctx, cancel := context.WithTimeout(ctx, s.opTimeout)
		keys, next, err := c.Scan(cctx, cursor, pattern, 1000).Result()
		if err == nil && len(keys) > 0 {
			err = s.unlink(cctx, keys)
		}
		cancel()
		if err != nil {
			return s.unavailable("purge", err)
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// CheckShards is [Store.CheckRun] for a Cluster, where each master has a
// run ID of its own: it keeps one run marker per master, in the first
// slot the master serves (ns:run_id{<tag>}, see hashslot.Channel), and
// purges the namespace's keys on each master whose marker holds another
// run ID. A replica promoted by a failover holds the marker it replicated
// from the master it replaces, with that master's run ID, so the
// namespace's keys it serves are purged: a Delete the dead master had
// acknowledged but not yet replicated cannot leave the old value behind.
// A marker moved with its slot to another master purges that master's
// keys too, needlessly but safely. It reports how many masters it purged;
// off a Cluster it does nothing.
func (s *Store) CheckShards(ctx context.Context) (purged int, err error) {
	if s.cc == nil {
		return 0, nil
	}
	shards, err := hashslot.Shards(ctx, s.cc)
	if err != nil {
		return 0, s.unavailable("slot map", err)
	}
	for _, sh := range shards {
		runID, err := s.runIDOf(ctx, sh.Client)
		if err != nil || runID == "" {
			return purged, err
		}
		changed, err := s.checkMarker(ctx, s.shardMarkerKey(sh.Slots[0]), runID, func(ctx context.Context) error {
			for _, pattern := range []string{globEscape(s.ns) + ":*:lease", globEscape(s.ns) + ":*"} {
				if err := s.unlinkOn(ctx, sh.Client, pattern); err != nil {
					return err
				}
			}
			return nil
		})
		if changed {
			purged++
		}
		if err != nil {
			return purged, err
		}
	}
	return purged, nil
}

// shardMarkerKey is the run marker of the master that serves slot.
func (s *Store) shardMarkerKey(slot int) string {
	return hashslot.Channel(s.ns+":run_id", slot)
}

// unlink deletes keys, one UNLINK per slot on a Cluster.
func (s *Store) unlink(ctx context.Context, keys []string) error {
	if !s.cluster {
		return s.rdb.Unlink(ctx, keys...).Err()
	}
	bySlot := make(map[int][]string)
	for _, k := range keys {
		slot := hashslot.Of(k)
		bySlot[slot] = append(bySlot[slot], k)
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, ks := range bySlot {
			p.Unlink(ctx, ks...)
		}
		return nil
	})
	return err
}

// globEscape escapes the SCAN MATCH metacharacters of s.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Persistence describes the server's persistence settings when RDB
// snapshots or the AOF are on ("save 3600 1 ...", "appendonly yes"), and
// returns "" when both are off or CONFIG is not available to this client.
func (s *Store) Persistence(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	var on []string
	if m, err := s.rdb.ConfigGet(ctx, "save").Result(); err == nil && strings.TrimSpace(m["save"]) != "" {
		on = append(on, fmt.Sprintf("save %q", m["save"]))
	}
	if m, err := s.rdb.ConfigGet(ctx, "appendonly").Result(); err == nil && m["appendonly"] == "yes" {
		on = append(on, "appendonly yes")
	}
	return strings.Join(on, ", ")
}

// RunID returns the run_id of the server the client reaches now (INFO
// server), or "" when it reports none (miniredis, a server that refuses
// INFO) or the client is a Cluster client (one run ID per master: see
// [Store.CheckShards]).
func (s *Store) RunID(ctx context.Context) (string, error) {
	if s.cluster {
		return "", nil
	}
	return s.runIDOf(ctx, s.rdb)
}

// runIDOf returns the run_id of c's server; see RunID.
func (s *Store) runIDOf(ctx context.Context, c redis.Cmdable) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		if errors.As(err, new(redis.Error)) {
			return "", nil
		}
		return "", s.unavailable("INFO server", err)
	}
	for line := range strings.Lines(info) {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return id, nil
		}
	}
	return "", nil
}

// Ping checks that Redis answers, within OpTimeout.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return s.unavailable("PING", err)
	}
	return nil
}
