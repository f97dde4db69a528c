package l2

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tags. A tag is a name for a group of keys (every cached page that shows
// product 42). Each tag t of namespace ns has a Redis sorted set of the
// user keys that carry it, each scored with the server's time (µs) of its
// last AddTags:
//
//	ns:tag:{t}   the keys tagged t (t escaped as a user key is)
//
// The sets are written before the tagged values are loaded (AddTags), and
// read to invalidate a tag (TagMembers): its keys are then deleted like any
// keys, and the members read are removed (RemoveTagMembers) by score, up to
// the time of the read: a key that a new load tagged again since keeps its
// membership. (A plain set lost it: the SREM of the invalidated members
// removed the new load's SADD too, which had added nothing, and the next
// invalidation missed the key. The example cluster's probe found it.)
// So a tag costs nothing on the read path. A set expires a while after its
// last member was added (the ttl given to AddTags), when every value tagged
// so is gone too; its members may outlive their values, which only makes an
// invalidation delete a key that is no longer there.

// tagKey returns the Redis key of tag's set. It starts with "ns:tag:{",
// which no key of a value, lease or waiters ("ns:{") does.
func (s *Store) tagKey(tag string) string {
	esc := ""
	if tag == "" || tag[0] == '}' || tag[0] == keyEscape {
		esc = string(keyEscape)
	}
	return s.ns + ":tag:{" + esc + tag + "}"
}

// addTagScript adds members to the sets of tags, scored with the server's
// time in µs, and raises each set's TTL to at least ARGV[1] ms (it never
// shortens it). On a Cluster client it runs once per tag (its keys must
// share a slot); otherwise once for all the tags of a load.
//
//	KEYS    the tags' sets  ARGV[1] TTL in ms  ARGV[2..] members
var addTagScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for _, key in ipairs(KEYS) do
  for i = 2, #ARGV do redis.call('ZADD', key, now, ARGV[i]) end
  if redis.call('PTTL', key) < tonumber(ARGV[1]) then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 1
`)

// tagMembersScript returns the server's time in µs and the members of a
// tag's set, at one instant.
//
//	KEYS[1] the tag's set
var tagMembersScript = redis.NewScript(`
local t = redis.call('TIME')
return {tonumber(t[1]) * 1000000 + tonumber(t[2]), redis.call('ZRANGE', KEYS[1], 0, -1)}
`)

// AddTags records keys as members of each of tags, whose sets then live at
// least ttl more, in one pipeline bounded by OpTimeout. It succeeds only
// if every tag was recorded: a value whose tags are not all recorded must
// not be cached, or an invalidation of the missing tag would miss it.
func (s *Store) AddTags(ctx context.Context, keys, tags []string, ttl time.Duration) error {
	if len(keys) == 0 || len(tags) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	args := make([]any, 0, 1+len(keys))
	args = append(args, ms(ttl))
	for _, k := range keys {
		args = append(args, k)
	}
	var calls []scriptCall
	if s.cluster {
		calls = make([]scriptCall, len(tags))
		for i, t := range tags {
			calls[i] = scriptCall{[]string{s.tagKey(t)}, args}
		}
	} else { // one script for every tag: a page of 50 products has 50
		keys := make([]string, len(tags))
		for i, t := range tags {
			keys[i] = s.tagKey(t)
		}
		calls = []scriptCall{{keys, args}}
	}
	for _, cmd := range s.evalMany(ctx, addTagScript, calls) {
		if err := cmd.Err(); err != nil {
			return s.unavailable("add-tag pipeline", err)
		}
	}
	return nil
}

// TagRead is what TagMembers read of one tag.
type TagRead struct {
	Members []string // the keys tagged
	At      int64    // the server's time of the read, µs: see RemoveTagMembers
}

// TagMembers returns the keys recorded for each of tags, in their order,
// in one pipeline bounded by OpTimeout. It fails as a whole: an
// invalidation must know every key of its tags.
func (s *Store) TagMembers(ctx context.Context, tags []string) ([]TagRead, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	calls := make([]scriptCall, len(tags))
	for i, t := range tags {
		calls[i] = scriptCall{[]string{s.tagKey(t)}, nil}
	}
	reads := make([]TagRead, len(tags))
	for i, cmd := range s.evalMany(ctx, tagMembersScript, calls) {
		v, err := cmd.Slice()
		if err == nil && len(v) != 2 {
			err = fmt.Errorf("unexpected reply %v", v)
		}
		if err != nil {
			return nil, s.unavailable("tag-members pipeline", err)
		}
		at, _ := v[0].(int64)
		ms, _ := v[1].([]any)
		r := TagRead{At: at, Members: make([]string, 0, len(ms))}
		for _, m := range ms {
			if str, ok := m.(string); ok {
				r.Members = append(r.Members, str)
			}
		}
		reads[i] = r
	}
	return reads, nil
}

// RemoveTagMembers removes from the set of tags[i] the members tagged no
// later than reads[i].At, once the invalidation of reads[i].Members was
// delivered: a key tagged again since (a load after the invalidation) stays
// a member.
func (s *Store) RemoveTagMembers(ctx context.Context, tags []string, reads []TagRead) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range tags {
			p.ZRemRangeByScore(ctx, s.tagKey(t), "-inf", strconv.FormatInt(reads[i].At, 10))
		}
		return nil
	})
	if err != nil {
		return s.unavailable("ZREMRANGEBYSCORE pipeline", err)
	}
	return nil
}
