// Package hashslot computes Redis Cluster hash slots and names the channels
// of the sharded invalidation bus.
//
// Sharded pub/sub (SPUBLISH, SSUBSCRIBE) routes a channel by its hash slot,
// as it routes a key, and a Lua script may only SPUBLISH to a channel in the
// slot of the keys it touches. A write of key k in slot s therefore
// publishes on [Channel](base, s): the base name plus a hash tag that
// hashes to s. Subscribers listen on all [Count] of them, each on the master
// that serves its slot.
package hashslot

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Count is the number of hash slots of a Redis Cluster.
const Count = 16384

// Of returns the hash slot of key, as CLUSTER KEYSLOT does: CRC16 of
// [HashTag](key), mod 16384.
func Of(key string) int {
	tag, _ := HashTag(key)
	return int(crc16(tag)) & (Count - 1)
}

// HashTag returns the part of key that Redis Cluster hashes, as the cluster
// spec defines it (HASH_SLOT, "Hash tags"): the bytes between the first '{'
// and the first '}' after it, when there is at least one byte between them;
// otherwise the whole key. tagged reports which.
func HashTag(key string) (tag string, tagged bool) {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j], true
		}
	}
	return key, false
}

// crc16 is the CRC the cluster spec names: CRC-16/XMODEM (polynomial
// 0x1021, initial value 0, no reflection, no final xor).
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// Channel returns the channel of slot for base: base followed by a hash tag
// that hashes to slot. base must not contain '{' or '}'; slot must be in
// [0, Count).
func Channel(base string, slot int) string {
	return base + "{" + tags()[slot] + "}"
}

// tags holds, for each slot, the smallest decimal number whose slot it is: built on first use: about 200,000 CRCs of
// numbers of up to six digits, a few milliseconds.
var tags = sync.OnceValue(func() *[Count]string {
	var t [Count]string
	left := Count
	for n := 0; left > 0; n++ {
		s := strconv.Itoa(n)
		if slot := Of(s); t[slot] == "" {
			t[slot] = s
			left--
		}
	}
	return &t
})

// A Shard is a master of a Cluster and the slots it serves.
type Shard struct {
	Client *redis.Client // the Cluster client's client of the master
	Slots  []int         // ascending
}

// Shards groups the slots by the master cc routes them to, by cc's own
// slot map, so that its users agree with the commands cc sends. The shards
// are in the order of their first slot.
func Shards(ctx context.Context, cc *redis.ClusterClient) ([]Shard, error) {
	var shards []Shard
	index := make(map[*redis.Client]int)
	for slot := range Count {
		c, err := cc.MasterForKey(ctx, Channel("", slot))
		if err != nil {
			return nil, fmt.Errorf("no master for slot %d: %w", slot, err)
		}
		i, ok := index[c]
		if !ok {
			i = len(shards)
			index[c] = i
			shards = append(shards, Shard{Client: c})
		}
		shards[i].Slots = append(shards[i].Slots, slot)
	}
	return shards, nil
}
