package l2

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tags. A tag is a name for a group of keys (every cached page that shows
// product 42). Each tag t of namespace ns has a Redis set of the user keys
// that carry it:
//
//	ns:tag:{t}   the keys tagged t (t escaped as a user key is)
//
// The sets are written before the tagged values are loaded (AddTags), and
// read to invalidate a tag (TagMembers): its keys are then deleted like any
// keys. So a tag costs nothing on the read path. A set expires a while
// after its last member was added (the ttl given to AddTags), when every
// value tagged so is gone too; its members may outlive their values, which
// only makes an invalidation delete a key that is no longer there.

// tagKey returns the Redis key of tag's set. It starts with "ns:tag:{",
// which no key of a value, lease or waiters ("ns:{") does.
func (s *Store) tagKey(tag string) string {
	esc := ""
	if tag == "" || tag[0] == '}' || tag[0] == keyEscape {
		esc = string(keyEscape)
	}
	return s.ns + ":tag:{" + esc + tag + "}"
}

// addTagScript adds members to a tag's set and raises its TTL to at least
// ARGV[1] ms (it never shortens it).
//
//	KEYS[1] the tag's set  ARGV[1] TTL in ms  ARGV[2..] members
var addTagScript = redis.NewScript(`
for i = 2, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
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
	calls := make([]scriptCall, len(tags))
	for i, t := range tags {
		calls[i] = scriptCall{[]string{s.tagKey(t)}, args}
	}
	for _, cmd := range s.evalMany(ctx, addTagScript, calls) {
		if err := cmd.Err(); err != nil {
			return s.unavailable("add-tag pipeline", err)
		}
	}
	return nil
}

// TagMembers returns the keys recorded for each of tags, in their order,
// in one pipeline bounded by OpTimeout. It fails as a whole: an
// invalidation must know every key of its tags.
func (s *Store) TagMembers(ctx context.Context, tags []string) ([][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	cmds := make([]*redis.StringSliceCmd, len(tags))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range tags {
			cmds[i] = p.SMembers(ctx, s.tagKey(t))
		}
		return nil
	})
	members := make([][]string, len(tags))
	for i, cmd := range cmds {
		m, err := cmd.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, s.unavailable("SMEMBERS pipeline", err)
		}
		members[i] = m
	}
	return members, nil
}

// RemoveTagMembers removes members[i] from the set of tags[i], once their
// invalidation was delivered; members added since stay.
func (s *Store) RemoveTagMembers(ctx context.Context, tags []string, members [][]string) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range tags {
			if len(members[i]) == 0 {
				continue
			}
			ms := make([]any, len(members[i]))
			for j, m := range members[i] {
				ms[j] = m
			}
			p.SRem(ctx, s.tagKey(t), ms...)
		}
		return nil
	})
	if err != nil {
		return s.unavailable("SREM pipeline", err)
	}
	return nil
}
