package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of Redis Cluster hash slots.
const clusterSlots = 16384

// clusterFormTimeout bounds the wait for a new cluster to agree on its slot
// map. A master refuses to report cluster_state:ok for about two seconds
// after it starts (CLUSTER_WRITABLE_DELAY), so forming takes at least that.
const clusterFormTimeout = 20 * time.Second

// Cluster is a running Redis Cluster of masters without replicas, owned by
// one test.
type Cluster struct {
	// Addrs are host:port of the masters, on 127.0.0.1; master i serves the
	// i-th of len(Addrs) equal ranges of the 16384 slots.
	Addrs []string
}

// StartCluster starts masters (at least 3) redis-servers for tb, each as
// [Start] starts one (free loopback ports, persistence off, killed if the
// test binary dies) plus cluster mode with its config file in a temporary
// directory. It assigns the slots evenly, joins the nodes with CLUSTER MEET,
// and returns once every node reports cluster_state:ok and the same slot
// map. Every server stops when tb ends.
func StartCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	Require(tb)
	if masters < 3 {
		tb.Fatalf("redistest: a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	c := &Cluster{}
	busPorts := make([]int, masters)
	for i := range masters {
		s, busPort, err := startClusterNode(tb.TempDir())
		if err != nil {
			tb.Fatalf("redistest: cannot start cluster node %d: %v", i, err)
		}
		tb.Cleanup(s.Stop)
		c.Addrs = append(c.Addrs, s.Addr)
		busPorts[i] = busPort
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterFormTimeout)
	defer cancel()
	if err := c.form(ctx, busPorts); err != nil {
		tb.Fatalf("redistest: cannot form a cluster of %v: %v", c.Addrs, err)
	}
	return c
}

// Client returns a Cluster client of c that fails fast like [Client] (no
// retries, short dial timeout), closed when tb ends.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	o := failFast("") // the settings of Client
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: c.Addrs, MaxRetries: o.MaxRetries, DialTimeout: o.DialTimeout,
	})
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// startClusterNode starts a cluster-enabled server with its files in a new
// directory under dir, and returns it with its cluster bus port. Like
// startRetrying it tries again when a free port it picked was taken first.
func startClusterNode(dir string) (*Server, int, error) {
	var lastErr error
	for range 5 {
		busPort, err := freePort()
		if err != nil {
			return nil, 0, err
		}
		nodeDir, err := os.MkdirTemp(dir, "node-")
		if err != nil {
			return nil, 0, err
		}
		s, err := start(nodeDir,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(nodeDir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-announce-ip", "127.0.0.1",
		)
		if err == nil {
			return s, busPort, nil
		}
		lastErr = err
	}
	return nil, 0, lastErr
}

// slotRange returns the first and last slot of master i of n.
func slotRange(i, n int) (first, last int) {
	return i * clusterSlots / n, (i+1)*clusterSlots/n - 1
}

// form assigns the slots, introduces the nodes to each other, and waits
// until all of them agree.
func (c *Cluster) form(ctx context.Context, busPorts []int) error {
	clients := make([]*redis.Client, len(c.Addrs))
	for i, addr := range c.Addrs {
		clients[i] = redis.NewClient(failFast(addr))
		defer clients[i].Close()
	}
	for i, rdb := range clients {
		first, last := slotRange(i, len(clients))
		if err := rdb.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER ADDSLOTSRANGE %d %d: %w", c.Addrs[i], first, last, err)
		}
	}
	// Every pair meets, rather than all meeting one: the nodes need not
	// wait for gossip to learn of each other.
	for i := range clients {
		for j := i + 1; j < len(clients); j++ {
			host, port, _ := net.SplitHostPort(c.Addrs[j])
			if err := clients[i].Do(ctx, "CLUSTER", "MEET", host, port, busPorts[j]).Err(); err != nil {
				return fmt.Errorf("%s: CLUSTER MEET %s: %w", c.Addrs[i], c.Addrs[j], err)
			}
		}
	}
	want := c.slotMap()
	for {
		err := c.agree(ctx, clients, want)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not formed after %v: %w", clusterFormTimeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// slotMap is the slot map form assigns, as agree renders it.
func (c *Cluster) slotMap() string {
	var ranges []string
	for i, addr := range c.Addrs {
		first, last := slotRange(i, len(c.Addrs))
		ranges = append(ranges, fmt.Sprintf("%d-%d@%s", first, last, addr))
	}
	return strings.Join(ranges, " ")
}

// agree returns nil when every node reports cluster_state:ok, knows every
// other node, and serves want as its slot map.
func (c *Cluster) agree(ctx context.Context, clients []*redis.Client, want string) error {
	for i, rdb := range clients {
		info, err := rdb.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", c.Addrs[i], err)
		}
		for _, field := range []string{
			"cluster_state:ok",
			"cluster_known_nodes:" + strconv.Itoa(len(clients)),
			"cluster_slots_ok:" + strconv.Itoa(clusterSlots),
		} {
			if !slices.Contains(strings.Fields(info), field) {
				return fmt.Errorf("%s: CLUSTER INFO lacks %s", c.Addrs[i], field)
			}
		}
		//lint:ignore SA1019 CLUSTER SLOTS is the view go-redis's ClusterClient routes by; the check is that it agrees
		slots, err := rdb.ClusterSlots(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER SLOTS: %w", c.Addrs[i], err)
		}
		slices.SortFunc(slots, func(a, b redis.ClusterSlot) int { return a.Start - b.Start })
		var ranges []string
		for _, s := range slots {
			if len(s.Nodes) != 1 {
				return fmt.Errorf("%s: slots %d-%d have %d nodes, want one master", c.Addrs[i], s.Start, s.End, len(s.Nodes))
			}
			ranges = append(ranges, fmt.Sprintf("%d-%d@%s", s.Start, s.End, s.Nodes[0].Addr))
		}
		if got := strings.Join(ranges, " "); got != want {
			return fmt.Errorf("%s: slot map %q, want %q", c.Addrs[i], got, want)
		}
	}
	return nil
}
