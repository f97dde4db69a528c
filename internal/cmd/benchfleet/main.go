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
//	go run ./internal/cmd/benchfleet [-workloads stampede,invalidate,faults,multiget,hotexpiry,dbdown,http] [-nodes 3] [-trials 200] [-keys 20] [-warmup 1] [-setupgc=true] [-v] [-callers 100] [-loader 50ms] [-poll 1ms] [-spin] [-faultdur 20s] [-faultreaders paced,flat] [-pace 100µs] [-silenceresume]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/pubsub"
	"github.com/tieredcache/tiered/tiered"
)

// config holds the command-line flags.
type config struct {
	nodes   int
	trials  int
	keys    int
	callers int           // per node
	warmup  int           // stampede warm-up keys, not counted
	setupGC bool          // collect the garbage of building the nodes before measuring
	verbose bool          // print one line per stampede key
	loader  time.Duration // stampede loader duration
	poll    time.Duration // longest pause between an invalidate reader's reads
	spin    bool          // invalidate readers spin instead of pausing

	workloads     map[string]bool // the workloads to run
	faultDur      time.Duration   // length of each fault run
	faultReaders  []string        // reader modes of the fault runs, one run each
	pace          time.Duration   // pause before each read of a paced fault reader
	silenceResume bool            // end the silent subscriber's silence with Resume, not a cut
	cluster       bool            // stampede and invalidate on a local Cluster, each bus mode (cluster.go)
}

// workloadNames are the workloads, in the order they run.
var workloadNames = []string{"stampede", "invalidate", "faults", "multiget", "hotexpiry", "dbdown", "http"}

// readerModes are the fault runs' reader modes.
var readerModes = []string{"paced", "flat"}

// listFlag parses a comma-separated list of names out of allowed.
func listFlag(s string, allowed []string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(allowed, f) {
			return nil, fmt.Errorf("unknown %q (want some of %s)", f, strings.Join(allowed, ","))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list (want some of %s)", strings.Join(allowed, ","))
	}
	return out, nil
}

func main() {
	var cfg config
	flag.IntVar(&cfg.nodes, "nodes", 3, "number of independent nodes (≥ 2)")
	flag.IntVar(&cfg.trials, "trials", 200, "invalidation trials")
	flag.IntVar(&cfg.keys, "keys", 20, "cold keys in the stampede workload")
	flag.IntVar(&cfg.warmup, "warmup", 1, "stampede warm-up keys, run first and not counted (their figures go to stderr)")
	flag.BoolVar(&cfg.setupGC, "setupgc", true, "collect the garbage of building the nodes before the stampede, as testing.B does before a benchmark")
	flag.BoolVar(&cfg.verbose, "v", false, "print a line per stampede key on stderr")
	flag.IntVar(&cfg.callers, "callers", 100, "concurrent callers per node and key in the stampede workload")
	flag.DurationVar(&cfg.loader, "loader", 50*time.Millisecond, "duration of the stampede loader")
	flag.DurationVar(&cfg.poll, "poll", time.Millisecond, "longest pause between an invalidate reader's reads; it ends early when the reader's bus delivers the invalidation")
	flag.BoolVar(&cfg.spin, "spin", false, "invalidate readers spin (yielding with runtime.Gosched) instead of pausing; on few cores this starves redis-server and the buses")
	workloads := flag.String("workloads", strings.Join(workloadNames, ","), "comma-separated workloads to run, out of "+strings.Join(workloadNames, ","))
	flag.DurationVar(&cfg.faultDur, "faultdur", 20*time.Second, "length of each fault run (at least 12s: the faults are placed at fractions of it)")
	faultReaders := flag.String("faultreaders", strings.Join(readerModes, ","), "comma-separated reader modes of the faults workload, one run and one line each: paced (a -pace pause before each read), flat (no pause)")
	flag.DurationVar(&cfg.pace, "pace", 100*time.Microsecond, "pause before each read of a paced fault reader")
	flag.BoolVar(&cfg.silenceResume, "silenceresume", false, "end the silence of the faults workload's silent subscriber by forwarding its connections again, with the bytes dropped meanwhile missing (a stream TCP never delivers), instead of cutting them")
	flag.BoolVar(&cfg.cluster, "cluster", false, "run stampede and invalidate on a local Redis Cluster (3 masters, 3 replicas; needs redis-cli), once with the classic and once with the sharded bus, each followed by a busfanout line")
	flag.Parse()
	err := cfg.parseLists(*workloads, *faultReaders)
	if err == nil {
		err = cfg.validate()
	}
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

func (c *config) parseLists(workloads, faultReaders string) error {
	ws, err := listFlag(workloads, workloadNames)
	if err != nil {
		return fmt.Errorf("-workloads: %w", err)
	}
	c.workloads = map[string]bool{}
	for _, w := range ws {
		c.workloads[w] = true
	}
	if c.faultReaders, err = listFlag(faultReaders, readerModes); err != nil {
		return fmt.Errorf("-faultreaders: %w", err)
	}
	return nil
}

func (c config) validate() error {
	switch {
	case c.faultDur < minFaultDur:
		return fmt.Errorf("-faultdur must be at least %v", minFaultDur)
	case c.pace <= 0:
		return errors.New("-pace must be positive")
	case c.nodes < 2:
		return errors.New("-nodes must be at least 2: the invalidate workload needs a writer and a reader")
	case c.trials < 1 || c.keys < 1 || c.callers < 1:
		return errors.New("-trials, -keys and -callers must be positive")
	case c.warmup < 0:
		return errors.New("-warmup must not be negative")
	case c.loader <= 0:
		return errors.New("-loader must be positive")
	case c.poll <= 0:
		return errors.New("-poll must be positive")
	}
	return nil
}

// Item is the cached value type.
type Item struct {
	Key     string `json:"key"`
	Version int64  `json:"version"`
}

// node is one member of the fleet. Nodes share nothing but the Redis server.
type node struct {
	id         int
	rdb        redis.UniversalClient
	bus        *pubsub.Bus
	cache      *tiered.Cache[Item]
	arr        *arrivals
	unregister func()
}

// arrivals is a second handler on a node's bus for the cache's namespace,
// beside the cache's own: it records when the bus delivered the first
// invalidation of each key, for the diagnostics.
//
// It also lets a reader sleep until then instead of spinning: see
// invalidate.
type arrivals struct {
	mu      sync.Mutex // guards at and watches
	at      map[string]time.Time
	watches map[string]chan struct{} // closed at the key's first invalidation
}

func newArrivals() *arrivals {
	return &arrivals{at: map[string]time.Time{}, watches: map[string]chan struct{}{}}
}

func (a *arrivals) Invalidate(keys []string) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range keys {
		if _, ok := a.at[k]; ok {
			continue
		}
		a.at[k] = now
		if ch, ok := a.watches[k]; ok {
			close(ch)
			delete(a.watches, k)
		}
	}
}

// watch returns a channel closed when the bus delivers an invalidation of
// key; call it before the invalidation may happen.
func (a *arrivals) watch(key string) <-chan struct{} {
	ch := make(chan struct{})
	a.mu.Lock()
	defer a.mu.Unlock()
	a.watches[key] = ch
	return ch
}

func (a *arrivals) Wake([]string) {}
func (a *arrivals) Reset()        {}

// take returns and forgets the arrival time of key's invalidation.
func (a *arrivals) take(key string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[key]
	delete(a.at, key)
	delete(a.watches, key)
	return t, ok
}

func (n *node) close() {
	if n.unregister != nil {
		n.unregister()
	}
	if n.cache != nil {
		n.cache.Close()
	}
	if n.bus != nil {
		n.bus.Close()
	}
	n.rdb.Close()
}

const namespace = "bench"

func newNode(ctx context.Context, id int, tg target, cfg config) (*node, error) {
	n := &node{id: id, rdb: tg.client(), arr: newArrivals()}
	var err error
	if n.bus, err = pubsub.New(n.rdb, &pubsub.Options{Mode: tg.mode}); err != nil {
		n.close()
		return nil, err
	}
	n.unregister = n.bus.Register(namespace, n.arr)
	n.cache, err = tiered.New[Item](n.rdb, &tiered.Options{
		Namespace: namespace,
		TTL:       time.Minute,
		// The lease must outlive the load, or a second node loads too
		// (see Options.LeaseTTL); likewise the load timeout.
		LeaseTTL:    max(2*time.Second, 4*cfg.loader),
		LoadTimeout: max(tiered.DefaultLoadTimeout, 4*cfg.loader),
		Bus:         n.bus,
	})
	if err != nil {
		n.close()
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.bus.WaitHealthy(wctx); err != nil {
		n.close()
		return nil, fmt.Errorf("node %d: bus never became healthy: %w", id, err)
	}
	return n, nil
}

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

// runFleet runs the stampede and invalidate workloads, those of them that
// cfg selects, on one fleet of nodes over one redis-server; with -cluster,
// on a local Cluster instead, once with each bus mode.
func runFleet(ctx context.Context, cfg config) error {
	if cfg.cluster {
		return runClusterFleets(ctx, cfg)
	}
	srv, err := redistest.StartProcess()
	if err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "benchfleet: redis-server on %s, GOMAXPROCS=%d\n", srv.Addr, runtime.GOMAXPROCS(0))
	return runFleetOn(ctx, cfg, target{addrs: []string{srv.Addr}})
}

// runFleetOn runs the stampede and invalidate workloads on tg.
func runFleetOn(ctx context.Context, cfg config, tg target) error {
	nodes := make([]*node, 0, cfg.nodes)
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	for i := range cfg.nodes {
		n, err := newNode(ctx, i, tg, cfg)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}

	// Building the nodes allocated about 20 MB (mostly the ristretto caches'
	// admission counters); collect that garbage now, as testing.B does
	// before a benchmark runs, so that the cycle it would trigger does not
	// land in a measured stampede. Cycles that still do are counted.
	if cfg.setupGC {
		runtime.GC()
	}
	var (
		st  *stampedeResult
		inv *invalidateResult
	)
	if cfg.workloads["stampede"] {
		r, err := stampede(ctx, cfg, nodes)
		if err != nil {
			return fmt.Errorf("stampede: %w", err)
		}
		st = &r
		fmt.Printf("workload=stampede%s nodes=%d callers=%d keys=%d warmup_keys=%d loader_ms=%s loads_per_key_mean=%.2f loads_per_key_max=%d follower_p50_ms=%.2f follower_p99_ms=%.2f\n",
			tg.fields(), cfg.nodes, cfg.nodes*cfg.callers, cfg.keys, cfg.warmup, strconv.FormatFloat(msf(cfg.loader), 'f', -1, 64),
			st.loadsMean, st.loadsMax, msf(st.followerP50), msf(st.followerP99))
	}

	if cfg.workloads["invalidate"] {
		r, err := invalidate(ctx, cfg, nodes, tg)
		if err != nil {
			return fmt.Errorf("invalidate: %w", err)
		}
		inv = &r
		fmt.Printf("workload=invalidate%s nodes=%d trials=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f stale_after_2s=%d ryw_stale=%d publish_p99_ms=%.2f reload_p99_ms=%.2f\n",
			tg.fields(), cfg.nodes, cfg.trials, msf(inv.p50), msf(inv.p99), msf(inv.max), inv.staleAfter2s, inv.rywStale, msf(inv.publishP99), msf(inv.reloadP99))
	}

	report(cfg, st, inv, nodes)
	if inv != nil && inv.unconverged > 0 {
		return fmt.Errorf("invalidate: %d reads never saw the new version within %v", inv.unconverged, convergeLimit)
	}
	return nil
}

// report compares the figures of the workloads that ran (st, inv: nil if
// not) with the targets, on stderr.
func report(cfg config, st *stampedeResult, inv *invalidateResult, nodes []*node) {
	if st != nil {
		fmt.Fprintf(os.Stderr, "benchfleet: stampede: loads_per_key_max=%d (target 1): %s\n",
			st.loadsMax, verdict(st.loadsMax == 1))
		lim := cfg.loader + 5*time.Millisecond
		fmt.Fprintf(os.Stderr, "benchfleet: stampede: follower_p99=%.2fms (target ≤ loader+5ms = %.2fms): %s; follower max=%.2fms, leader p50=%.2fms\n",
			msf(st.followerP99), msf(lim), verdict(st.followerP99 <= lim), msf(st.followerMax), msf(st.leaderP50))
	}
	if inv != nil {
		budget := 2*inv.publishP99 + inv.reloadP99
		fmt.Fprintf(os.Stderr, "benchfleet: invalidate: p99=%.2fms (target ≤ 2×publish_p99 + one reload = 2×%.2f + %.2f = %.2fms; one reload = p99 of a cold GetOrLoad measured in this run, PING p99 %.2fms): %s\n",
			msf(inv.p99), msf(inv.publishP99), msf(inv.reloadP99), msf(budget), msf(inv.rttP99), verdict(inv.p99 <= budget))
		fmt.Fprintf(os.Stderr, "benchfleet: invalidate: stale_after_2s=%d ryw_stale=%d (targets 0): %s; publish p50=%.2fms max=%.2fms; flip-backs after convergence=%d\n",
			inv.staleAfter2s, inv.rywStale, verdict(inv.staleAfter2s == 0 && inv.rywStale == 0),
			msf(inv.publishP50), msf(inv.publishMax), inv.flipBacks)
	}
	for _, n := range nodes {
		s, b := n.cache.Stats(), n.bus.Stats()
		fmt.Fprintf(os.Stderr, "benchfleet: node %d: cache %+v bus %+v\n", n.id, s, b)
	}
}

// verdict names whether a target was met.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// ---------------------------------------------------------------------------
// stampede

type stampedeResult struct {
	loadsMean                float64
	loadsMax                 int64
	followerP50, followerP99 time.Duration
	followerMax              time.Duration
	leaderP50                time.Duration
	gcs                      uint32 // GC cycles that ended while a measured key's callers ran
}

// callerKey is the context key of a caller's ID. The loader runs on a
// context that keeps the values of the context of the caller that started
// the flight (see tiered.Loader), so it can tell which caller led the load.
type callerKey struct{}

// keyResult holds what one stampede on one key measured.
type keyResult struct {
	loads            int64
	follower, leader []time.Duration
	sameNode, other  []time.Duration // followers on the leader's node, and on the others
	// The leader's time in three parts: from its start to the loader's start
	// (L1 miss, Redis GET, lease), the loader itself (a timer of cfg.loader,
	// which fires late by the scheduler's slack), and from the loader's end
	// to its return (the fill). tail is the last caller's return minus the
	// loader's end.
	preLoad, inLoad, postLoad, tail time.Duration
	gcs                             uint32        // GC cycles that ended while the callers ran
	spread                          time.Duration // last caller's start minus the first's
}

// stampede runs cfg.warmup warm-up keys, then cfg.keys measured keys, one
// key after another; see stampedeKey.
//
// The warm-up keys run the same workload on the same nodes but are not
// counted: the first stampede of a process pays one-time costs (growing 300
// new goroutine stacks, the runtime's first scheduling of that many
// goroutines, the clients' first connections, loading the Lua scripts) that
// a benchmark iteration should not include. Their follower p99 is printed on
// stderr so that the cost stays visible.
func stampede(ctx context.Context, cfg config, nodes []*node) (stampedeResult, error) {
	var (
		res                               stampedeResult
		follower, leader, sameNode, other []time.Duration
		preLoad, inLoad, postLoad, tail   []time.Duration
		loadsSum                          int64
	)
	for k := range cfg.warmup {
		kr, err := stampedeKey(ctx, cfg, nodes, fmt.Sprintf("warmup-%d", k))
		if err != nil {
			return res, err
		}
		fmt.Fprintf(os.Stderr, "benchfleet: stampede: warm-up key %d (not counted): loads=%d follower p99=%.2fms max=%.2fms; leader start→loader %.2fms\n",
			k, kr.loads, msf(pct(sorted(kr.follower), .99)), msf(slices.Max(kr.follower)), msf(kr.preLoad))
	}
	for k := range cfg.keys {
		key := fmt.Sprintf("stampede-%d", k)
		kr, err := stampedeKey(ctx, cfg, nodes, key)
		if err != nil {
			return res, err
		}
		follower = append(follower, kr.follower...)
		leader = append(leader, kr.leader...)
		sameNode = append(sameNode, kr.sameNode...)
		other = append(other, kr.other...)
		preLoad = append(preLoad, kr.preLoad)
		inLoad = append(inLoad, kr.inLoad)
		postLoad = append(postLoad, kr.postLoad)
		tail = append(tail, kr.tail)
		loadsSum += kr.loads
		res.gcs += kr.gcs
		res.loadsMax = max(res.loadsMax, kr.loads)
		if kr.loads != 1 {
			fmt.Fprintf(os.Stderr, "benchfleet: stampede: key %s loaded %d times\n", key, kr.loads)
		}
		if cfg.verbose {
			fmt.Fprintf(os.Stderr, "benchfleet: stampede: key %s: follower p99=%.2fms max=%.2fms; leader start→loader %.2fms, loader %.2fms, loader→return %.2fms; loader's end→last return %.2fms; start spread %.2fms; gc cycles %d\n",
				key, msf(pct(sorted(kr.follower), .99)), msf(slices.Max(kr.follower)), msf(kr.preLoad), msf(kr.inLoad), msf(kr.postLoad), msf(kr.tail), msf(kr.spread), kr.gcs)
		}
	}
	for _, ds := range [][]time.Duration{follower, leader, sameNode, other, preLoad, inLoad, postLoad, tail} {
		slices.Sort(ds)
	}
	three := func(ds []time.Duration) string {
		return fmt.Sprintf("%.2f/%.2f/%.2f", msf(pct(ds, .5)), msf(pct(ds, .99)), msf(pct(ds, 1)))
	}
	fmt.Fprintf(os.Stderr, "benchfleet: stampede: %d follower and %d leader samples; followers on the leader's node p50=%.2fms p99=%.2fms, on other nodes p50=%.2fms p99=%.2fms max=%.2fms\n",
		len(follower), len(leader), msf(pct(sameNode, 0.5)), msf(pct(sameNode, 0.99)), msf(pct(other, 0.5)), msf(pct(other, 0.99)), msf(pct(other, 1)))
	fmt.Fprintf(os.Stderr, "benchfleet: stampede: per key p50/p99/max ms: leader start→loader %s, loader (a %v timer) %s, loader→leader's return %s; loader's end→last caller's return %s; GC cycles during measured keys %d\n",
		three(preLoad), cfg.loader, three(inLoad), three(postLoad), three(tail), res.gcs)
	res.loadsMean = float64(loadsSum) / float64(cfg.keys)
	res.followerP50 = pct(follower, 0.50)
	res.followerP99 = pct(follower, 0.99)
	res.followerMax = pct(follower, 1)
	res.leaderP50 = pct(leader, 0.50)
	return res, nil
}

// sorted returns a sorted copy of ds.
func sorted(ds []time.Duration) []time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds
}

// stampedeKey releases nodes × callers goroutines together on the cold key,
// all calling GetOrLoad with a loader that sleeps cfg.loader.
//
// Follower latency: the leader of a key is the caller whose flight ran the
// loader (the loader reads its ID from its context). Every other caller, on
// every node, is a follower: the callers that joined the leader's flight on
// the same node, and those on the other nodes whose flights waited for the
// lease. A caller's latency runs from the moment its goroutine passed the
// start barrier to GetOrLoad's return.
func stampedeKey(ctx context.Context, cfg config, nodes []*node, key string) (keyResult, error) {
	total := len(nodes) * cfg.callers
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gcBefore := ms.NumGC
	var (
		loads    atomic.Int64
		mu       sync.Mutex
		leaders  = map[int]bool{} // caller IDs whose flight ran the loader; guarded by mu
		loadSpan [2]time.Time     // the last load's start and end; guarded by mu
		t0s      = make([]time.Time, total)
		ends     = make([]time.Time, total)
		errs     = make([]error, total)
	)
	loader := tiered.LoaderFunc[Item](func(lctx context.Context, key string) (Item, error) {
		l0 := time.Now()
		loads.Add(1)
		id, ok := lctx.Value(callerKey{}).(int)
		if !ok {
			return Item{}, errors.New("loader context lacks the caller ID")
		}
		mu.Lock()
		leaders[id] = true
		mu.Unlock()
		t := time.NewTimer(cfg.loader)
		defer t.Stop()
		select {
		case <-t.C:
		case <-lctx.Done():
			return Item{}, lctx.Err()
		}
		mu.Lock()
		loadSpan = [2]time.Time{l0, time.Now()}
		mu.Unlock()
		return Item{Key: key, Version: 1}, nil
	})

	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for _, n := range nodes {
		for g := range cfg.callers {
			id := n.id*cfg.callers + g
			cctx := context.WithValue(ctx, callerKey{}, id)
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				ready.Done()
				<-start
				t0s[id] = time.Now()
				v, err := n.cache.GetOrLoad(cctx, key, loader)
				ends[id] = time.Now()
				if err == nil && (v.Key != key || v.Version != 1) {
					err = fmt.Errorf("node %d got %+v for %s", n.id, v, key)
				}
				errs[id] = err
			}()
		}
	}
	ready.Wait()
	close(start)
	done.Wait()
	if err := errors.Join(errs...); err != nil {
		return keyResult{}, err
	}
	runtime.ReadMemStats(&ms)
	kr := keyResult{loads: loads.Load(), gcs: ms.NumGC - gcBefore}
	leaderNodes := map[int]bool{}
	for id := range leaders {
		leaderNodes[id/cfg.callers] = true
	}
	for id := range total {
		d := ends[id].Sub(t0s[id])
		switch {
		case leaders[id]:
			kr.leader = append(kr.leader, d)
			// With more than one load (a failure of the run), this is the
			// last load and some leader.
			kr.preLoad = loadSpan[0].Sub(t0s[id])
			kr.postLoad = ends[id].Sub(loadSpan[1])
		case leaderNodes[id/cfg.callers]:
			kr.follower = append(kr.follower, d)
			kr.sameNode = append(kr.sameNode, d)
		default:
			kr.follower = append(kr.follower, d)
			kr.other = append(kr.other, d)
		}
	}
	kr.inLoad = loadSpan[1].Sub(loadSpan[0])
	kr.spread = slices.MaxFunc(t0s, time.Time.Compare).Sub(slices.MinFunc(t0s, time.Time.Compare))
	kr.tail = slices.MaxFunc(ends, time.Time.Compare).Sub(loadSpan[1])
	return kr, nil
}

// ---------------------------------------------------------------------------
// invalidate

// convergeLimit bounds how long a reader polls for the new version before
// the trial counts it as never converged (a failure of the run).
const convergeLimit = 10 * time.Second

// staleWindow: a read of the old version later than this after the Delete is
// counted in stale_after_2s.
const staleWindow = 2 * time.Second

// source is the source of truth: a version per key.
type source struct {
	mu       sync.Mutex // guards versions
	versions map[string]int64
}

func (s *source) get(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[key]
}

func (s *source) set(key string, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions[key] = v
}

// bump increments key's version and returns the new one.
func (s *source) bump(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versions[key]++
	return s.versions[key]
}

// Load reads the source; it does not sleep.
func (s *source) Load(_ context.Context, key string) (Item, error) {
	v := s.get(key)
	if v == 0 {
		return Item{}, tiered.ErrNotFound
	}
	return Item{Key: key, Version: v}, nil
}

type invalidateResult struct {
	p50, p99, max          time.Duration
	staleAfter2s           int64
	rywStale               int
	flipBacks              int64
	unconverged            int
	publishP50, publishP99 time.Duration
	publishMax             time.Duration
	rttP99                 time.Duration
	reloadP99              time.Duration // a cold GetOrLoad: Redis miss, lease, load, fill
}

// invalidate runs cfg.trials trials. In each, on a fresh key, every node
// holds the key in L1; node A (rotating) bumps the source version and calls
// Delete; A reads the key at once (read-your-writes), while every other node
// polls GetOrLoad until it returns the new version. The latency of a reader
// runs from Delete's return to the read that returned the new version.
//
// Between trials, on separate clients, it measures a raw PUBLISH → receive
// latency and a PING round trip, so that the baseline is taken in the same
// run and under the same conditions.
//
// After the last trial it waits until staleWindow has passed since the last
// Delete and reads every trial key on every node once more: any old version
// then is counted in stale_after_2s too (a late stale fill of L1 or Redis).
func invalidate(ctx context.Context, cfg config, nodes []*node, tg target) (invalidateResult, error) {
	src := &source{versions: map[string]int64{}}
	probe, err := newPublishProbe(ctx, tg)
	if err != nil {
		return invalidateResult{}, err
	}
	defer probe.close()

	var (
		res                     invalidateResult
		lat, pubLat, rtt        []time.Duration
		staleAfter2s, flipBacks atomic.Int64
		lastDelete              time.Time
		keys                    []string
		warmTime                time.Duration
		byPath                  = map[string][]time.Duration{}
		delivery                []time.Duration                // Delete returned → reader's bus handled the invalidation
		afterDelivery           = map[string][]time.Duration{} // handled → reader converged, by path
		writerReload            []time.Duration                // the writer's own read after Delete
	)
	for trial := range cfg.trials {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		key := fmt.Sprintf("inv-%d", trial)
		keys = append(keys, key)
		src.set(key, 1)
		w0 := time.Now()
		for _, n := range nodes {
			if err := warmL1(ctx, n, key, src); err != nil {
				return res, err
			}
		}
		warmTime += time.Since(w0)

		a := nodes[trial%len(nodes)]
		readers := make([]*node, 0, len(nodes)-1)
		for _, n := range nodes {
			if n != a {
				readers = append(readers, n)
			}
		}
		// tctx stops the readers early when the trial fails.
		tctx, tcancel := context.WithCancel(ctx)
		var (
			t0    time.Time // Delete returned; written before go is closed
			newV  int64
			goCh  = make(chan struct{})
			wg    sync.WaitGroup
			rlat  = make([]time.Duration, len(readers))
			rok   = make([]bool, len(readers))
			rpath = make([]string, len(readers))
			rerr  = make([]error, len(readers))
			ready sync.WaitGroup
		)
		for i, r := range readers {
			wg.Add(1)
			ready.Add(1)
			go func() {
				defer wg.Done()
				// Only this goroutine uses r during the trial, so the
				// deltas of r's counters tell which path the reload took.
				s0 := r.cache.Stats()
				delivered := r.arr.watch(key)
				ready.Done()
				<-goCh
				for {
					v, err := r.cache.GetOrLoad(tctx, key, src)
					now := time.Now()
					if err != nil {
						rerr[i] = fmt.Errorf("node %d: %w", r.id, err)
						return
					}
					since := now.Sub(t0)
					if v.Version >= newV {
						rlat[i], rok[i] = since, true
						rpath[i] = reloadPath(s0, r.cache.Stats())
						break
					}
					if since > staleWindow {
						staleAfter2s.Add(1)
					}
					if since > convergeLimit {
						return
					}
					pause(cfg, delivered)
				}
				// Once converged, a reader must not go back to the old
				// version (a late fill of the old value would do that).
				for range 3 {
					v, err := r.cache.GetOrLoad(tctx, key, src)
					if err != nil {
						rerr[i] = fmt.Errorf("node %d: %w", r.id, err)
						return
					}
					if v.Version < newV {
						flipBacks.Add(1)
					}
				}
			}()
		}
		ready.Wait()

		newV = src.bump(key)
		if err := a.cache.Delete(ctx, key); err != nil {
			tcancel()
			close(goCh)
			wg.Wait()
			return res, fmt.Errorf("node %d: Delete: %w", a.id, err)
		}
		t0 = time.Now()
		close(goCh)
		lastDelete = t0
		v, err := a.cache.GetOrLoad(ctx, key, src)
		writerReload = append(writerReload, time.Since(t0))
		if err != nil {
			tcancel()
			wg.Wait()
			return res, fmt.Errorf("node %d: read after own Delete: %w", a.id, err)
		}
		if v.Version < newV {
			res.rywStale++
		}
		wg.Wait()
		tcancel()
		if err := errors.Join(rerr...); err != nil {
			return res, err
		}
		for i := range readers {
			if rok[i] {
				lat = append(lat, rlat[i])
				byPath[rpath[i]] = append(byPath[rpath[i]], rlat[i])
				if at, ok := readers[i].arr.take(key); ok {
					d := at.Sub(t0)
					delivery = append(delivery, d)
					afterDelivery[rpath[i]] = append(afterDelivery[rpath[i]], rlat[i]-d)
				}
			} else {
				res.unconverged++
			}
		}

		d, err := probe.publish(ctx)
		if err != nil {
			return res, err
		}
		pubLat = append(pubLat, d)
		d, err = probe.ping(ctx)
		if err != nil {
			return res, err
		}
		rtt = append(rtt, d)
		if (trial+1)%50 == 0 {
			fmt.Fprintf(os.Stderr, "benchfleet: invalidate: %d/%d trials\n", trial+1, cfg.trials)
		}
	}
	fmt.Fprintf(os.Stderr, "benchfleet: invalidate: warming L1 took %v in total\n", warmTime.Round(time.Millisecond))

	// Final sweep, staleWindow after the last Delete.
	if wait := time.Until(lastDelete.Add(staleWindow)); wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	var sweepStale int64
	for _, key := range keys {
		want := src.get(key)
		for _, n := range nodes {
			v, err := n.cache.GetOrLoad(ctx, key, src)
			if err != nil {
				return res, fmt.Errorf("node %d: sweep: %w", n.id, err)
			}
			if v.Version < want {
				sweepStale++
			}
		}
	}
	if sweepStale > 0 {
		fmt.Fprintf(os.Stderr, "benchfleet: invalidate: %d stale reads in the final sweep\n", sweepStale)
	}

	// Diagnostics: where the time goes. Delivery may be negative: Redis can
	// push the message to a reader before the writer has read its reply.
	slices.Sort(delivery)
	fmt.Fprintf(os.Stderr, "benchfleet: invalidate: delivery (Delete returned → reader's bus handled it) n=%d p50=%.2fms p99=%.2fms max=%.2fms\n",
		len(delivery), msf(pct(delivery, 0.5)), msf(pct(delivery, 0.99)), msf(pct(delivery, 1)))
	for _, p := range slices.Sorted(maps.Keys(byPath)) {
		ds, ad := byPath[p], afterDelivery[p]
		slices.Sort(ds)
		slices.Sort(ad)
		fmt.Fprintf(os.Stderr, "benchfleet: invalidate: reload path %-10s n=%3d total p50=%.2fms p99=%.2fms max=%.2fms; after delivery p50=%.2fms p99=%.2fms\n",
			p, len(ds), msf(pct(ds, 0.5)), msf(pct(ds, 0.99)), msf(pct(ds, 1)), msf(pct(ad, 0.5)), msf(pct(ad, 0.99)))
	}
	slices.Sort(lat)
	slices.Sort(pubLat)
	slices.Sort(rtt)
	slices.Sort(writerReload)
	fmt.Fprintf(os.Stderr, "benchfleet: invalidate: writer's own read after Delete (L1 miss, Redis miss, lease, load, fill) p50=%.2fms p99=%.2fms; PING p50=%.2fms p99=%.2fms\n",
		msf(pct(writerReload, 0.5)), msf(pct(writerReload, 0.99)), msf(pct(rtt, 0.5)), msf(pct(rtt, 0.99)))
	fmt.Fprintf(os.Stderr, "benchfleet: invalidate: %d latency samples, %d publish samples\n", len(lat), len(pubLat))
	res.p50, res.p99, res.max = pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1)
	res.staleAfter2s = staleAfter2s.Load() + sweepStale
	res.flipBacks = flipBacks.Load()
	res.publishP50, res.publishP99, res.publishMax = pct(pubLat, 0.50), pct(pubLat, 0.99), pct(pubLat, 1)
	res.rttP99 = pct(rtt, 0.99)
	res.reloadP99 = pct(writerReload, 0.99)
	return res, nil
}

// reloadPath names how a reader got the new version, from its counters
// before and after: it waited for another node's lease, loaded itself, read
// Redis, or (none of these) was never invalidated.
func reloadPath(before, after tiered.Stats) string {
	switch {
	case after.LeaseWaits > before.LeaseWaits:
		return "lease-wait"
	case after.Loads > before.Loads:
		return "loaded"
	case after.L2Hits > before.L2Hits:
		return "redis-hit"
	}
	return "none"
}

// pause waits between two reads of an invalidate reader.
//
// A reader must not spin while it waits for the invalidation: on a 2-core
// machine two spinning readers take both cores from redis-server and from
// the bus goroutines, and the benchmark then measures its own CPU contention
// (-spin shows it: delivery p99 of several ms against a PUBLISH p99 below
// 1ms). Nor can it sleep briefly: on Linux the Go runtime rounds a sub-ms
// sleep of an idle process up to about 1ms (epoll_wait has ms resolution),
// which would quantise every latency by up to 1ms.
//
// So the reader waits until its node's bus delivers the key's invalidation
// (delivered, closed by the arrivals handler, which runs on the bus
// goroutine beside the cache's own handler) or until cfg.poll has passed,
// whichever is first. Once delivered, it reads back to back, only yielding:
// GetOrLoad then blocks on the reload itself. The timer keeps the reader
// honest when no invalidation arrives at all: it still reads every
// cfg.poll and counts the stale reads.
func pause(cfg config, delivered <-chan struct{}) {
	if cfg.spin {
		runtime.Gosched()
		return
	}
	select {
	case <-delivered:
		runtime.Gosched()
		return
	default:
	}
	t := time.NewTimer(cfg.poll)
	defer t.Stop()
	select {
	case <-delivered:
	case <-t.C:
	}
}

// warmL1 reads key on n until the read is answered from n's L1 (L1 writes
// are applied asynchronously by ristretto, so the first read after a fill may
// still miss) and checks the version.
func warmL1(ctx context.Context, n *node, key string, src *source) error {
	want := src.get(key)
	deadline := time.Now().Add(5 * time.Second)
	for {
		before := n.cache.Stats().L1Hits
		v, err := n.cache.GetOrLoad(ctx, key, src)
		if err != nil {
			return fmt.Errorf("node %d: warming %s: %w", n.id, key, err)
		}
		if v.Version != want {
			return fmt.Errorf("node %d: warming %s: got version %d, want %d", n.id, key, v.Version, want)
		}
		if n.cache.Stats().L1Hits > before {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %d: %s never became an L1 hit", n.id, key)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// publishProbe measures raw go-redis PUBLISH → receive latency on a channel
// of its own, with its own publisher and subscriber clients, and the PING
// round trip.
type publishProbe struct {
	pub, sub redis.UniversalClient
	ps       *redis.PubSub
	recv     chan received
	seq      int
}

type received struct {
	payload string
	at      time.Time
}

const probeChannel = "benchfleet:probe"

func newPublishProbe(ctx context.Context, tg target) (*publishProbe, error) {
	p := &publishProbe{pub: tg.client(), sub: tg.client(), recv: make(chan received, 1)}
	p.ps = p.sub.Subscribe(ctx, probeChannel)
	// Receive returns the subscription confirmation first.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := p.ps.Receive(cctx); err != nil {
		close(p.recv) // no receiver goroutine to close it
		p.close()
		return nil, fmt.Errorf("probe subscription: %w", err)
	}
	go func() {
		defer close(p.recv)
		for {
			m, err := p.ps.ReceiveMessage(context.Background())
			if err != nil {
				return // closed
			}
			p.recv <- received{payload: m.Payload, at: time.Now()}
		}
	}()
	return p, nil
}

// publish sends one message, stamped with its send time, and returns how long
// the subscriber took to receive it.
func (p *publishProbe) publish(ctx context.Context) (time.Duration, error) {
	p.seq++
	t0 := time.Now()
	payload := strconv.Itoa(p.seq) + ":" + strconv.FormatInt(t0.UnixNano(), 10)
	if err := p.pub.Publish(ctx, probeChannel, payload).Err(); err != nil {
		return 0, fmt.Errorf("probe PUBLISH: %w", err)
	}
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	select {
	case r, ok := <-p.recv:
		if !ok {
			return 0, errors.New("probe subscription closed")
		}
		if r.payload != payload {
			return 0, fmt.Errorf("probe received %q, want %q", r.payload, payload)
		}
		return r.at.Sub(t0), nil
	case <-timeout.C:
		return 0, errors.New("probe message not received in 5s")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (p *publishProbe) ping(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	if err := p.pub.Ping(ctx).Err(); err != nil {
		return 0, fmt.Errorf("probe PING: %w", err)
	}
	return time.Since(t0), nil
}

func (p *publishProbe) close() {
	p.ps.Close()
	p.sub.Close()
	p.pub.Close()
	for range p.recv { // wait for the receiver to stop
	}
}

// ---------------------------------------------------------------------------

// pct returns the q-quantile of sorted ds by the nearest-rank method
// (q = 1 is the maximum); zero for no samples.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// msf returns d in milliseconds.
func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
