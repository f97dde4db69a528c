// Command bench compares tiered with the libraries a user would otherwise
// pick, on the same workloads against one real redis-server:
// go-redis/cache v9 (a TinyLFU local cache over go-redis, no cross-node
// invalidation), rueidis with server-assisted client-side caching
// (DoCache: Redis's CLIENT TRACKING invalidates local copies) and plain
// go-redis (no local cache: GET, then load and SET on a miss). rueidisaside
// is left out: its module cannot be fetched here.
//
// It starts a redis-server on a free loopback port (internal/redistest)
// and stops it at the end, runs the workloads one library at a time
// (FLUSHALL between), prints a markdown table on stdout and, with -docs
// and -svg, writes the table between the markers in docs/benchmarks.md
// and a bar chart to docs/bench-peers.svg. Each workload's file defines it:
//
//	l1hit.go       warm local-cache hit, serial and parallel (testing.Benchmark)
//	zipf.go        Zipf reads over 50k keys, Redis warm and cold: reads/s, p99, CPU per read
//	stampede.go    3 nodes × 100 goroutines on one cold key, 50 ms loader
//	invalidate.go  one node invalidates, another reads until it sees the change
//	multiget.go    100-key batch reads, local cache warm and cold
//	faults.go      CLIENT PAUSE 1s while one node writes and two read
//
// Every library is used through its public API as its documentation
// shows; peer_*.go hold the four adapters. Progress, and tiered's Stats
// after the runs that explain its figures, go to stderr. The
// exit status is non-zero if a workload failed to run (not if a library
// served stale data: that is a result).
//
// Usage (make bench-peers runs it from bench/ with -docs and -svg):
//
//	go run . [-workloads l1hit,zipf,stampede,invalidate,multiget,faults] [-peers tiered,go-redis/cache,rueidis,go-redis]
//	         [-benchtime 300ms] [-rounds 3] [-zipfreads 8000] [-trials 100] [-faultdur 6s] [-docs ../docs/benchmarks.md] [-svg ../docs/bench-peers.svg]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// config holds the command-line flags; docs/benchmarks.md states their
// defaults as the parameters of the published table.
type config struct {
	workloads []string
	kinds     []kind

	benchtime string // testing.Benchmark's -test.benchtime, per run
	rounds    int    // interleaved rounds of each L1-hit benchmark
	hitKeys   int    // warm keys the L1-hit benchmarks cycle over

	zipfKeys       int
	zipfS          float64
	zipfReads      int // per goroutine
	zipfGoroutines int
	zipfLoad       time.Duration // loader delay of the Zipf runs

	nodes        int // stampede and faults nodes
	callers      int // stampede goroutines per node
	stampedeKeys int
	warmupKeys   int
	loader       time.Duration // stampede loader delay

	trials int           // invalidation trials
	invCap time.Duration // a reader gives up on a trial after this
	poll   time.Duration // an invalidation reader's pause between reads

	mgetKeys  int
	mgetIters int

	faultDur     time.Duration
	faultKeys    int
	faultReaders int           // per reading node
	faultWrites  int           // writes per second
	pause        time.Duration // CLIENT PAUSE length
	pace         time.Duration // a fault reader's sleep between reads
	staleBound   time.Duration

	docs, svg string
}

var workloadNames = []string{"l1hit", "zipf", "stampede", "invalidate", "multiget", "faults"}

func main() {
	testing.Init() // testing.Benchmark reads -test.benchtime
	var cfg config
	workloads := flag.String("workloads", strings.Join(workloadNames, ","), "comma-separated workloads, out of "+strings.Join(workloadNames, ","))
	peers := flag.String("peers", strings.Join(kindNames(), ","), "comma-separated libraries, out of "+strings.Join(kindNames(), ","))
	flag.StringVar(&cfg.benchtime, "benchtime", "300ms", "testing.Benchmark's benchtime for each L1-hit run")
	flag.IntVar(&cfg.rounds, "rounds", 3, "interleaved rounds of each L1-hit benchmark; the table gives the median")
	flag.IntVar(&cfg.hitKeys, "hitkeys", 1000, "warm keys the L1-hit benchmarks cycle over")
	flag.IntVar(&cfg.zipfKeys, "zipfkeys", 50_000, "keys of the Zipf workload")
	flag.Float64Var(&cfg.zipfS, "zipfs", 1.1, "Zipf exponent s (> 1)")
	flag.IntVar(&cfg.zipfReads, "zipfreads", 8000, "reads per goroutine of each Zipf run")
	flag.IntVar(&cfg.zipfGoroutines, "zipfg", 16, "reading goroutines of each Zipf run")
	flag.DurationVar(&cfg.zipfLoad, "zipfload", time.Millisecond, "loader delay of the Zipf runs")
	flag.IntVar(&cfg.nodes, "nodes", 3, "nodes of the stampede and faults workloads (≥ 2)")
	flag.IntVar(&cfg.callers, "callers", 100, "stampede goroutines per node")
	flag.IntVar(&cfg.stampedeKeys, "stampedekeys", 5, "cold keys per library in the stampede workload")
	flag.IntVar(&cfg.warmupKeys, "warmup", 1, "stampede keys run first and not counted")
	flag.DurationVar(&cfg.loader, "loader", 50*time.Millisecond, "stampede loader delay")
	flag.IntVar(&cfg.trials, "trials", 100, "invalidation trials per library")
	flag.DurationVar(&cfg.invCap, "invcap", time.Second, "an invalidation reader gives up on a trial after this")
	flag.DurationVar(&cfg.poll, "poll", 50*time.Microsecond, "an invalidation reader's pause between reads (a nanosleep on Linux)")
	flag.IntVar(&cfg.mgetKeys, "mgetkeys", 100, "keys per batch read")
	flag.IntVar(&cfg.mgetIters, "mgetiters", 200, "batch reads per library and case")
	flag.DurationVar(&cfg.faultDur, "faultdur", 6*time.Second, "length of each fault run")
	flag.IntVar(&cfg.faultKeys, "faultkeys", 50, "keys of the faults workload")
	flag.IntVar(&cfg.faultReaders, "faultreaders", 4, "reading goroutines per reading node in the faults workload")
	flag.IntVar(&cfg.faultWrites, "faultwrites", 100, "writes per second in the faults workload")
	flag.DurationVar(&cfg.pause, "pause", time.Second, "CLIENT PAUSE length in the faults workload")
	flag.DurationVar(&cfg.pace, "pace", time.Millisecond, "a fault reader's sleep between reads")
	flag.DurationVar(&cfg.staleBound, "stalebound", 100*time.Millisecond, "a read is stale if it returns a value older than a write acknowledged this long before it began")
	flag.StringVar(&cfg.docs, "docs", "", "markdown file whose bench-peers markers receive the table (empty: none)")
	flag.StringVar(&cfg.svg, "svg", "", "SVG file to write the chart to (empty: none)")
	flag.Parse()
	if err := cfg.parse(*workloads, *peers); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		flag.Usage()
		os.Exit(2)
	}
	if err := flag.Set("test.benchtime", cfg.benchtime); err != nil {
		fmt.Fprintln(os.Stderr, "bench: -benchtime:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (c *config) parse(workloads, peers string) error {
	var err error
	if c.workloads, err = list(workloads, workloadNames); err != nil {
		return fmt.Errorf("-workloads: %w", err)
	}
	names, err := list(peers, kindNames())
	if err != nil {
		return fmt.Errorf("-peers: %w", err)
	}
	for _, k := range kinds {
		if slices.Contains(names, k.name) {
			c.kinds = append(c.kinds, k)
		}
	}
	switch {
	case c.nodes < 2:
		return errors.New("-nodes must be at least 2")
	case c.zipfS <= 1:
		return errors.New("-zipfs must be > 1")
	case c.rounds < 1 || c.hitKeys < 1 || c.zipfKeys < 1 || c.zipfGoroutines < 1 || c.zipfReads < 1 || c.callers < 1 ||
		c.stampedeKeys < 1 || c.trials < 1 || c.mgetKeys < 1 || c.mgetIters < 1 || c.faultKeys < 1 ||
		c.faultReaders < 1 || c.faultWrites < 1:
		return errors.New("counts must be positive")
	case c.warmupKeys < 0:
		return errors.New("-warmup must not be negative")
	case c.faultDur < 3*c.pause:
		return errors.New("-faultdur must be at least 3 × -pause")
	}
	return nil
}

// list parses a comma-separated list of names out of allowed.
func list(s string, allowed []string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !slices.Contains(allowed, f) {
			return nil, fmt.Errorf("unknown %q (want some of %s)", f, strings.Join(allowed, ","))
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// env is what a workload runs against: the server, an admin client on it,
// and the configuration.
type env struct {
	cfg   config
	addr  string
	admin *redis.Client
}

// flush empties the server between libraries, so that none reads
// another's keys or pays for another's memory.
func (e *env) flush(ctx context.Context) error {
	return e.admin.FlushAll(ctx).Err()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(ctx context.Context, cfg config) error {
	redistest.QuietLogs() // rueidis and go-redis log reconnections during the pause
	srv, err := redistest.StartProcess()
	if err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	defer srv.Stop()
	e := &env{cfg: cfg, addr: srv.Addr, admin: redis.NewClient(&redis.Options{Addr: srv.Addr})}
	defer e.admin.Close()
	m, err := machineInfo(ctx, e.admin)
	if err != nil {
		return err
	}
	logf("redis-server %s on %s; %s", m.redis, srv.Addr, m)
	rep := &report{kinds: cfg.kinds}
	start := time.Now()
	for _, w := range cfg.workloads {
		t := time.Now()
		logf("workload %s", w)
		if err := workloads[w](ctx, e, rep); err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
		logf("workload %s took %.1fs", w, time.Since(t).Seconds())
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	m.took = time.Since(start)
	return rep.write(cfg, m)
}

// workloads run one workload each and add its rows to the report.
var workloads = map[string]func(context.Context, *env, *report) error{
	"l1hit":      runL1Hit,
	"zipf":       runZipf,
	"stampede":   runStampede,
	"invalidate": runInvalidate,
	"multiget":   runMultiget,
	"faults":     runFaults,
}
