package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/pubsub"
	"github.com/tieredcache/tiered/tiered"
)

// This file holds what the multiget, hotexpiry and dbdown workloads share:
// a node of any value type, a redis-server per run, and a latency
// histogram.

// cacheNode is one node of the multiget, hotexpiry and dbdown workloads:
// its own client (ContextTimeoutEnabled, as a tiered user is told to
// configure it), bus and cache; nodes share nothing but the server.
type cacheNode[V any] struct {
	rdb   *redis.Client
	bus   *pubsub.Bus
	cache *tiered.Cache[V]
}

// newCacheNode builds a node on addr with opts (its Bus is set here) and
// waits until its cache is ready.
func newCacheNode[V any](ctx context.Context, addr string, opts tiered.Options) (*cacheNode[V], error) {
	n := &cacheNode[V]{rdb: faultClient(addr)}
	var err error
	if n.bus, err = pubsub.New(n.rdb, nil); err != nil {
		n.close()
		return nil, err
	}
	opts.Bus = n.bus
	if n.cache, err = tiered.New[V](n.rdb, &opts); err != nil {
		n.close()
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.cache.WaitReady(wctx); err != nil {
		n.close()
		return nil, fmt.Errorf("node never ready: %w", err)
	}
	return n, nil
}

func (n *cacheNode[V]) close() {
	if n.cache != nil {
		n.cache.Close()
	}
	if n.bus != nil {
		n.bus.Close()
	}
	n.rdb.Close()
}

// newCacheNodes builds count nodes on addr with opts; close them with
// closeNodes, also when it fails.
func newCacheNodes[V any](ctx context.Context, addr string, count int, opts tiered.Options) ([]*cacheNode[V], error) {
	nodes := make([]*cacheNode[V], 0, count)
	for i := range count {
		n, err := newCacheNode[V](ctx, addr, opts)
		if err != nil {
			return nodes, fmt.Errorf("node %d: %w", i, err)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// statsOf returns each node's cache Stats now: the baseline a workload
// subtracts from its final figures.
func statsOf[V any](nodes []*cacheNode[V]) []tiered.Stats {
	s := make([]tiered.Stats, len(nodes))
	for i, n := range nodes {
		s[i] = n.cache.Stats()
	}
	return s
}

func closeNodes[V any](nodes []*cacheNode[V]) {
	for _, n := range nodes {
		n.close()
	}
}

// withServer runs f on a redis-server started for it and stopped when f
// returns, after collecting the garbage of earlier runs.
func withServer(what string, f func(addr string) error) error {
	srv, err := redistest.StartProcess()
	if err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "benchfleet: %s: redis-server on %s, GOMAXPROCS=%d\n", what, srv.Addr, runtime.GOMAXPROCS(0))
	runtime.GC()
	return f(srv.Addr)
}

// hist is a histogram of durations with histSub buckets per power of two
// (a relative error under 1/histSub), for workloads that make too many
// reads to keep every latency. The zero hist is empty.
type hist struct {
	counts [64 * histSub]uint64
	n      uint64
	sum    time.Duration
	max    time.Duration
}

const (
	histBits = 5
	histSub  = 1 << histBits
)

// histBucket returns the bucket of d: d itself below 2·histSub ns, else
// one of histSub buckets of d's power of two.
func histBucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 2*histSub {
		return int(v)
	}
	s := bits.Len64(v) - histBits - 1 // v>>s is in [histSub, 2·histSub)
	return 2*histSub + (s-1)*histSub + int(v>>s) - histSub
}

// histLow returns the smallest duration in bucket i.
func histLow(i int) time.Duration {
	if i < 2*histSub {
		return time.Duration(i)
	}
	s := (i-2*histSub)/histSub + 1
	return time.Duration(uint64((i-2*histSub)%histSub+histSub) << s)
}

func (h *hist) add(d time.Duration) {
	h.counts[histBucket(d)]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile by the nearest-rank method, as the
// lower bound of its bucket; q = 1 is the maximum, exact.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	rank := max(uint64(math.Ceil(q*float64(h.n))), 1)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return histLow(i)
		}
	}
	return h.max
}

// usf returns d in microseconds.
func usf(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// offOn runs a workload twice, each on a redis-server of its own: with
// its option off (0), then on (the value on). run prints the run's line;
// it returns the run's missed targets (a figure the workload checks) and
// its error (the run itself failed). offOn reports the missed targets of
// both runs together, after both ran.
func offOn(ctx context.Context, workload, option string, on time.Duration, run func(addr, name string, d time.Duration) (missed, err error)) error {
	var failed []error
	for _, d := range []time.Duration{0, on} {
		name := map[bool]string{false: "off", true: "on"}[d > 0]
		var missed error
		err := withServer(workload+" "+option+"="+name, func(addr string) error {
			var err error
			missed, err = run(addr, name, d)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s %s=%s: %w", workload, option, name, err)
		}
		if missed != nil {
			failed = append(failed, missed)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s: %w", workload, errors.Join(failed...))
	}
	return nil
}
