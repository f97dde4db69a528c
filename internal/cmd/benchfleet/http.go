package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/internal/benchlist"
	"github.com/tieredcache/tiered/tiered"
	"github.com/tieredcache/tiered/tiered/httpcache"
)

// The http workload: the httpcache middleware in front of a handler that
// serves a page of httpPageLen products as JSON, against the same handler
// bare, side by side in one run. -nodes nodes (independent caches on one
// redis-server, TTL httpTTL, Jitter off), each with an HTTP server
// (httptest.Server, on loopback) that serves the handler on /bare and
// through the middleware on /cached. The handler reads its page from an
// in-memory "database" of httpPages pages, sleeps httpDBCost (the query's
// round trip) and encodes the page with encoding/json.
//
// httpClients goroutines per node, each with keep-alive connections to its
// node, request uniformly random pages flat out (with Host httpHost on
// every node, as behind a load balancer) and read and check every body.
// After an unmeasured warm-up of httpWarmup on /bare (which dials the
// connections), httpSlices pairs of slices of httpSlice each: every client
// on /bare, then every client on /cached (which starts with nothing
// cached), so that the machine's noise falls on both alike. A phase is
// the slices of one path: httpSlices × httpSlice each. The clients run in
// the servers' process, on the same cores: a rate is the machine's, with
// the clients' and net/http's costs in it.
//
// Fields of the line, for each phase P (bare, cached):
//
//	P_rps                  requests per second, all nodes
//	P_p50_us, P_p99_us     a request's latency as the client sees it
//	                       (from a histogram, within 3%)
//	rps_ratio, p50_ratio   cached/bare and bare/cached (both > 1 when the
//	                       cache helps)
//	hits, misses, bypass   the cached phase's X-Cache values
//	handler_runs           the handler's runs in the cached phase
//	ttl_periods            ceil(span/TTL), span the time from the start of
//	                       the first cached slice to the end of the last:
//	                       the loads one key needs if it is loaded once per
//	                       fleet per TTL (its loads are at least a TTL apart)
//	runs_per_key_per_ttl   handler_runs / (pages × ttl_periods): 1 is one
//	                       run per key per fleet per TTL
//	errors                 failed requests and wrong bodies, both phases
//
// A run fails (non-zero exit status) on an error or when handler_runs
// exceeds pages × ttl_periods.

const (
	httpNamespace = "http"
	httpPages     = 20
	httpPageLen   = 50
	httpClients   = 8 // per node
	httpTTL       = 2 * time.Second
	httpDBCost    = time.Millisecond
	httpWarmup    = 500 * time.Millisecond
	httpSlice     = 500 * time.Millisecond
	httpSlices    = 10 // per path: 5 s each
	// httpHost is the Host of every request, as a load balancer in front
	// of the nodes passes it on: the middleware's default key has the host
	// in it, so requests to each node's own address would not share
	// entries.
	httpHost = "shop.example"
)

// listDB is the in-memory "database" of the http workload: httpPages pages
// of httpPageLen products.
type listDB [][]benchlist.Item

func newListDB() listDB {
	db := make(listDB, httpPages)
	for p := range db {
		db[p] = benchlist.Items(int64(p*httpPageLen), httpPageLen)
	}
	return db
}

// handler returns the handler of the workload: the page of ?page=N,
// after httpDBCost, encoded with encoding/json. It counts its runs.
func (db listDB) handler(runs *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		p, err := strconv.Atoi(r.URL.Query().Get("page"))
		if err != nil || p < 0 || p >= len(db) {
			http.Error(w, "bad page", http.StatusBadRequest)
			return
		}
		time.Sleep(httpDBCost)
		benchlist.Write(w, db[p])
	})
}

// httpPhaseResult is what one slice or phase measured.
type httpPhaseResult struct {
	lat                  hist
	elapsed              time.Duration
	errs                 uint64
	firstErr             error
	hits, misses, bypass uint64
	runs                 int64
}

func (p *httpPhaseResult) merge(o *httpPhaseResult) {
	p.lat.merge(&o.lat)
	p.elapsed += o.elapsed
	p.errs += o.errs
	if p.firstErr == nil {
		p.firstErr = o.firstErr
	}
	p.hits, p.misses, p.bypass = p.hits+o.hits, p.misses+o.misses, p.bypass+o.bypass
	p.runs += o.runs
}

func (p httpPhaseResult) rps() float64 { return float64(p.lat.n) / p.elapsed.Seconds() }

func runHTTP(ctx context.Context, cfg config) error {
	return withServer("http", func(addr string) error {
		bare, cached, span, bodyBytes, err := httpRun(ctx, cfg, addr)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		periods := int(math.Ceil(span.Seconds() / httpTTL.Seconds()))
		bound := httpPages * periods
		errs := bare.errs + cached.errs
		fmt.Printf("workload=http nodes=%d clients=%d pages=%d items=%d body_bytes=%d db_ms=%d ttl_ms=%d slice_ms=%d phase_s=%.1f bare_rps=%.0f bare_p50_us=%.0f bare_p99_us=%.0f cached_rps=%.0f cached_p50_us=%.0f cached_p99_us=%.0f rps_ratio=%.2f p50_ratio=%.2f hits=%d misses=%d bypass=%d handler_runs=%d ttl_periods=%d runs_per_key_per_ttl=%.2f errors=%d\n",
			cfg.nodes, cfg.nodes*httpClients, httpPages, httpPageLen, bodyBytes, httpDBCost.Milliseconds(), httpTTL.Milliseconds(), httpSlice.Milliseconds(), cached.elapsed.Seconds(),
			bare.rps(), usf(bare.lat.quantile(0.5)), usf(bare.lat.quantile(0.99)),
			cached.rps(), usf(cached.lat.quantile(0.5)), usf(cached.lat.quantile(0.99)),
			cached.rps()/bare.rps(), float64(bare.lat.quantile(0.5))/float64(cached.lat.quantile(0.5)),
			cached.hits, cached.misses, cached.bypass, cached.runs, periods, float64(cached.runs)/float64(bound), errs)
		ok := errs == 0 && cached.runs <= int64(bound)
		fmt.Fprintf(os.Stderr, "benchfleet: http: errors=%d handler_runs=%d (targets 0 and ≤ %d pages × %d TTL periods): %s\n",
			errs, cached.runs, httpPages, periods, verdict(ok))
		var failed []error
		for _, p := range []httpPhaseResult{bare, cached} {
			if p.firstErr != nil {
				failed = append(failed, fmt.Errorf("%d errors, first: %w", p.errs, p.firstErr))
			}
		}
		if cached.runs > int64(bound) {
			failed = append(failed, fmt.Errorf("%d handler runs, more than one per key per TTL (%d)", cached.runs, bound))
		}
		if len(failed) > 0 {
			return fmt.Errorf("http: %w", errors.Join(failed...))
		}
		return nil
	})
}

// httpRun builds the nodes and servers on addr and runs the warm-up and
// the slices. It returns the two phases, the span of the cached slices and
// the size of a page's body.
func httpRun(ctx context.Context, cfg config, addr string) (bare, cached httpPhaseResult, span time.Duration, bodyBytes int, err error) {
	nodes, err := newCacheNodes[*httpcache.Response](ctx, addr, cfg.nodes, tiered.Options{
		Namespace: httpNamespace, TTL: httpTTL, Jitter: -1, Codec: httpcache.Codec{},
	})
	defer closeNodes(nodes)
	if err != nil {
		return bare, cached, 0, 0, err
	}
	runtime.GC() // the garbage of building the nodes
	f, err := newHTTPFleet(nodes)
	defer f.close()
	if err != nil {
		return bare, cached, 0, 0, err
	}
	f.phase(ctx, "/bare", httpWarmup)
	var first time.Time
	for range httpSlices {
		b := f.phase(ctx, "/bare", httpSlice)
		bare.merge(&b)
		if first.IsZero() {
			first = time.Now()
		}
		c := f.phase(ctx, "/cached", httpSlice)
		cached.merge(&c)
	}
	span = time.Since(first)
	if err := ctx.Err(); err != nil {
		return bare, cached, 0, 0, err
	}
	for i, n := range nodes {
		fmt.Fprintf(os.Stderr, "benchfleet: http: node %d: %+v\n", i, n.cache.Stats())
	}
	return bare, cached, span, len(f.want[0]), nil
}

// httpFleet is the http workload's HTTP side: a server per node, serving
// the handler on /bare and through the node's middleware on /cached, and a
// client for each.
type httpFleet struct {
	want    [][]byte // each page's body
	runs    atomic.Int64
	srvs    []*httptest.Server // by node
	urls    []string
	trs     []*http.Transport
	clients []*http.Client
}

// newHTTPFleet starts the servers of nodes. Close the fleet also when it
// fails.
func newHTTPFleet(nodes []*cacheNode[*httpcache.Response]) (*httpFleet, error) {
	f := &httpFleet{want: make([][]byte, httpPages)}
	db := newListDB()
	for p := range f.want {
		var err error
		if f.want[p], err = json.Marshal(db[p]); err != nil {
			return f, err
		}
	}
	h := db.handler(&f.runs)
	for _, n := range nodes {
		m, err := httpcache.New(n.cache, nil)
		if err != nil {
			return f, err
		}
		mux := http.NewServeMux()
		mux.Handle("/bare", h)
		mux.Handle("/cached", m.Handler(h))
		srv := httptest.NewServer(mux)
		f.srvs = append(f.srvs, srv)
		f.urls = append(f.urls, srv.URL)
		tr := &http.Transport{MaxIdleConnsPerHost: httpClients}
		f.trs = append(f.trs, tr)
		f.clients = append(f.clients, &http.Client{Transport: tr, Timeout: 5 * time.Second})
	}
	return f, nil
}

// close closes the clients' idle connections and the servers, the last
// node's first.
func (f *httpFleet) close() {
	for i := len(f.srvs) - 1; i >= 0; i-- {
		f.trs[i].CloseIdleConnections()
		f.srvs[i].Close()
	}
}

// httpPhase is what the clients of one slice share.
type httpPhase struct {
	path                 string
	stop                 atomic.Bool
	hists                []hist // by client
	hits, misses, bypass atomic.Uint64
	mu                   sync.Mutex // guards res.errs and res.firstErr
	res                  httpPhaseResult
}

// fail counts a failed request or a wrong answer.
func (ph *httpPhase) fail(err error) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	if ph.res.errs++; ph.res.firstErr == nil {
		ph.res.firstErr = err
	}
}

// phase runs httpClients clients per node on path for d and returns what
// they measured.
func (f *httpFleet) phase(ctx context.Context, path string, d time.Duration) httpPhaseResult {
	ph := &httpPhase{path: path, hists: make([]hist, len(f.urls)*httpClients)}
	var wg sync.WaitGroup
	runs0 := f.runs.Load()
	t0 := time.Now()
	for ci := range ph.hists {
		wg.Go(func() { f.client(ctx, ph, ci) })
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	ph.stop.Store(true)
	res := &ph.res
	res.elapsed = time.Since(t0)
	wg.Wait()
	res.runs = f.runs.Load() - runs0
	for i := range ph.hists {
		res.lat.merge(&ph.hists[i])
	}
	res.hits, res.misses, res.bypass = ph.hits.Load(), ph.misses.Load(), ph.bypass.Load()
	return *res
}

// client is client ci of a phase: it requests random pages of ph.path
// from its node until the phase stops, timing and checking each answer.
func (f *httpFleet) client(ctx context.Context, ph *httpPhase, ci int) {
	ni := ci / httpClients
	rng := rand.New(rand.NewPCG(uint64(ci), 0x5eed))
	var buf bytes.Buffer
	for !ph.stop.Load() && ctx.Err() == nil {
		p := rng.IntN(httpPages)
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.urls[ni]+ph.path+"?page="+strconv.Itoa(p), nil)
		if err != nil {
			ph.fail(err)
			continue
		}
		req.Host = httpHost
		resp, err := f.clients[ni].Do(req)
		if err != nil {
			ph.fail(err)
			continue
		}
		buf.Reset()
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		ph.hists[ci].add(time.Since(start))
		switch {
		case err != nil:
			ph.fail(err)
		case resp.StatusCode != http.StatusOK || !bytes.Equal(buf.Bytes(), f.want[p]):
			ph.fail(fmt.Errorf("%s page %d on node %d: status %d, %d bytes (want %d)", ph.path, p, ni, resp.StatusCode, buf.Len(), len(f.want[p])))
		}
		switch resp.Header.Get(httpcache.XCacheHeader) {
		case httpcache.Hit:
			ph.hits.Add(1)
		case httpcache.Miss:
			ph.misses.Add(1)
		case httpcache.Bypass:
			ph.bypass.Add(1)
		}
	}
}
