package main

// -cluster: the run on a real Redis Cluster of its own, started with
// internal/redistest (3 masters, a replica each, free loopback ports, no
// persistence). The nodes then use go-redis Cluster clients, which route
// each key to the master of its hash slot; the bus on a Cluster client uses
// sharded pub/sub (tiered.BusModeAuto).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// clusterStartTimeout bounds the start of the Redis Cluster: six servers,
// redis-cli --cluster create, and the wait until every node agrees on the
// slot map and every replica has synced (a few seconds on an idle machine).
const clusterStartTimeout = 60 * time.Second

// errClusterChaos is what -chaos -cluster says.
var errClusterChaos = errors.New("-chaos cannot be combined with -cluster: its faults go through per-node " +
	"proxies in front of one server (a Cluster client connects to the addresses the cluster announces, " +
	"so it would bypass them) and kill and restart that one server; run -chaos with -redis auto instead")

// clusterServer is a Redis Cluster the run started.
type clusterServer struct {
	c       *redistest.Cluster
	masters []string      // host:port of the masters when the cluster was formed, in slot order
	took    time.Duration // to start and form the cluster
}

// startCluster starts a Redis Cluster of 3 masters with a replica each,
// with its files under dir, and returns once it is formed. It needs
// redis-server and redis-cli on PATH, and says so if either is missing.
func startCluster(ctx context.Context, dir string) (*redisServer, error) {
	var missing []string
	for _, tool := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		verb := "is"
		if len(missing) > 1 {
			verb = "are"
		}
		return nil, fmt.Errorf("-cluster starts a Redis Cluster of redis-servers and forms it with redis-cli, "+
			"but %s %s not on PATH (Debian/Ubuntu: apt-get install redis-server)", strings.Join(missing, " and "), verb)
	}
	dir = filepath.Join(dir, "redis-cluster")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	t0 := time.Now()
	c, err := redistest.LaunchCluster(ctx, dir, nil)
	if err != nil { // LaunchCluster stopped what it started
		return nil, fmt.Errorf("-cluster: %w", err)
	}
	masters, err := c.Masters(ctx)
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("-cluster: %w", err)
	}
	return &redisServer{addr: c.Addrs[0], cluster: &clusterServer{c: c, masters: masters, took: time.Since(t0)}}, nil
}

// addrs returns host:port of every node of the cluster, masters and
// replicas: the seed list of the nodes' Cluster clients.
func (s *clusterServer) addrs() []string { return s.c.Addrs }

// String describes the cluster for the output: its masters, then its
// replicas, as host:port.
func (s *clusterServer) String() string {
	var replicas []string
	for _, a := range s.c.Addrs {
		if !slices.Contains(s.masters, a) {
			replicas = append(replicas, a)
		}
	}
	return fmt.Sprintf("Redis Cluster of %d masters (%s) and %d replicas (%s), formed for the run in %v, no persistence",
		len(s.masters), strings.Join(s.masters, " "), len(replicas), strings.Join(replicas, " "),
		s.took.Round(100*time.Millisecond))
}

// Close kills every server of the cluster. It is idempotent.
func (s *clusterServer) Close() { s.c.Stop() }

// redisClient returns a client for the node: of the server at addr (maybe a
// fault proxy), or with -cluster a Cluster client seeded with every node of
// the cluster.
func (nc nodeConfig) redisClient(addr string) redis.UniversalClient {
	if len(nc.ClusterAddrs) == 0 {
		return redis.NewClient(redisOptions(addr))
	}
	return redis.NewClusterClient(clusterOptions(nc.ClusterAddrs))
}

// clusterOptions are redisOptions for a Cluster client. ReadOnly stays off:
// every command goes to the master of its slot, since a replica may lag
// behind an invalidation.
func clusterOptions(addrs []string) *redis.ClusterOptions {
	o := redisOptions("")
	return &redis.ClusterOptions{
		Addrs:                 addrs,
		ContextTimeoutEnabled: o.ContextTimeoutEnabled,
		DialTimeout:           o.DialTimeout,
		DialerRetries:         o.DialerRetries,
		MaxRetries:            o.MaxRetries,
		MinRetryBackoff:       o.MinRetryBackoff,
	}
}

// clusterAddrsFromEnv parses envCluster: nil when it is unset or empty.
func clusterAddrsFromEnv() []string {
	v := os.Getenv(envCluster)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}
