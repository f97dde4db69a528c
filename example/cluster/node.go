package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/tiered"
)

// Cache settings of every node. The TTLs are short so that Redis entries
// really expire during a run; the lease outlives a SQLite read by far.
const (
	cacheTTL    = 10 * time.Second
	negativeTTL = 5 * time.Second
	leaseTTL    = 2 * time.Second
	loadTimeout = time.Second
)

// nodeMain is main for a node process. The node serves until SIGINT or
// SIGTERM, or until its standard input, a pipe from the parent, reaches EOF:
// the parent closed it, or died.
func nodeMain() int {
	nc := nodeConfigFromEnv()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := serveNode(ctx, nc, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", nc.Name, err)
		return 1
	}
	return 0
}

// serveNode sets up the node's cache, serves its HTTP API on a free loopback
// port, writes "listening host:port" to ready once it can take requests,
// and returns when ctx is done, after shutting everything down.
func serveNode(ctx context.Context, nc nodeConfig, ready io.Writer) error {
	cat, err := openCatalog(nc.DBPath)
	if err != nil {
		return err
	}
	defer cat.Close()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).
		With("node", nc.Name)
	redis.SetLogger(quietRedisLog{})
	rdb := nc.redisClient(nc.RedisAddr) // with -cluster, a Cluster client
	defer rdb.Close()
	// One bus per process, shared by every cache of the process (here one).
	// It has a client of its own, so that -chaos can silence the node's
	// subscription (through a proxy of its own) and nothing else; a service
	// would usually give the bus the cache's client.
	busRdb := nc.redisClient(nc.BusAddr)
	defer busRdb.Close()
	bus, err := tiered.NewBus(busRdb, &tiered.BusOptions{
		Channel: nc.Namespace + ":bus",
		NodeID:  nc.Name,
		Logger:  logger,
	})
	if err != nil {
		return err
	}
	defer bus.Close()
	cache, err := tiered.New[Product](rdb, &tiered.Options{
		Namespace:   nc.Namespace,
		TTL:         cacheTTL,
		NegativeTTL: negativeTTL,
		LeaseTTL:    leaseTTL,
		LoadTimeout: loadTimeout,
		Bus:         bus,
		Logger:      logger,
	})
	if err != nil {
		return err
	}
	defer cache.Close()
	// The cache of the HTTP endpoints (http.go) shares the bus.
	webCache, err := newHTTPCache(rdb, bus, nc.Namespace, logger)
	if err != nil {
		return err
	}
	defer webCache.Close()

	// Until the bus is subscribed and has proved L1 fresh, the cache reads
	// through; wait for it so that the first requests see the cache as it
	// normally runs.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	err = errors.Join(cache.WaitReady(wctx), webCache.WaitReady(wctx))
	wcancel()
	if err != nil {
		return fmt.Errorf("cache not ready: %w", err)
	}

	// GET /metrics (metrics.go); shut down on every return, and with an
	// error the node reports on a normal stop.
	metrics, err := startMetrics(nc.Name, bus, namedSource{nc.Namespace, cache}, namedSource{httpNamespace(nc.Namespace), webCache})
	if err != nil {
		return err
	}
	defer metrics.shutdown(context.Background())

	n := &node{name: nc.Name, cat: cat, cache: cache, bus: bus, metrics: metrics.handler, web: &httpRoutes{cat: cat, cache: webCache}}
	n.loader = tiered.LoaderFunc[Product](n.load)
	handler, err := n.routes()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(ready, "listening %s\n", ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	err = srv.Shutdown(sctx)
	<-served
	return errors.Join(err, metrics.shutdown(sctx))
}

// node is the HTTP API of one node over its cache and the database.
type node struct {
	name    string
	cat     *catalog
	cache   *tiered.Cache[Product]
	bus     *tiered.Bus
	loader  tiered.Loader[Product]
	metrics http.Handler // GET /metrics
	web     *httpRoutes  // the cached JSON endpoints

	gets         atomic.Uint64 // GET /products/{id}
	puts         atomic.Uint64 // PUT /products/{id}
	serverErrors atomic.Uint64 // 5xx answers
	queued       atomic.Uint64 // PUTs answered with the invalidation queued (ErrQueued)

	keyLoads sync.Map // loader calls by key: string → *atomic.Uint64
}

// nodeStats is the body of GET /stats.
type nodeStats struct {
	Node         string          `json:"node"`
	PID          int             `json:"pid"`
	Requests     uint64          `json:"requests"`
	Gets         uint64          `json:"gets"`
	Puts         uint64          `json:"puts"`
	ServerErrors uint64          `json:"server_errors"`
	Queued       uint64          `json:"invalidations_queued"` // PUTs answered with invalidation_queued
	BusHealthy   bool            `json:"bus_healthy"`
	BusProven    bool            `json:"bus_proven"` // the bus proves L1 fresh now: L1 is served
	Cache        tiered.Stats    `json:"cache"`
	Bus          tiered.BusStats `json:"bus"`
	HTTPCache    tiered.Stats    `json:"http_cache"`          // the cache of the /http/ endpoints
	Key          string          `json:"key,omitempty"`       // with ?key=
	KeyLoads     uint64          `json:"key_loads,omitempty"` // loader calls for Key
}

// putAnswer is the body of a PUT's 200 answer: the row as committed, and
// whether its invalidation was queued (the Delete, or the InvalidateTags
// of the HTTP responses, returned ErrQueued) rather than done.
type putAnswer struct {
	Product
	InvalidationQueued bool `json:"invalidation_queued,omitempty"`
}

func (n *node) routes() (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /products/{id}", n.getProduct)
	mux.HandleFunc("PUT /products/{id}", n.putProduct)
	mux.HandleFunc("GET /stats", n.stats)
	mux.Handle("GET /metrics", n.metrics)
	if err := n.web.mount(mux); err != nil {
		return nil, err
	}
	return mux, nil
}

// load is the cache's loader: one read of the database.
func (n *node) load(ctx context.Context, key string) (Product, error) {
	n.countLoad(key)
	id, err := strconv.ParseInt(key, 10, 64)
	if err != nil {
		return Product{}, fmt.Errorf("bad key %q: %w", key, tiered.ErrNotFound)
	}
	p, err := n.cat.get(ctx, id)
	if errors.Is(err, errNoProduct) {
		return Product{}, fmt.Errorf("product %d: %w", id, tiered.ErrNotFound)
	}
	return p, err
}

func (n *node) countLoad(key string) {
	c, ok := n.keyLoads.Load(key)
	if !ok {
		c, _ = n.keyLoads.LoadOrStore(key, new(atomic.Uint64))
	}
	c.(*atomic.Uint64).Add(1)
}

// productID parses the {id} of the path; it answers 400 itself when it is
// not a positive integer.
func productID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "bad product id", http.StatusBadRequest)
		return 0, false
	}
	return id, true
}

// getProduct answers GET /products/{id} from the cache, which loads from
// the database on a miss. A missing product is a 404, and is cached too.
func (n *node) getProduct(w http.ResponseWriter, r *http.Request) {
	n.gets.Add(1)
	id, ok := productID(w, r)
	if !ok {
		return
	}
	p, err := n.cache.GetOrLoad(r.Context(), strconv.FormatInt(id, 10), n.loader)
	switch {
	case errors.Is(err, tiered.ErrNotFound):
		http.Error(w, "no such product", http.StatusNotFound)
	case err != nil:
		n.fail(w, err)
	default:
		writeJSON(w, p)
	}
}

// putProduct answers PUT /products/{id} with a body {"price": cents}: it
// updates the row in a transaction, bumping its version, and only after the
// commit deletes the key from the cache everywhere, and the cached HTTP
// responses that show the product (tag "product:ID"). It answers 200 with
// the row as committed once both returned: nil, or ErrQueued, which the
// answer says (invalidation_queued). Any other error is a 500.
func (n *node) putProduct(w http.ResponseWriter, r *http.Request) {
	n.puts.Add(1)
	id, ok := productID(w, r)
	if !ok {
		return
	}
	var body struct {
		Price int64 `json:"price"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&body); err != nil || body.Price <= 0 {
		http.Error(w, `body must be {"price": <positive cents>}`, http.StatusBadRequest)
		return
	}
	p, err := n.cat.setPrice(r.Context(), id, body.Price)
	if errors.Is(err, errNoProduct) {
		http.Error(w, "no such product", http.StatusNotFound)
		return
	}
	if err != nil {
		n.fail(w, err)
		return
	}
	// The row has changed. Delete removes the key from Redis and publishes
	// the invalidation, waiting out a slow or paused Redis for up to the
	// cache's WriteTimeout. If Redis did not answer by then, Delete returns
	// ErrQueued: the invalidation is in the bus's outbox, which delivers it
	// as soon as Redis answers, and this node serves the key from neither
	// tier meanwhile. The write is done either way, so the answer is a 200
	// that says so. The context is not the client's: a committed change
	// must be invalidated whoever waits for it. The cached HTTP responses
	// that show the product go the same way, by their tag.
	ctx := context.WithoutCancel(r.Context())
	err = invalidated(n.cache.Delete(ctx, strconv.FormatInt(id, 10)), n.web.invalidate(ctx, id))
	switch {
	case errors.Is(err, tiered.ErrQueued):
		n.queued.Add(1)
		writeJSON(w, putAnswer{Product: p, InvalidationQueued: true})
	case err != nil:
		n.fail(w, fmt.Errorf("committed version %d but could not invalidate the cache: %w", p.Version, err))
	default:
		writeJSON(w, putAnswer{Product: p})
	}
}

// stats answers GET /stats[?key=K] with the node's counters; with key, also
// the number of loader calls for that key.
func (n *node) stats(w http.ResponseWriter, r *http.Request) {
	s := nodeStats{
		Node:         n.name,
		PID:          os.Getpid(),
		Requests:     n.gets.Load() + n.puts.Load(),
		Gets:         n.gets.Load(),
		Puts:         n.puts.Load(),
		ServerErrors: n.serverErrors.Load(),
		Queued:       n.queued.Load(),
		BusHealthy:   n.bus.Healthy(),
		BusProven:    proven(n.bus),
		Cache:        n.cache.Stats(),
		Bus:          n.bus.Stats(),
		HTTPCache:    n.web.cache.Stats(),
	}
	if key := r.URL.Query().Get("key"); key != "" {
		s.Key = key
		if c, ok := n.keyLoads.Load(key); ok {
			s.KeyLoads = c.(*atomic.Uint64).Load()
		}
	}
	writeJSON(w, s)
}

// invalidated combines the results of a write's invalidations: the first
// error that is not tiered.ErrQueued, else one wrapping ErrQueued if any
// was queued, else nil.
func invalidated(errs ...error) error {
	var queued error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, tiered.ErrQueued):
			queued = err
		default:
			return err
		}
	}
	return queued
}

func (n *node) fail(w http.ResponseWriter, err error) {
	n.serverErrors.Add(1)
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

// redisOptions are the options of a node's Redis clients.
func redisOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr: addr,
		// Lets the cache's OpTimeout and WriteTimeout cut a call to a Redis
		// that stopped answering (docs/operations.md).
		ContextTimeoutEnabled: true,
		// Fail fast while Redis is down, so that reads fall through to the
		// database at once instead of spending the cache's OpTimeout on dial
		// retries; one immediate command retry replaces a pooled connection
		// that a Redis restart broke.
		DialTimeout:     200 * time.Millisecond,
		DialerRetries:   1,
		MaxRetries:      1,
		MinRetryBackoff: -1,
	}
}

// proven reports whether b proves L1 fresh now, as a read would ask.
func proven(b *tiered.Bus) bool {
	age := b.ProofAge()
	return age >= 0 && age <= b.MaxStaleness()
}

// quietRedisLog drops go-redis's own log lines (one per failed dial while
// Redis is down): the cache reports Redis failures through its Logger,
// rate-limited.
type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
