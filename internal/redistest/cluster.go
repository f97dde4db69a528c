package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of [ClusterOptions].
const (
	// DefaultClusterMasters is the default number of masters: the fewest
	// Redis Cluster accepts.
	DefaultClusterMasters = 3
	// DefaultClusterReplicas is the default number of replicas per master.
	DefaultClusterReplicas = 1
	// DefaultClusterNodeTimeout is the default cluster-node-timeout: short,
	// so that a failover takes seconds, yet long enough that a busy test
	// machine does not fail over a master that is merely slow.
	DefaultClusterNodeTimeout = time.Second
)

// NoReplicas is the [ClusterOptions.Replicas] of a cluster of masters only.
const NoReplicas = -1

// clusterFormTimeout bounds StartCluster's wait for a new cluster. A master
// refuses to report cluster_state:ok for about two seconds after it starts
// (CLUSTER_WRITABLE_DELAY), redis-cli polls the join once a second and the
// replicas then sync, so forming takes a few seconds on an idle machine.
const clusterFormTimeout = 60 * time.Second

// ClusterOptions configure [LaunchCluster] and [StartCluster]. A nil
// *ClusterOptions means every default.
type ClusterOptions struct {
	// Masters is the number of masters, at least 3. The default is
	// DefaultClusterMasters.
	Masters int
	// Replicas is the number of replicas of each master. Zero means
	// DefaultClusterReplicas; NoReplicas means none.
	Replicas int
	// NodeTimeout is the cluster-node-timeout of every node: how long a node
	// may not answer before the others deem it failed and, if it is a
	// master, its replica takes over. The default is
	// DefaultClusterNodeTimeout. Redis works in whole milliseconds.
	NodeTimeout time.Duration
}

// withDefaults returns a copy of o (nil for defaults) with its defaults
// filled in, or an error for a value out of range.
func (o *ClusterOptions) withDefaults() (ClusterOptions, error) {
	var r ClusterOptions
	if o != nil {
		r = *o
	}
	switch {
	case r.Masters == 0:
		r.Masters = DefaultClusterMasters
	case r.Masters < 3:
		return r, fmt.Errorf("redistest: a Redis Cluster needs at least 3 masters, got %d", r.Masters)
	}
	switch {
	case r.Replicas == 0:
		r.Replicas = DefaultClusterReplicas
	case r.Replicas == NoReplicas:
		r.Replicas = 0
	case r.Replicas < 0:
		return r, fmt.Errorf("redistest: Replicas is %d, want NoReplicas or more", r.Replicas)
	}
	switch {
	case r.NodeTimeout == 0:
		r.NodeTimeout = DefaultClusterNodeTimeout
	case r.NodeTimeout < time.Millisecond:
		return r, fmt.Errorf("redistest: NodeTimeout is %v, want at least 1ms", r.NodeTimeout)
	}
	return r, nil
}

// Cluster is a running Redis Cluster of masters and their replicas, each a
// redis-server on a free loopback port, formed by redis-cli --cluster
// create. Its methods are safe for concurrent use.
type Cluster struct {
	// Addrs are host:port of every node, masters and replicas, on
	// 127.0.0.1: the seed list of a redis.ClusterOptions. Which node is a
	// master changes with failovers; [Cluster.Masters] says.
	Addrs []string

	opts    ClusterOptions // with defaults filled in
	dir     string         // holds the nodes' directories
	ownsDir bool           // Stop removes dir

	mu      sync.Mutex
	nodes   map[string]*Server // by address; guarded by mu
	killed  map[string]bool    // addresses Kill was given; guarded by mu
	stopped bool               // guarded by mu
}

// StartCluster starts a cluster for tb as [LaunchCluster] does, with its
// files under tb's temporary directory, and stops it when tb ends. o nil
// means defaults: 3 masters with a replica each. It skips tb when
// redis-server or redis-cli is missing, or fails it under REQUIRE_REDIS=1.
func StartCluster(tb testing.TB, o *ClusterOptions) *Cluster {
	tb.Helper()
	requireTools(tb, serverTool, cliTool)
	ctx, cancel := context.WithTimeout(context.Background(), clusterFormTimeout)
	defer cancel()
	c, err := LaunchCluster(ctx, tb.TempDir(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Stop)
	return c
}

// LaunchCluster is StartCluster for code without a testing.TB (an example
// program): it starts Masters×(1+Replicas) cluster-mode redis-servers with
// their files under dir (a new temporary directory, removed by Stop, when
// dir is ""), forms a cluster of them with redis-cli --cluster create, and
// returns once every node reports cluster_state:ok with all 16384 slots
// served, knows every other node, lists the same masters and replicas in
// CLUSTER SLOTS, and every replica's link to its master is up. The caller
// must call Stop, also after an error. ctx bounds the whole start.
//
// The servers are killed if this process dies (on Linux; see
// [DieWithParent]).
func LaunchCluster(ctx context.Context, dir string, o *ClusterOptions) (*Cluster, error) {
	opts, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := errMissing(serverTool, cliTool); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, dir: dir, nodes: make(map[string]*Server), killed: make(map[string]bool)}
	if dir == "" {
		if c.dir, err = os.MkdirTemp("", "redistest-cluster-"); err != nil {
			return nil, err
		}
		c.ownsDir = true
	}
	for i := range opts.Masters * (1 + opts.Replicas) {
		s, err := startClusterNode(c.dir, opts.NodeTimeout)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("redistest: cannot start cluster node %d: %w", i, err)
		}
		c.mu.Lock()
		c.nodes[s.Addr] = s
		c.mu.Unlock()
		c.Addrs = append(c.Addrs, s.Addr)
	}
	if err := c.create(ctx); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redistest: cannot form a cluster of %v: %w", c.Addrs, err)
	}
	if err := wait(ctx, func() error { return c.agree(ctx, true) }); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redistest: cluster of %v not formed: %w", c.Addrs, err)
	}
	return c, nil
}

// Stop kills every node and waits for them to exit. It is idempotent.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	for _, s := range c.nodes {
		s.Stop()
	}
	if c.ownsDir {
		_ = os.RemoveAll(c.dir)
	}
}

// Kill sends the node at addr SIGKILL and waits for it to exit. It stays
// down: [Cluster.WaitFailover] waits for the cluster to get over it.
func (c *Cluster) Kill(addr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.nodes[addr]
	if s == nil {
		return fmt.Errorf("redistest: %s is not a node of the cluster", addr)
	}
	s.Kill()
	c.killed[addr] = true
	return nil
}

// WaitFailover returns once the cluster has got over the nodes Kill took
// down: the replica of each killed master has taken over its slots, and
// every live node reports cluster_state:ok with all 16384 slots served by
// live masters and lists the same masters and replicas in CLUSTER SLOTS,
// and every live replica's link to its master is up. It returns ctx's
// error, with what it still waited for, if ctx ends first.
func (c *Cluster) WaitFailover(ctx context.Context) error {
	if err := wait(ctx, func() error { return c.agree(ctx, false) }); err != nil {
		return fmt.Errorf("redistest: cluster did not fail over: %w", err)
	}
	return nil
}

// Client returns a Cluster client of c, closed when tb ends. With o nil it
// fails fast like [Client] (no retries, short dial timeout); otherwise it
// uses o, with c.Addrs as the seed list if o.Addrs is empty.
//
// After a failover, a Cluster client keeps sending the killed master's
// slots to its address until it reloads the slot map: go-redis does on a
// MOVED reply or every ClusterStateReloadInterval (60s by default), not on
// a refused dial. Call its ReloadState after [Cluster.WaitFailover].
func (c *Cluster) Client(tb testing.TB, o *redis.ClusterOptions) *redis.ClusterClient {
	tb.Helper()
	if o == nil {
		ff := failFast("") // the settings of Client
		o = &redis.ClusterOptions{MaxRetries: ff.MaxRetries, DialTimeout: ff.DialTimeout}
	} else {
		cp := *o // NewClusterClient fills in o's defaults: leave the caller's alone
		o = &cp
	}
	if len(o.Addrs) == 0 {
		o.Addrs = c.Addrs
	}
	cc := redis.NewClusterClient(o)
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// live returns the addresses of the nodes not killed, in the order of Addrs.
func (c *Cluster) live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []string
	for _, addr := range c.Addrs {
		if !c.killed[addr] {
			live = append(live, addr)
		}
	}
	return live
}

// startClusterNode starts a cluster-enabled server with its files in a new
// directory under dir, and returns it. Like startRetrying it tries again
// when a free port it picked was taken first.
func startClusterNode(dir string, nodeTimeout time.Duration) (*Server, error) {
	var lastErr error
	for range 5 {
		busPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		nodeDir, err := os.MkdirTemp(dir, "node-")
		if err != nil {
			return nil, err
		}
		s, err := start(nodeDir,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(nodeDir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-announce-ip", "127.0.0.1",
			"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
			// A replica takes over however long its link was down: on a
			// busy machine the data-age check could veto the failover a
			// test waits for.
			"--cluster-replica-validity-factor", "0",
			// A replica's first sync starts at once, not after the
			// default 5s wait for more replicas.
			"--repl-diskless-sync-delay", "0",
			// A master pings its replicas every second, not every 10s:
			// CLUSTER SLOTS lists a replica only once it has a
			// replication offset, which a fresh master's first ping
			// gives it.
			"--repl-ping-replica-period", "1",
		)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// create runs redis-cli --cluster create on every node: it spreads the
// slots over the first Masters nodes, makes the rest their replicas, and
// joins them all.
func (c *Cluster) create(ctx context.Context) error {
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(c.opts.Replicas), "--cluster-yes")
	cmd := exec.CommandContext(ctx, cliTool, args...)
	cmd.SysProcAttr = DieWithParent()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %v: %s", err, out)
	}
	return nil
}

// servers returns every node's Server, in the order of Addrs.
func (c *Cluster) servers() []*Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []*Server
	for _, addr := range c.Addrs {
		all = append(all, c.nodes[addr])
	}
	return all
}
