// Command benchfleet measures a fleet of tiered caches against one real
// redis-server: how many times a cold key is loaded when every node
// stampedes it, how long an invalidation takes to reach the other nodes, and
// whether any read is stale while Redis and the network fail.
//
// It starts its own redis-server (package redistest) and stops it before
// exiting, creates -nodes independent nodes (each its own go-redis client,
// pubsub.Bus and tiered.Cache; they share nothing but the server) and prints
// one line of key=value pairs per workload on stdout:
//
//	workload=stampede nodes=3 callers=300 keys=20 warmup_keys=1 loader_ms=50 loads_per_key_mean=… loads_per_key_max=… follower_p50_ms=… follower_p99_ms=…
//	workload=invalidate nodes=3 trials=200 p50_ms=… p99_ms=… max_ms=… stale_after_2s=… ryw_stale=… publish_p99_ms=… reload_p99_ms=…
//	workload=faults readers=paced nodes=3 readers_per_node=4 keys=2000 duration_s=… stale_100ms=… stale_after_error_1s=… max_staleness_ms=… reads_s=… writes_s=… read_errors=… write_errors=… queued_writes=… outboxed_keys=… breaker_opens=… l1_hit_ratio=… pings_s=…/…/…
//	workload=faults readers=flat …
//	workload=multiget case=l1cold|l1hit|cold …
//	workload=hotexpiry fresh=off|on …
//	workload=dbdown maxstale=off|on …
//	workload=http nodes=3 … bare_rps=… cached_rps=… rps_ratio=… handler_runs=… runs_per_key_per_ttl=… errors=…
//
// multiget (multiget.go) times GetMany of 100 keys against a raw MGET plus
// decoding of the same keys, side by side; hotexpiry (hotexpiry.go) reads
// one hot key flat out while it expires, with refresh-ahead off and on;
// dbdown (dbdown.go) reads while the loader fails and the values expire,
// with fail-safe off and on; http (http.go) serves a JSON list through
// the httpcache middleware and bare, side by side. Each file's comment
// gives its line and figures; each run starts a redis-server and nodes of
// its own.
//
// The faults workload (faults.go, which defines its figures) makes one run
// per reader mode, each on a redis-server and nodes of its own: readers and
// writers on every node while the program kills, pauses and silences
// connections, and a checker of every read against the log of writes.
// reads_s and writes_s are measured rates (the writers aim at 100 writes/s
// in all); write_errors counts the Deletes that failed without ErrQueued,
// queued_writes those that returned it, outboxed_keys the keys the writes
// put in the outbox (delivered within the write's deadline or not), pings_s
// each node's bus PINGs per second. -workloads selects workloads, -faultdur
// sets the length of a fault run and -faultreaders its reader modes.
//
// Progress, diagnostics and the comparison with the targets go to stderr;
// -v adds a line per stampede key, and the library's and go-redis's logs
// during the fault runs.
//
// Like testing.B, the stampede workload does not measure setup: it first
// collects the garbage of building the nodes (-setupgc), then runs -warmup
// keys that are not counted (the first stampede of a process grows 300
// goroutine stacks and dials connections). docs/benchmarks.md gives the
// figures with both turned off too.
//
// Every figure is measured; none is clamped. The exit status is non-zero when
// the run failed (an error, a node that never saw an invalidation, or a
// fault run that counted a stale read, a read error or a write error other
// than ErrQueued, a hotexpiry run with Fresh that made a caller wait or
// loaded twice in a period, a dbdown run with MaxStale that returned an
// error, or an http run with an error or more than one handler run per key
// per TTL); every line is printed first.
//
// Usage:
//
//	go run ./internal/cmd/benchfleet [-workloads stampede,invalidate,faults,multiget,hotexpiry,dbdown,http] [-nodes 3] [-trials 200] [-keys 20] [-warmup 1] [-setupgc=true] [-v] [-callers 100] [-loader 50ms] [-poll 1ms] [-spin] [-faultdur 20s] [-faultreaders paced,flat] [-pace 100µs] [-silenceresume] [-cluster]
package main

// The files, one job each: config.go (flags); node.go (a node of the
// stampede and invalidate fleet), fleet.go (that fleet's runs, lines and
// verdicts), stampede.go, invalidate.go with source.go (its source of
// truth and readers' pacing), probe.go (the PUBLISH and PING baseline),
// cluster.go (-cluster); faults.go (the faults workload and its line),
// faultrun.go (its readers, writers and samplers), faultnode.go,
// faultdb.go, faultinject.go, faultcheck.go (the stale-read checker and
// traces); multiget.go, hotexpiry.go, dbdown.go, http.go, and
// cachenode.go (the node and server they share); hist.go (a latency
// histogram) and format.go (units and verdicts). Exact percentiles come
// from package internal/stats.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := parseConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchfleet:", err)
		flag.Usage()
		os.Exit(2)
	}
	// A signal cancels ctx, so that run returns and stops redis-server.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchfleet:", err)
		os.Exit(1)
	}
}

// run runs the workloads cfg selects, in the order of workloadNames, and
// returns the errors of all of them; it stops early when ctx is done.
func run(ctx context.Context, cfg config) error {
	var err error
	if cfg.workloads["stampede"] || cfg.workloads["invalidate"] {
		err = runFleet(ctx, cfg)
		if ctx.Err() != nil {
			return err
		}
	}
	for _, w := range []struct {
		name string
		run  func() error
	}{
		{"faults", func() error { return runFaults(ctx, cfg) }},
		{"multiget", func() error { return runMultiget(ctx) }},
		{"hotexpiry", func() error { return runHotExpiry(ctx, cfg) }},
		{"dbdown", func() error { return runDBDown(ctx, cfg) }},
		{"http", func() error { return runHTTP(ctx, cfg) }},
	} {
		if cfg.workloads[w.name] && ctx.Err() == nil {
			err = errors.Join(err, w.run())
		}
	}
	return err
}
