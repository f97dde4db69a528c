package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/pubsub"
)

// With -cluster, the stampede and invalidate workloads run on a local real
// Redis Cluster (3 masters, 3 replicas: redistest.LaunchCluster) instead of
// one redis-server, once with the classic bus and once with the sharded
// one, and a busfanout line follows each invalidate line:
//
//	workload=busfanout topology=cluster bus=classic|sharded writes=… per_write_total=… per_write_max_node=… cpu_ms_per_1000_writes=… redis_kb_per_node=…
//
// busfanout has one node Delete -writes distinct keys, one at a time, with
// the fleet's buses subscribed, and reads each Redis node's counters
// before and after: the PUBLISH and SPUBLISH it ran (the writing scripts'
// included) plus the publish messages it received over the cluster bus.
// per_write_total sums them over the 6 nodes, per write; per_write_max_node
// is the busiest node's share; cpu is the servers' user+sys CPU.
// redis_kb_per_node is the growth of the servers' used_memory, summed, when
// the fleet's nodes connect and subscribe, per node: what each process's
// connections and subscriptions cost Redis.

// target is the Redis a fleet runs on.
type target struct {
	addrs   []string    // one redis-server, or every node of a Cluster
	cluster bool        // addrs are a Cluster's
	mode    pubsub.Mode // of the nodes' buses
}

func (tg target) client() redis.UniversalClient {
	if tg.cluster {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: tg.addrs, DialTimeout: time.Second})
	}
	return redis.NewClient(&redis.Options{Addr: tg.addrs[0], DialTimeout: time.Second})
}

// fields are the key=value pairs that tell the workload lines of a Cluster
// run apart, each with a leading space; none for one redis-server.
func (tg target) fields() string {
	if !tg.cluster {
		return ""
	}
	bus := "sharded"
	if tg.mode == pubsub.ModeClassic {
		bus = "classic"
	}
	return " topology=cluster bus=" + bus
}

// runClusterFleets starts a local Cluster and runs the fleet workloads on
// it with each bus mode.
func runClusterFleets(ctx context.Context, cfg config) error {
	cl, err := redistest.LaunchCluster(ctx, "", nil)
	if err != nil {
		return fmt.Errorf("starting a Redis Cluster: %w", err)
	}
	defer cl.Stop()
	fmt.Fprintf(os.Stderr, "benchfleet: Redis Cluster of %d nodes on %s, GOMAXPROCS=%d\n", len(cl.Addrs), strings.Join(cl.Addrs, ","), runtime.GOMAXPROCS(0))
	for _, mode := range []pubsub.Mode{pubsub.ModeClassic, pubsub.ModeSharded} {
		tg := target{addrs: cl.Addrs, cluster: true, mode: mode}
		// Each run starts empty: the keys of the last one would be hits.
		admin := tg.client().(*redis.ClusterClient)
		err := admin.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.FlushAll(ctx).Err() })
		admin.Close()
		if err != nil {
			return fmt.Errorf("FLUSHALL: %w", err)
		}
		if err := runFleetOn(ctx, cfg, tg); err != nil {
			return err
		}
		if err := busFanout(ctx, cfg, tg); err != nil {
			return fmt.Errorf("busfanout: %w", err)
		}
	}
	return nil
}

// busFanoutWrites is the number of Deletes busFanout counts.
const busFanoutWrites = 2000

// busFanout measures what one write costs the Cluster's nodes in pub/sub
// work: see the file comment.
func busFanout(ctx context.Context, cfg config, tg target) error {
	nodes := make([]*node, 0, cfg.nodes)
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	empty := tg.counters(ctx)
	for i := range cfg.nodes {
		n, err := newNode(ctx, i, tg, cfg)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	before := tg.counters(ctx)
	var mem float64
	for addr, c := range before {
		mem += c.memory - empty[addr].memory
	}
	for i := range busFanoutWrites {
		if err := nodes[0].cache.Delete(ctx, "fanout-"+strconv.Itoa(i)); err != nil {
			return err
		}
	}
	fmt.Printf("workload=busfanout%s writes=%d%s redis_kb_per_node=%.0f\n", tg.fields(), busFanoutWrites,
		tg.counters(ctx).perWrite(before, busFanoutWrites), mem/1024/float64(cfg.nodes))
	return nil
}

// nodeCounters are one Redis node's pub/sub counters and CPU.
type nodeCounters struct {
	published float64 // PUBLISH and SPUBLISH calls
	relayed   float64 // publish and publishshard messages received over the cluster bus
	cpu       float64 // user+sys seconds
	memory    float64 // used_memory, bytes
}

type clusterCounters map[string]nodeCounters

// counters reads every node's counters; nil off a Cluster. A node that
// does not answer is left out.
func (tg target) counters(ctx context.Context) clusterCounters {
	if !tg.cluster {
		return nil
	}
	out := clusterCounters{}
	for _, addr := range tg.addrs {
		rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
		info, err1 := rdb.Info(ctx, "commandstats", "cpu", "memory").Result()
		cinfo, err2 := rdb.ClusterInfo(ctx).Result()
		rdb.Close()
		if err1 != nil || err2 != nil {
			continue
		}
		var c nodeCounters
		for line := range strings.SplitSeq(info+"\n"+cinfo, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			switch k {
			case "cmdstat_publish", "cmdstat_spublish":
				calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
				n, _ := strconv.ParseFloat(calls, 64)
				c.published += n
			case "cluster_stats_messages_publish_received", "cluster_stats_messages_publishshard_received":
				n, _ := strconv.ParseFloat(v, 64)
				c.relayed += n
			case "used_cpu_sys", "used_cpu_user":
				n, _ := strconv.ParseFloat(v, 64)
				c.cpu += n
			case "used_memory":
				c.memory, _ = strconv.ParseFloat(v, 64)
			}
		}
		out[addr] = c
	}
	return out
}

// perWrite renders the growth of the counters since before, per write, as
// key=value pairs with a leading space; empty off a Cluster.
func (after clusterCounters) perWrite(before clusterCounters, writes int) string {
	if after == nil || writes == 0 {
		return ""
	}
	var total, busiest, cpu float64
	for addr, a := range after {
		b := before[addr]
		n := (a.published - b.published) + (a.relayed - b.relayed)
		total += n
		busiest = max(busiest, n)
		cpu += a.cpu - b.cpu
	}
	w := float64(writes)
	return fmt.Sprintf(" per_write_total=%.2f per_write_max_node=%.2f cpu_ms_per_1000_writes=%.1f", total/w, busiest/w, 1000*1000*cpu/w)
}
