package redistest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of Redis Cluster hash slots.
const clusterSlots = 16384

// SlotRange is a range of hash slots and the nodes that serve it, as
// CLUSTER SLOTS reports them.
type SlotRange struct {
	Start, End int      // first and last slot
	Master     string   // host:port of the master
	Replicas   []string // host:port of its replicas that have synced, sorted
}

// String renders r as start-end@master[replicas...].
func (r SlotRange) String() string {
	return fmt.Sprintf("%d-%d@%s%v", r.Start, r.End, r.Master, r.Replicas)
}

// Slots returns the slot map of a live node, sorted by slot: the map a
// Cluster client routes by.
func (c *Cluster) Slots(ctx context.Context) ([]SlotRange, error) {
	live := c.live()
	if len(live) == 0 {
		return nil, errors.New("redistest: no live node")
	}
	rdb := redis.NewClient(failFast(live[0]))
	defer rdb.Close()
	return slotMap(ctx, rdb)
}

// Masters returns the address of every master that serves slots, in slot
// order, as a live node sees them.
func (c *Cluster) Masters(ctx context.Context) ([]string, error) {
	ranges, err := c.Slots(ctx)
	if err != nil {
		return nil, err
	}
	var masters []string
	for _, r := range ranges {
		if !slices.Contains(masters, r.Master) {
			masters = append(masters, r.Master)
		}
	}
	return masters, nil
}

// MasterOf returns the address of the master that serves slot, as a live
// node sees it.
func (c *Cluster) MasterOf(ctx context.Context, slot int) (string, error) {
	ranges, err := c.Slots(ctx)
	if err != nil {
		return "", err
	}
	for _, r := range ranges {
		if r.Start <= slot && slot <= r.End {
			return r.Master, nil
		}
	}
	return "", fmt.Errorf("redistest: no master serves slot %d", slot)
}

// MasterForKey returns the address of the master that serves key's slot,
// as a live node sees it.
func (c *Cluster) MasterForKey(ctx context.Context, key string) (string, error) {
	live := c.live()
	if len(live) == 0 {
		return "", errors.New("redistest: no live node")
	}
	rdb := redis.NewClient(failFast(live[0]))
	defer rdb.Close()
	slot, err := rdb.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return "", fmt.Errorf("redistest: CLUSTER KEYSLOT %q: %w", key, err)
	}
	return c.MasterOf(ctx, int(slot))
}

// agree returns nil when every live node reports cluster_state:ok, knows
// every node (a killed one too: it stays known, flagged failed), serves all
// slots with live masters, lists the same slot map in CLUSTER SLOTS, and,
// for a replica, has its link to its master up. With formed, it also wants
// the shape LaunchCluster asked for: Masters masters with Replicas replicas
// each.
func (c *Cluster) agree(ctx context.Context, formed bool) error {
	live := c.live()
	c.mu.Lock()
	killed := make(map[string]bool, len(c.killed))
	for addr := range c.killed {
		killed[addr] = true
	}
	c.mu.Unlock()

	var want string // the slot map of the first node
	for _, addr := range live {
		if err := c.nodeAgrees(ctx, addr, formed, killed, &want); err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
	}
	return nil
}

// nodeAgrees checks the node at addr for agree. *want is the slot map the
// nodes checked before it listed, or "" for the first, which sets it.
func (c *Cluster) nodeAgrees(ctx context.Context, addr string, formed bool, killed map[string]bool, want *string) error {
	rdb := redis.NewClient(failFast(addr))
	defer rdb.Close()
	info, err := rdb.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER INFO: %w", err)
	}
	for _, field := range []string{
		"cluster_state:ok",
		"cluster_known_nodes:" + strconv.Itoa(len(c.Addrs)),
		"cluster_slots_ok:" + strconv.Itoa(clusterSlots),
	} {
		if !slices.Contains(strings.Fields(info), field) {
			return fmt.Errorf("CLUSTER INFO lacks %s", field)
		}
	}

	ranges, err := slotMap(ctx, rdb)
	if err != nil {
		return err
	}
	var rendered []string
	masters := make(map[string]bool)
	for _, r := range ranges {
		if killed[r.Master] {
			return fmt.Errorf("slots %d-%d still on killed master %s", r.Start, r.End, r.Master)
		}
		for _, rep := range r.Replicas {
			if killed[rep] {
				return fmt.Errorf("slots %d-%d still list killed replica %s", r.Start, r.End, rep)
			}
		}
		if formed && len(r.Replicas) != c.opts.Replicas {
			return fmt.Errorf("slots %d-%d have %d synced replicas, want %d", r.Start, r.End, len(r.Replicas), c.opts.Replicas)
		}
		masters[r.Master] = true
		rendered = append(rendered, r.String())
	}
	if formed && len(masters) != c.opts.Masters {
		return fmt.Errorf("%d masters serve slots, want %d", len(masters), c.opts.Masters)
	}
	got := strings.Join(rendered, " ")
	if *want == "" {
		*want = got
	} else if got != *want {
		return fmt.Errorf("slot map %q, another node has %q", got, *want)
	}

	repl, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("INFO replication: %w", err)
	}
	if fields := strings.Fields(repl); slices.Contains(fields, "role:slave") &&
		!slices.Contains(fields, "master_link_status:up") {
		return errors.New("replica's link to its master is not up")
	}
	return nil
}

// slotMap returns rdb's CLUSTER SLOTS, sorted by slot.
func slotMap(ctx context.Context, rdb *redis.Client) ([]SlotRange, error) {
	//lint:ignore SA1019 CLUSTER SLOTS is the view go-redis's ClusterClient routes by; the check is that it agrees
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	ranges := make([]SlotRange, 0, len(slots))
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			return nil, fmt.Errorf("CLUSTER SLOTS: slots %d-%d have no node", s.Start, s.End)
		}
		r := SlotRange{Start: s.Start, End: s.End, Master: s.Nodes[0].Addr}
		for _, n := range s.Nodes[1:] {
			r.Replicas = append(r.Replicas, n.Addr)
		}
		slices.Sort(r.Replicas)
		ranges = append(ranges, r)
	}
	slices.SortFunc(ranges, func(a, b SlotRange) int { return a.Start - b.Start })
	return ranges, nil
}
