package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/faultproxy"
	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/pubsub"
	"github.com/tieredcache/tiered/tiered"
)

// The faults workload: readers and writers on every node while Redis and
// the network misbehave, and a checker that counts the reads that returned
// a version older than a write acknowledged long enough before them.
//
// Each run starts its own redis-server and builds -nodes fresh nodes for it
// (own client with ContextTimeoutEnabled, own bus, own L1, default
// Options: MaxStaleness 100ms, WriteTimeout 1s, breaker on). The last node's
// bus has a client of its own that reaches Redis through a faultproxy; its
// cache reads and writes Redis directly.
//
// The database is an in-memory version per key (faultDB), which every
// node's loader reads. On each node faultReadersPerNode readers call
// GetOrLoad on Zipf-distributed keys out of faultKeys, paced (-pace before
// each read) or flat out, and one writer, faultWritesPerSec/nodes times a
// second, bumps the version of a Zipf-distributed key in the database and
// then calls Delete on its node. A writer skips the ticks it misses while a
// Delete blocks (up to WriteTimeout during a pause) or while it waits for
// a CPU, so writes_s, the measured rate, is below faultWritesPerSec.
//
// Faults, at fractions of the run's length d (20s by default):
//
//	d/6        the silent node's bus: the proxy goes Silent for silenceFor
//	           (2s), then its connections are cut and it forwards new ones
//	           (with -silenceresume, it forwards the silenced ones again)
//	d/3        CLIENT KILL TYPE pubsub, then CLIENT KILL TYPE normal
//	d/2        CLIENT PAUSE 1000 WRITE
//	2d/3       CLIENT PAUSE 1000 ALL
//
// and the last sixth is recovery.
//
// Why the silenced connections are cut when the silence ends: a TCP
// connection delivers its bytes in order, all of them, or breaks. One that
// went silent and comes back (a partition that heals) delivers what it held
// (faultproxy's Frozen); one that never comes back (a dead NAT entry) is
// reset once anything reaches the other end. Forwarding again after
// dropping bytes, as Resume does, makes a stream with a hole in it, which
// no TCP connection can: messages lost without a gap the bus could see.
// The library's proof of freshness assumes the subscription's stream has
// no hole (a PONG vouches for every message sent before it), so with
// -silenceresume the node serves from L1 the values of writes invalidated
// during the silence whenever the bus did not replace the connection
// within the silence (it replaces one silent for two health intervals, 2s,
// and later when its goroutine waits for a CPU, as with flat-out readers
// on 2 cores); the flag is there to show that.
//
// The checker. Every time is taken with time.Since(base), monotonic, in one
// process: a write's return right after Delete returns, a read's start right
// before GetOrLoad is called. A reader keeps the reads that returned a
// version lower than the database's version of the key read right after the
// read (a superset of every read that can be stale: a write that returned
// before the read began had bumped the database before that); after the run
// they are checked against the complete log of writes:
//
//   - stale_100ms counts the reads that returned a version older than a
//     write whose Delete returned nil more than 100ms (staleBound) before the
//     read started;
//   - stale_after_error_1s counts the reads that returned a version older
//     than a write whose Delete returned an error more than 1s (errorBound)
//     before the read started;
//   - an *old* read returned a version older than some write (acknowledged
//     or failed) that had returned before the read started; its staleness is
//     the read's start minus the return of the newest such write, the most
//     recent write it missed, and max_staleness_ms is the largest over all
//     old reads. A read that missed several writes is measured against the
//     last one; stderr also gives the age of the oldest missed acknowledged
//     write (how long the returned value had been overwritten), which is
//     the figure Options.MaxStaleness bounds. Failed writes count, so
//     max_staleness_ms may pass 100ms with no read stale: until the outbox
//     delivers a failed write's invalidation, other nodes may read the old
//     value from Redis.
//
// A read is counted once however many writes it missed.

const (
	minFaultDur         = 12 * time.Second
	faultNamespace      = "faults"
	faultKeys           = 2000
	faultReadersPerNode = 4
	faultWritesPerSec   = 100
	faultZipfS          = 1.1 // P(key k) ∝ (1+k)^-s: the hottest key gets 1 read or write in 6, the 20 hottest over half
	staleBound          = 100 * time.Millisecond
	errorBound          = time.Second
	silenceFor          = 2 * time.Second
	sampleEvery         = 5 * time.Millisecond
)

// faultDB is the source of truth: a version per key, and the log of writes.
type faultDB struct {
	names    []string
	index    map[string]int // read-only once built
	versions []atomic.Int64

	mu     sync.Mutex   // guards writes
	writes [][]writeRec // by key, in the order they were logged
}

// writeRec is one write: the database bump, then Delete on a node.
type writeRec struct {
	version int64
	ret     time.Duration // since base, taken right after Delete returned
	node    int
	err     error // Delete's error; nil when acknowledged
}

func newFaultDB() *faultDB {
	db := &faultDB{
		names:    make([]string, faultKeys),
		index:    make(map[string]int, faultKeys),
		versions: make([]atomic.Int64, faultKeys),
		writes:   make([][]writeRec, faultKeys),
	}
	for k := range faultKeys {
		db.names[k] = fmt.Sprintf("k%04d", k)
		db.index[db.names[k]] = k
		db.versions[k].Store(1)
	}
	return db
}

// Load is every node's loader: the key's current version. It does not
// sleep.
func (db *faultDB) Load(_ context.Context, key string) (Item, error) {
	k, ok := db.index[key]
	if !ok {
		return Item{}, tiered.ErrNotFound
	}
	return Item{Key: key, Version: db.versions[k].Load()}, nil
}

func (db *faultDB) logWrite(k int, w writeRec) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.writes[k] = append(db.writes[k], w)
}

// oldRead is a read that returned a version lower than the database's
// right after it: a candidate for the checker.
type oldRead struct {
	key        int32
	node       int16
	reader     int8
	healthy    bool // the node's bus, right after the read
	version    int64
	start, end time.Duration
	proofAge   time.Duration // the node's bus's ProofAge right after the read; -1: none
}

// sample is one node's state, taken every sampleEvery, for the traces.
type sample struct {
	at            time.Duration
	healthy       bool
	proofAge      time.Duration
	pending       int
	l1Hits        uint64
	l1Unproven    uint64
	resets        uint64
	invalidations uint64
	breakerOpen   uint64
	l2Errors      uint64
}

// event is one fault injected.
type event struct {
	at, done time.Duration
	what     string
	result   string
}

// faultNode is one node of a fault run.
type faultNode struct {
	id     int
	rdb    *redis.Client
	busRdb *redis.Client     // rdb, or for the silent node a client through proxy
	proxy  *faultproxy.Proxy // nil but for the silent node
	bus    *pubsub.Bus
	cache  *tiered.Cache[Item]
}

func (n *faultNode) close() {
	if n.cache != nil {
		n.cache.Close()
	}
	if n.bus != nil {
		n.bus.Close()
	}
	if n.busRdb != n.rdb {
		n.busRdb.Close()
	}
	if n.proxy != nil {
		n.proxy.Close()
	}
	n.rdb.Close()
}

// faultClient is the client a tiered user is told to configure: go-redis
// honours context deadlines on the socket only with ContextTimeoutEnabled.
func faultClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ContextTimeoutEnabled: true})
}

func newFaultNode(ctx context.Context, id int, addr string, silent bool, logger *slog.Logger) (*faultNode, error) {
	n := &faultNode{id: id, rdb: faultClient(addr)}
	n.busRdb = n.rdb
	if silent {
		var err error
		if n.proxy, err = faultproxy.New(addr); err != nil {
			n.close()
			return nil, err
		}
		n.busRdb = faultClient(n.proxy.Addr())
	}
	var err error
	if n.bus, err = pubsub.New(n.busRdb, &pubsub.Options{Logger: logger}); err != nil {
		n.close()
		return nil, err
	}
	n.cache, err = tiered.New[Item](n.rdb, &tiered.Options{
		Namespace: faultNamespace,
		TTL:       time.Minute,
		Bus:       n.bus,
		Logger:    logger,
	})
	if err != nil {
		n.close()
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.cache.WaitReady(wctx); err != nil {
		n.close()
		return nil, fmt.Errorf("node %d: never ready: %w", id, err)
	}
	return n, nil
}

type faultResult struct {
	elapsed     time.Duration
	reads       int64
	readErrors  int64
	writes      int64
	writeErrors int64 // errors that do not wrap ErrQueued
	queued      int64 // Deletes that returned ErrQueued
	firstErrs   []string

	old, stale100, staleErr1s int
	maxStaleness              time.Duration // see the file comment
	worst                     int           // index in reads of the read with maxStaleness; -1
	maxOverwriteAge           time.Duration // against the oldest missed acknowledged write
	staleIdx                  []int         // reads counted in stale100 or staleErr1s

	breakerOpens, l1Hits, outboxed uint64
	pingsPerSec                    []float64
}

// runFaults runs the faults workload once per reader mode and prints a
// line for each. It returns an error if a run could not be made, or if a
// run counted stale reads or errors.
func runFaults(ctx context.Context, cfg config) error {
	// go-redis logs every connection it drops, and the faults make it drop
	// many; the library's own reports go to stderr with -v.
	redis.SetLogger(quietRedisLog{verbose: cfg.verbose})
	var failed []string
	for _, mode := range cfg.faultReaders {
		r, err := faults(ctx, cfg, mode)
		if err != nil {
			return fmt.Errorf("faults readers=%s: %w", mode, err)
		}
		pings := make([]string, len(r.pingsPerSec))
		for i, p := range r.pingsPerSec {
			pings[i] = fmt.Sprintf("%.1f", p)
		}
		hitRatio := 0.0
		if r.reads > 0 {
			hitRatio = float64(r.l1Hits) / float64(r.reads)
		}
		fmt.Printf("workload=faults readers=%s nodes=%d readers_per_node=%d keys=%d duration_s=%.1f stale_100ms=%d stale_after_error_1s=%d max_staleness_ms=%.2f reads_s=%.0f writes_s=%.1f read_errors=%d write_errors=%d queued_writes=%d outboxed_keys=%d breaker_opens=%d l1_hit_ratio=%.3f pings_s=%s\n",
			mode, cfg.nodes, faultReadersPerNode, faultKeys, r.elapsed.Seconds(),
			r.stale100, r.staleErr1s, msf(r.maxStaleness), float64(r.reads)/r.elapsed.Seconds(), float64(r.writes)/r.elapsed.Seconds(),
			r.readErrors, r.writeErrors, r.queued, r.outboxed, r.breakerOpens, hitRatio, strings.Join(pings, "/"))
		ok := r.stale100 == 0 && r.staleErr1s == 0
		fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: stale_100ms=%d stale_after_error_1s=%d (targets 0): %s\n",
			mode, r.stale100, r.staleErr1s, verdict(ok))
		if !ok {
			failed = append(failed, fmt.Sprintf("readers=%s: %d reads stale at %v after an acknowledged write, %d reads stale at %v after a failed one",
				mode, r.stale100, staleBound, r.staleErr1s, errorBound))
		}
		if r.readErrors > 0 || r.writeErrors > 0 {
			failed = append(failed, fmt.Sprintf("readers=%s: %d read errors, %d write errors (not ErrQueued); first: %s",
				mode, r.readErrors, r.writeErrors, strings.Join(r.firstErrs, "; ")))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("faults: %s", strings.Join(failed, "; "))
	}
	return nil
}

// quietRedisLog drops go-redis's log lines unless verbose.
type quietRedisLog struct{ verbose bool }

func (l quietRedisLog) Printf(_ context.Context, format string, v ...any) {
	if l.verbose {
		fmt.Fprintf(os.Stderr, "benchfleet: go-redis: "+format+"\n", v...)
	}
}

// faults makes one fault run with readers in mode ("paced" or "flat").
func faults(ctx context.Context, cfg config, mode string) (faultResult, error) {
	res := faultResult{worst: -1}
	srv, err := redistest.StartProcess()
	if err != nil {
		return res, fmt.Errorf("starting redis-server: %w", err)
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: redis-server on %s, GOMAXPROCS=%d, %v\n",
		mode, srv.Addr, runtime.GOMAXPROCS(0), cfg.faultDur)

	var logger *slog.Logger
	if cfg.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	admin := faultClient(srv.Addr)
	defer admin.Close()
	nodes := make([]*faultNode, 0, cfg.nodes)
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	for i := range cfg.nodes {
		n, err := newFaultNode(ctx, i, srv.Addr, i == cfg.nodes-1, logger)
		if err != nil {
			return res, err
		}
		nodes = append(nodes, n)
	}
	silent := nodes[len(nodes)-1]
	db := newFaultDB()
	runtime.GC() // the nodes' setup garbage, as in the other workloads

	before := make([]tiered.Stats, len(nodes))
	pingsBefore := make([]uint64, len(nodes))
	for i, n := range nodes {
		before[i], pingsBefore[i] = n.cache.Stats(), n.bus.Stats().Pings
	}

	var (
		stop       atomic.Bool
		stopCh     = make(chan struct{})
		wg         sync.WaitGroup
		paced      = mode == "paced"
		nr         = len(nodes) * faultReadersPerNode
		reads      = make([]int64, nr)
		readErrs   = make([]int64, nr)
		olds       = make([][]oldRead, nr)
		errMu      sync.Mutex // guards firstErrs
		firstErrs  []string
		samples    = make([][]sample, len(nodes))
		events     []event // written by the injector; read after wg.Wait
		writes     atomic.Int64
		writeErrs  atomic.Int64
		queued     atomic.Int64
		seed       = uint64(time.Now().UnixNano())
		writeEvery = time.Duration(len(nodes)) * time.Second / faultWritesPerSec
	)
	noteErr := func(s string) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(firstErrs) < 3 {
			firstErrs = append(firstErrs, s)
		}
	}
	fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: seed %d\n", mode, seed)
	base := time.Now()
	for ni, n := range nodes {
		for r := range faultReadersPerNode {
			ri := ni*faultReadersPerNode + r
			z := rand.NewZipf(rand.New(rand.NewPCG(seed, uint64(ri))), faultZipfS, 1, faultKeys-1)
			wg.Go(func() {
				var nreads, nerrs int64
				var old []oldRead
				for !stop.Load() {
					if paced {
						time.Sleep(cfg.pace)
					}
					k := int(z.Uint64())
					key := db.names[k]
					start := time.Since(base)
					v, err := n.cache.GetOrLoad(ctx, key, db)
					end := time.Since(base)
					nreads++
					if err == nil && v.Key != key {
						err = fmt.Errorf("got %+v for %s", v, key)
					}
					if err != nil {
						nerrs++
						noteErr(fmt.Sprintf("node %d read %s at %.1fms: %v", n.id, key, msf(start), err))
						continue
					}
					if v.Version < db.versions[k].Load() {
						old = append(old, oldRead{
							key: int32(k), node: int16(n.id), reader: int8(r), version: v.Version,
							start: start, end: end, healthy: n.bus.Healthy(), proofAge: n.bus.ProofAge(),
						})
					}
				}
				reads[ri], readErrs[ri], olds[ri] = nreads, nerrs, old
			})
		}
		wg.Go(func() { // the node's writer
			z := rand.NewZipf(rand.New(rand.NewPCG(seed, uint64(nr+ni))), faultZipfS, 1, faultKeys-1)
			phase := time.NewTimer(time.Duration(ni) * writeEvery / time.Duration(len(nodes)))
			select {
			case <-phase.C:
			case <-stopCh:
				phase.Stop()
				return
			}
			tick := time.NewTicker(writeEvery)
			defer tick.Stop()
			for {
				k := int(z.Uint64())
				v := db.versions[k].Add(1)
				err := n.cache.Delete(ctx, db.names[k])
				ret := time.Since(base)
				db.logWrite(k, writeRec{version: v, ret: ret, node: n.id, err: err})
				writes.Add(1)
				switch {
				case errors.Is(err, tiered.ErrQueued):
					queued.Add(1)
				case err != nil:
					writeErrs.Add(1)
					noteErr(fmt.Sprintf("node %d Delete %s at %.1fms: %v", n.id, db.names[k], msf(ret), err))
				}
				select {
				case <-tick.C:
				case <-stopCh:
					return
				}
			}
		})
		wg.Go(func() { // the node's sampler, for the traces
			tick := time.NewTicker(sampleEvery)
			defer tick.Stop()
			for {
				s, bs := n.cache.Stats(), n.bus.Stats()
				samples[ni] = append(samples[ni], sample{
					at: time.Since(base), healthy: n.bus.Healthy(), proofAge: n.bus.ProofAge(), pending: bs.Pending,
					l1Hits: s.L1Hits, l1Unproven: s.L1Unproven, resets: s.Resets, invalidations: s.Invalidations,
					breakerOpen: s.BreakerOpens, l2Errors: s.L2Errors,
				})
				select {
				case <-tick.C:
				case <-stopCh:
					return
				}
			}
		})
	}
	wg.Go(func() { events = injectFaults(ctx, stopCh, base, cfg, admin, silent) })

	select {
	case <-time.After(time.Until(base.Add(cfg.faultDur))):
	case <-ctx.Done():
	}
	stop.Store(true)
	res.elapsed = time.Since(base)
	close(stopCh)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}

	for ri := range nr {
		res.reads += reads[ri]
		res.readErrors += readErrs[ri]
	}
	res.writes, res.writeErrors, res.queued = writes.Load(), writeErrs.Load(), queued.Load()
	res.firstErrs = firstErrs
	for i, n := range nodes {
		s, bs := n.cache.Stats(), n.bus.Stats()
		res.breakerOpens += s.BreakerOpens - before[i].BreakerOpens
		res.l1Hits += s.L1Hits - before[i].L1Hits
		res.outboxed += s.Queued - before[i].Queued
		res.pingsPerSec = append(res.pingsPerSec, float64(bs.Pings-pingsBefore[i])/res.elapsed.Seconds())
		fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: node %d: cache %+v bus %+v\n", mode, n.id, s, bs)
	}
	for _, e := range events {
		fmt.Fprintf(os.Stderr, "benchfleet: faults readers=%s: fault at %8.1fms (done %8.1fms): %s: %s\n",
			mode, msf(e.at), msf(e.done), e.what, e.result)
	}

	all := slices.Concat(olds...)
	check(&res, db, all)
	explain(mode, &res, db, all, samples, events)
	return res, nil
}

// injectFaults injects the faults of the file comment at their times and
// returns what it did. It returns early when stop is closed.
func injectFaults(ctx context.Context, stop <-chan struct{}, base time.Time, cfg config, admin *redis.Client, silent *faultNode) []event {
	d := cfg.faultDur
	cmd := func(args ...any) func() string {
		return func() string {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			r, err := admin.Do(cctx, args...).Result()
			if err != nil {
				return "error: " + err.Error()
			}
			return fmt.Sprint(r)
		}
	}
	steps := []struct {
		at   time.Duration
		what string
		do   func() string
	}{
		{d / 6, fmt.Sprintf("node %d's bus connection silent", silent.id), func() string {
			silent.proxy.Silence()
			return "ok"
		}},
		// See the file comment for why the silenced connections are cut.
		{d/6 + silenceFor, fmt.Sprintf("node %d's bus: %s", silent.id, silenceEnd(cfg)), func() string {
			if cfg.silenceResume {
				silent.proxy.Resume()
			} else {
				silent.proxy.Set(faultproxy.Forward, faultproxy.NewConns)
				silent.proxy.CutAll()
			}
			return fmt.Sprintf("ok, %d bytes dropped while silent", silent.proxy.Dropped())
		}},
		{d / 3, "CLIENT KILL TYPE pubsub", cmd("CLIENT", "KILL", "TYPE", "pubsub")},
		{d / 3, "CLIENT KILL TYPE normal", cmd("CLIENT", "KILL", "TYPE", "normal")},
		{d / 2, "CLIENT PAUSE 1000 WRITE", cmd("CLIENT", "PAUSE", "1000", "WRITE")},
		{2 * d / 3, "CLIENT PAUSE 1000 ALL", cmd("CLIENT", "PAUSE", "1000", "ALL")},
	}
	var events []event
	for _, s := range steps {
		t := time.NewTimer(time.Until(base.Add(s.at)))
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return events
		}
		at := time.Since(base)
		r := s.do()
		events = append(events, event{at: at, done: time.Since(base), what: s.what, result: r})
	}
	return events
}

// silenceEnd says how the silence of the silent node's bus ends.
func silenceEnd(cfg config) string {
	if cfg.silenceResume {
		return "silent connections forwarded again (-silenceresume)"
	}
	return "silent connections cut, new ones forwarded"
}

// check counts, among the candidate reads, the stale and the old ones (see
// the file comment) against the complete log of writes.
func check(res *faultResult, db *faultDB, reads []oldRead) {
	for i, r := range reads {
		var (
			newest      = time.Duration(-1) // return of the newest write missed
			oldestAcked = time.Duration(-1) // return of the oldest acknowledged write missed
			stale       bool
			staleErr    bool
		)
		for _, w := range db.writes[r.key] {
			if w.version <= r.version || w.ret >= r.start {
				continue
			}
			gap := r.start - w.ret
			if w.err == nil {
				if gap > staleBound {
					stale = true
				}
				if oldestAcked < 0 || w.ret < oldestAcked {
					oldestAcked = w.ret
				}
			} else if gap > errorBound {
				staleErr = true
			}
			newest = max(newest, w.ret)
		}
		if newest < 0 {
			continue // every write it missed was still in progress
		}
		res.old++
		if s := r.start - newest; s > res.maxStaleness {
			res.maxStaleness, res.worst = s, i
		}
		if oldestAcked >= 0 {
			res.maxOverwriteAge = max(res.maxOverwriteAge, r.start-oldestAcked)
		}
		if stale {
			res.stale100++
		}
		if staleErr {
			res.staleErr1s++
		}
		if stale || staleErr {
			res.staleIdx = append(res.staleIdx, i)
		}
	}
}

// phaseOf names the last fault injected before t.
func phaseOf(events []event, t time.Duration) string {
	p := "before any fault"
	for _, e := range events {
		if e.at <= t {
			p = e.what
		}
	}
	return p
}

// explain prints, on stderr, where the old reads were, and a trace of the
// worst stale reads (or, with none, of the read with the largest
// staleness).
func explain(mode string, res *faultResult, db *faultDB, reads []oldRead, samples [][]sample, events []event) {
	pre := "benchfleet: faults readers=" + mode + ": "
	fmt.Fprintf(os.Stderr, "%s%d candidate reads (version below the database's right after), %d old (missed a write that had returned), max staleness %.2fms (newest missed write), max age of the oldest missed acknowledged write %.2fms\n",
		pre, len(reads), res.old, msf(res.maxStaleness), msf(res.maxOverwriteAge))
	type phase struct {
		n   int
		max time.Duration
	}
	phases := map[string]*phase{}
	order := []string{phaseOf(nil, 0)}
	for _, e := range events {
		order = append(order, e.what)
	}
	for _, r := range reads {
		newest := time.Duration(-1)
		for _, w := range db.writes[r.key] {
			if w.version > r.version && w.ret < r.start {
				newest = max(newest, w.ret)
			}
		}
		if newest < 0 {
			continue
		}
		p := phaseOf(events, r.start)
		if phases[p] == nil {
			phases[p] = &phase{}
		}
		phases[p].n++
		phases[p].max = max(phases[p].max, r.start-newest)
	}
	for _, p := range order {
		if ph := phases[p]; ph != nil {
			fmt.Fprintf(os.Stderr, "%sold reads after %q: %d, max staleness %.2fms\n", pre, p, ph.n, msf(ph.max))
		}
	}
	idx := res.staleIdx
	slices.SortFunc(idx, func(a, b int) int { return int(reads[a].start - reads[b].start) })
	if len(idx) > 3 {
		fmt.Fprintf(os.Stderr, "%s%d stale reads; tracing the first 3\n", pre, len(idx))
		idx = idx[:3]
	}
	if len(idx) == 0 && res.worst >= 0 {
		idx = []int{res.worst}
	}
	for _, i := range idx {
		trace(pre, reads, i, db, samples, events, len(res.staleIdx) > 0)
	}
}

// trace prints read i with the writes of its key from the one whose
// version it returned; if full, also the other old reads of its key on its
// node and its node's samples, around it.
func trace(pre string, reads []oldRead, i int, db *faultDB, samples [][]sample, events []event, full bool) {
	r := reads[i]
	to := r.end + 500*time.Millisecond
	fmt.Fprintf(os.Stderr, "%strace: node %d reader %d read %s: version %d, start %.3fms end %.3fms, bus healthy=%v proof age %.2fms, after %q\n",
		pre, r.node, r.reader, db.names[r.key], r.version, msf(r.start), msf(r.end), r.healthy, msf(r.proofAge), phaseOf(events, r.start))
	for _, w := range db.writes[r.key] {
		if w.version < r.version || w.ret > to {
			continue
		}
		res := "nil"
		if w.err != nil {
			res = w.err.Error()
		}
		fmt.Fprintf(os.Stderr, "%strace:   write version %d on node %d returned at %.3fms (%.3fms before the read's start): %s\n",
			pre, w.version, w.node, msf(w.ret), msf(r.start-w.ret), res)
	}
	if !full {
		return
	}
	n := 0
	for _, o := range reads {
		if o.key != r.key || o.node != r.node || o.start < r.start-time.Second || o.start > to {
			continue
		}
		if n++; n > 40 {
			fmt.Fprintf(os.Stderr, "%strace:   (more old reads left out)\n", pre)
			break
		}
		fmt.Fprintf(os.Stderr, "%strace:   old read by reader %d: version %d, start %.3fms end %.3fms, healthy=%v proof age %.2fms\n",
			pre, o.reader, o.version, msf(o.start), msf(o.end), o.healthy, msf(o.proofAge))
	}
	for _, s := range samples[r.node] {
		if s.at < r.start-300*time.Millisecond || s.at > r.end+100*time.Millisecond {
			continue
		}
		fmt.Fprintf(os.Stderr, "%strace:   node %d at %.1fms: healthy=%v proof age %.1fms pending=%d l1 hits %d unproven %d resets %d invalidations %d breaker opens %d l2 errors %d\n",
			pre, r.node, msf(s.at), s.healthy, msf(s.proofAge), s.pending, s.l1Hits, s.l1Unproven, s.resets, s.invalidations, s.breakerOpen, s.l2Errors)
	}
}
