// Command cluster runs a small fleet of tiered caches in front of one Redis
// and one SQLite database, drives load through it, and reports what happened.
//
// The parent process starts Redis (an embedded miniredis, unless -redis names
// a server or says auto: a redis-server of its own, or -cluster asks for a
// Redis Cluster of its own, see rediscluster.go), seeds a SQLite file with
// products, and re-executes itself as -nodes node processes. Each node has
// its own Redis clients, invalidation bus and tiered.Cache, and serves
//
//	GET /products/{id}   the product, through the cache (404 if absent)
//	PUT /products/{id}   {"price": cents}: update the row, then invalidate
//	GET /stats           the node's counters, as JSON
//	GET /metrics         the same through OpenTelemetry, in the Prometheus
//	                     text format (metrics.go)
//	GET /http/...        cached JSON endpoints, public and per identity,
//	                     through the tiered/httpcache middleware (http.go)
//
// on a free loopback port. The parent then sends one burst of concurrent
// requests for a cold product through every node, Zipf-distributed reads and
// a trickle of writes for -seconds, prints a table of every node's counters
// each second, checks that no read starting more than -bound after a write's
// acknowledgment (-error-bound after a write whose invalidation was queued)
// returns an older version, through the product API and the cached HTTP
// endpoints alike, and that no HTTP answer of one identity reaches another,
// and ends with a summary line. It exits non-zero if a read was stale, an
// identity got another's answer, a request failed, or the cold burst loaded
// the product more than once. -chaos injects faults in turn: a cut of every
// connection, CLIENT PAUSE ALL and WRITE, a silent subscriber, and a kill
// and restart of the server (see chaos.go).
//
// See docs/example.md in the repository.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

func main() {
	if _, ok := os.LookupEnv(envNode); ok {
		os.Exit(nodeMain())
	}
	os.Exit(parentMain(os.Args[1:]))
}

func parentMain(args []string) int {
	cfg, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := run(ctx, cfg, os.Stdout)
	if err != nil && ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "cluster: interrupted; nodes stopped, files removed")
		return 130
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	if !s.OK() {
		return 1
	}
	return 0
}

// config is what a run does; the flags set it.
type config struct {
	Nodes       int
	Duration    time.Duration
	Redis       string // host:port of a real server; "auto": one the run starts; empty: miniredis
	Cluster     bool   // a Redis Cluster the run starts, instead of Redis
	Chaos       bool
	Bound       time.Duration // after an acknowledged write
	ErrorBound  time.Duration // after a write answered with its invalidation queued
	Products    int
	Readers     int
	HTTPReaders int     // concurrent readers of the cached HTTP endpoints
	WriteRate   float64 // writes per second
	Burst       int     // concurrent requests per node in the cold burst
	Quiet       bool    // no per-second table
}

// Default durations of the load phase: -chaos runs longer, so that each of
// its faults has a few seconds to itself.
const (
	defaultSeconds      = 20
	defaultChaosSeconds = 25
)

func defaultConfig() config {
	return config{
		Nodes:       3,
		Duration:    defaultSeconds * time.Second,
		Bound:       tiered.DefaultMaxStaleness,
		ErrorBound:  tiered.DefaultWriteTimeout,
		Products:    10000,
		Readers:     8,
		HTTPReaders: 4,
		WriteRate:   10,
		Burst:       50,
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: cluster [flags]\n\n"+
			"Runs a fleet of tiered cache nodes over Redis and SQLite, drives load through\n"+
			"them and checks that no node serves stale data. Ends with a summary line;\n"+
			"exits 1 on a stale read, an error, or a cold burst that loaded twice.\n\nflags:\n")
		fs.PrintDefaults()
	}
	seconds := fs.Int("seconds", defaultSeconds, fmt.Sprintf("how long to drive load, in seconds (%d with -chaos)", defaultChaosSeconds))
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "number of node processes")
	fs.StringVar(&cfg.Redis, "redis", "", "`host:port` of a Redis server to use instead of an embedded miniredis, "+
		"or \"auto\" to start a redis-server (from PATH) for the run")
	fs.BoolVar(&cfg.Cluster, "cluster", false, "start a Redis Cluster (3 masters, 3 replicas; redis-server and redis-cli "+
		"from PATH) for the run instead of Redis; the nodes use Cluster clients and sharded pub/sub")
	fs.BoolVar(&cfg.Chaos, "chaos", false, "inject faults in turn: cut every connection, CLIENT PAUSE ALL, CLIENT PAUSE WRITE, "+
		"a silent subscriber, and (miniredis: with its data; -redis auto: empty) kill Redis and restart it")
	fs.DurationVar(&cfg.Bound, "bound", cfg.Bound, "a read starting this long after a write's acknowledgment must not return an older version")
	fs.DurationVar(&cfg.ErrorBound, "error-bound", cfg.ErrorBound, "the same after a write whose invalidation was queued (its Delete returned ErrQueued)")
	fs.IntVar(&cfg.Products, "products", cfg.Products, "number of products seeded in the database")
	fs.IntVar(&cfg.Readers, "readers", cfg.Readers, "concurrent readers")
	fs.IntVar(&cfg.HTTPReaders, "http-readers", cfg.HTTPReaders, "concurrent readers of the cached HTTP endpoints (/http/...)")
	fs.Float64Var(&cfg.WriteRate, "writes", cfg.WriteRate, "writes per second")
	fs.IntVar(&cfg.Burst, "burst", cfg.Burst, "concurrent requests per node in the cold-key burst")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "do not print the per-second table")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected arguments %q", fs.Args())
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return cfg, err
	}
	cfg.Duration = time.Duration(*seconds) * time.Second
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "seconds" })
	if cfg.Chaos && !set {
		cfg.Duration = defaultChaosSeconds * time.Second
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return cfg, err
	}
	return cfg, nil
}

func (c config) validate() error {
	switch {
	case c.Nodes < 2:
		return errors.New("-nodes must be at least 2: the probe reads through the nodes that did not write")
	case c.Duration <= 0:
		return errors.New("-seconds must be positive")
	case c.Bound <= 0 || c.ErrorBound <= 0:
		return errors.New("-bound and -error-bound must be positive")
	case c.Products < 2:
		return errors.New("-products must be at least 2")
	case c.Readers < 1 || c.HTTPReaders < 1 || c.Burst < 1:
		return errors.New("-readers, -http-readers and -burst must be positive")
	case c.WriteRate <= 0 || c.WriteRate > 1000:
		return errors.New("-writes must be in (0, 1000]")
	case c.Cluster && c.Redis != "":
		return errors.New("-cluster starts a Redis Cluster of its own: it cannot be combined with -redis")
	case c.Cluster && c.Chaos:
		return errClusterChaos
	}
	return nil
}

// run runs the whole cluster: database, Redis, nodes, driver. It stops every
// node and removes every file it made before it returns. It returns ctx's
// error if ctx ends first.
func run(ctx context.Context, cfg config, out io.Writer) (summary, error) {
	if err := cfg.validate(); err != nil {
		return summary{}, err
	}
	exe, err := os.Executable() // a binary whose main calls nodeMain
	if err != nil {
		return summary{}, err
	}
	pr := &printer{w: out}

	dir, err := os.MkdirTemp("", "tiered-cluster-")
	if err != nil {
		return summary{}, err
	}
	defer os.RemoveAll(dir)
	dbPath := filepath.Join(dir, "products.db")
	cat, err := openCatalog(dbPath)
	if err != nil {
		return summary{}, err
	}
	defer cat.Close()
	if err := cat.seed(ctx, cfg.Products); err != nil {
		return summary{}, fmt.Errorf("seeding the database: %w", err)
	}

	var rs *redisServer
	if cfg.Cluster {
		rs, err = startCluster(ctx, dir)
	} else {
		rs, err = startRedis(ctx, cfg.Redis, dir)
	}
	if err != nil {
		return summary{}, err
	}
	defer rs.Close()

	// A namespace (and so a bus channel) of its own, so that a run on a
	// shared Redis starts cold and hears no other run.
	ns := "tiered-example:" + rand.Text()[:8]
	ncs := make([]nodeConfig, cfg.Nodes)
	for i := range ncs {
		ncs[i] = nodeConfig{Name: fmt.Sprintf("node%d", i+1), RedisAddr: rs.addr, BusAddr: rs.addr, DBPath: dbPath, Namespace: ns}
		if rs.cluster != nil {
			ncs[i].ClusterAddrs = rs.cluster.addrs()
		}
	}
	var proxies []nodeProxies
	if cfg.Chaos {
		if proxies, err = startProxies(cfg.Nodes, rs.addr); err != nil {
			return summary{}, err
		}
		defer closeProxies(proxies) // after the nodes have stopped
		for i, p := range proxies {
			ncs[i].RedisAddr, ncs[i].BusAddr = p.data.Addr(), p.bus.Addr()
		}
	}
	nodes, err := startNodes(ctx, exe, ncs, os.Stderr)
	if err != nil {
		return summary{}, err
	}
	defer stopNodes(nodes)

	pr.printf("cluster: %d products in %s (SQLite, WAL), %s, cache namespace %q", cfg.Products, dbPath, rs, ns)
	for i, n := range nodes {
		via := ""
		if proxies != nil {
			via = fmt.Sprintf("  redis via proxies %s (cache), %s (bus)", ncs[i].RedisAddr, ncs[i].BusAddr)
		}
		pr.printf("  %s  pid %-7d http://%s%s", n.name, n.cmd.Process.Pid, n.addr, via)
	}
	pr.printf("  cache: TTL %v, negative TTL %v, lease TTL %v; tiered defaults otherwise (L1TTL = TTL)",
		cacheTTL, negativeTTL, leaseTTL)

	d := newDriver(cfg, pr, nodes, proxies, cat, rs, ns)
	defer d.close()
	return d.run(ctx)
}
