package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tieredcache/tiered/tiered"
)

// wantFamilies are the families a node's /metrics must have, with their
// types: one per otelcache instrument, and the exporter's target_info.
var wantFamilies = map[string]dto.MetricType{
	"target_info":                       dto.MetricType_GAUGE,
	"tiered_cache_l1_hits_total":        dto.MetricType_COUNTER,
	"tiered_cache_l2_hits_total":        dto.MetricType_COUNTER,
	"tiered_cache_misses_total":         dto.MetricType_COUNTER,
	"tiered_cache_negative_hits_total":  dto.MetricType_COUNTER,
	"tiered_cache_loads_total":          dto.MetricType_COUNTER,
	"tiered_cache_load_errors_total":    dto.MetricType_COUNTER,
	"tiered_cache_lease_waits_total":    dto.MetricType_COUNTER,
	"tiered_cache_stale_discards_total": dto.MetricType_COUNTER,
	"tiered_cache_l2_errors_total":      dto.MetricType_COUNTER,
	"tiered_cache_corrupt_total":        dto.MetricType_COUNTER,
	"tiered_cache_rejected_total":       dto.MetricType_COUNTER,
	"tiered_cache_invalidations_total":  dto.MetricType_COUNTER,
	"tiered_cache_resets_total":         dto.MetricType_COUNTER,
	"tiered_cache_queued_total":         dto.MetricType_COUNTER,
	"tiered_cache_delivered_total":      dto.MetricType_COUNTER,
	"tiered_cache_purges_total":         dto.MetricType_COUNTER,
	"tiered_cache_l1_unproven_total":    dto.MetricType_COUNTER,
	"tiered_cache_breaker_opens_total":  dto.MetricType_COUNTER,
	"tiered_cache_breaker_skips_total":  dto.MetricType_COUNTER,
	"tiered_cache_stale_served_total":   dto.MetricType_COUNTER,
	"tiered_cache_refreshes_total":      dto.MetricType_COUNTER,
	"tiered_bus_received_total":         dto.MetricType_COUNTER,
	"tiered_bus_own_total":              dto.MetricType_COUNTER,
	"tiered_bus_garbled_total":          dto.MetricType_COUNTER,
	"tiered_bus_gaps_total":             dto.MetricType_COUNTER,
	"tiered_bus_pings_total":            dto.MetricType_COUNTER,
	"tiered_bus_replaced_total":         dto.MetricType_COUNTER,
	"tiered_outbox_queued_total":        dto.MetricType_COUNTER,
	"tiered_outbox_delivered_total":     dto.MetricType_COUNTER,
	"tiered_outbox_dropped_total":       dto.MetricType_COUNTER,
	"tiered_outbox_purges_total":        dto.MetricType_COUNTER,
	"tiered_outbox_pending":             dto.MetricType_GAUGE,
	"tiered_bus_healthy_ratio":          dto.MetricType_GAUGE, // unit "1" becomes _ratio
	"tiered_bus_proof_age_seconds":      dto.MetricType_GAUGE,
}

// TestNodeMetrics starts a node process as the cluster does, on miniredis,
// reads through it one request at a time, and checks its /metrics: every
// family there with its type, the product and response caches' counters
// equal to its /stats and to what the reads imply, the bus's gauges, the
// node's own registry (no go_* families), and that the node shut its
// MeterProvider down without error when stopped.
func TestNodeMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "products.db")
	cat, err := openCatalog(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	const products = 10
	if err := cat.seed(ctx, products); err != nil {
		t.Fatal(err)
	}
	rs, err := startRedis(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	exe, err := os.Executable() // this test binary: TestMain makes it a node
	if err != nil {
		t.Fatal(err)
	}
	ns := "tiered-metrics-test:" + rand.Text()[:8]
	nodes, err := startNodes(ctx, exe, []nodeConfig{{Name: "node1", RedisAddr: rs.addr, BusAddr: rs.addr, DBPath: dbPath, Namespace: ns}}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	n := nodes[0]
	stopped := false
	defer func() {
		if !stopped {
			stopNodes(nodes)
		}
	}()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	get := func(path string, want int, v any) {
		t.Helper()
		resp, err := client.Get("http://" + n.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %s, want %d", path, resp.Status, want)
		}
		if v != nil {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
	}

	// One request at a time, so that every call is a flight of its own:
	// L1Hits+L2Hits+Misses is the number of reads. Product 99 does not
	// exist: its first read loads and caches "not found", the second is a
	// negative hit.
	ids := []int{1, 2, 3, 1, 2, 1, 99, 99}
	distinct := 4
	for _, id := range ids {
		want := http.StatusOK
		if id > products {
			want = http.StatusNotFound
		}
		get("/products/"+strconv.Itoa(id), want, nil)
	}
	for range 2 {
		get("/http/products/1", http.StatusOK, nil)
	}
	var st nodeStats
	get("/stats", http.StatusOK, &st)
	fs, err := scrapeMetrics(ctx, client, n.addr)
	if err != nil {
		t.Fatal(err)
	}

	for name, typ := range wantFamilies {
		switch f := fs[name]; {
		case f == nil:
			t.Errorf("no family %s", name)
		case f.GetType() != typ:
			t.Errorf("%s is a %v, want a %v", name, f.GetType(), typ)
		}
	}
	if got := len(fs.tiered()); got < len(wantFamilies)-1 {
		t.Errorf("%d tiered_* families, want at least %d", got, len(wantFamilies)-1)
	}
	if f := fs["go_goroutines"]; f != nil {
		t.Error("/metrics has go_goroutines: the exporter is on the default registry, not the node's own")
	}
	if _, ok := fs.value("target_info", "service_name", serviceName, "service_instance_id", "node1"); !ok {
		t.Errorf("no target_info for node1 of %s: %v", serviceName, fs["target_info"])
	}

	// What the reads imply, in /stats.
	c := st.Cache
	if c.L1Hits+c.L2Hits+c.Misses != uint64(len(ids)) || c.Misses != uint64(distinct) ||
		c.Loads != uint64(distinct) || c.NegativeHits != 1 {
		t.Errorf("/stats after %d reads of %d keys (one absent, read twice): %+v", len(ids), distinct, c)
	}
	if st.HTTPCache.Loads == 0 || st.HTTPCache.L1Hits+st.HTTPCache.L2Hits == 0 {
		t.Errorf("/stats: the response cache neither loaded nor hit after two GETs: %+v", st.HTTPCache)
	}
	// /metrics says the same, series by series.
	for _, w := range []struct {
		family, namespace string
		want              uint64
	}{
		{"tiered_cache_l1_hits_total", ns, c.L1Hits},
		{"tiered_cache_l2_hits_total", ns, c.L2Hits},
		{"tiered_cache_misses_total", ns, c.Misses},
		{"tiered_cache_negative_hits_total", ns, c.NegativeHits},
		{"tiered_cache_loads_total", ns, c.Loads},
		{"tiered_cache_l1_unproven_total", ns, c.L1Unproven},
		{"tiered_cache_l1_hits_total", httpNamespace(ns), st.HTTPCache.L1Hits},
		{"tiered_cache_l2_hits_total", httpNamespace(ns), st.HTTPCache.L2Hits},
		{"tiered_cache_loads_total", httpNamespace(ns), st.HTTPCache.Loads},
	} {
		v, ok := fs.value(w.family, namespaceLabel, w.namespace)
		if !ok || v != float64(w.want) {
			t.Errorf("%s{%s=%q} = %v (one series: %v), /stats says %d", w.family, namespaceLabel, w.namespace, v, ok, w.want)
		}
	}
	for _, w := range []struct {
		family string
		want   float64
	}{
		{"tiered_bus_healthy_ratio", 1},
		{"tiered_outbox_pending", float64(st.Bus.Pending)},
	} {
		if v, ok := fs.value(w.family); !ok || v != w.want {
			t.Errorf("%s = %v (one series: %v), want %v", w.family, v, ok, w.want)
		}
	}
	if !st.BusHealthy {
		t.Error("/stats: bus not healthy")
	}

	stopNodes(nodes)
	stopped = true
	if n.waitErr != nil {
		t.Errorf("node1 exited with %v; its stderr says why (a failed MeterProvider shutdown exits 1)", n.waitErr)
	}
}

// stubCache and stubBus stand in for a cache and a bus, with counters the
// test sets.
type stubCache struct{ s tiered.Stats }

func (c *stubCache) Stats() tiered.Stats { return c.s }

type stubBus struct{}

func (stubBus) Stats() tiered.BusStats  { return tiered.BusStats{Received: 7} }
func (stubBus) Healthy() bool           { return true }
func (stubBus) ProofAge() time.Duration { return 50 * time.Millisecond }

// TestMetricsPerNode runs the metrics of two nodes in one process: each
// has its own registry (on the default one the second exporter could not
// register), so each /metrics shows its node's values only; shutdown is
// idempotent, and a scrape after it finds nothing of that node while the
// other still reports.
func TestMetricsPerNode(t *testing.T) {
	ctx := context.Background()
	type served struct {
		m   *nodeMetrics
		srv *httptest.Server
	}
	var nodes []served
	for i := range 2 {
		m, err := startMetrics(fmt.Sprintf("node%d", i+1), stubBus{},
			namedSource{"ns", &stubCache{tiered.Stats{L1Hits: uint64(10 * (i + 1))}}},
			namedSource{"ns-http", &stubCache{tiered.Stats{Loads: uint64(i + 1)}}})
		if err != nil {
			t.Fatal(err)
		}
		defer m.shutdown(ctx)
		srv := httptest.NewServer(m.handler)
		defer srv.Close()
		nodes = append(nodes, served{m, srv})
	}
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	scrape := func(i int) families {
		t.Helper()
		fs, err := scrapeMetrics(ctx, client, nodes[i].srv.Listener.Addr().String())
		if err != nil {
			t.Fatalf("node%d: %v", i+1, err)
		}
		return fs
	}
	for i := range nodes {
		fs := scrape(i)
		for _, w := range []struct {
			family string
			labels []string
			want   float64
		}{
			{"tiered_cache_l1_hits_total", []string{namespaceLabel, "ns"}, float64(10 * (i + 1))},
			{"tiered_cache_loads_total", []string{namespaceLabel, "ns-http"}, float64(i + 1)},
			{"tiered_bus_received_total", nil, 7},
			{"tiered_bus_proof_age_seconds", nil, 0.05},
			{"target_info", []string{"service_instance_id", fmt.Sprintf("node%d", i+1)}, 1},
		} {
			if v, ok := fs.value(w.family, w.labels...); !ok || v != w.want {
				t.Errorf("node%d: %s%v = %v (one series: %v), want %v", i+1, w.family, w.labels, v, ok, w.want)
			}
		}
	}

	for range 2 {
		if err := nodes[0].m.shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	if names := scrape(0).tiered(); len(names) != 0 {
		t.Errorf("node1 reports %v after its shutdown", names)
	}
	if v, ok := scrape(1).value("tiered_cache_l1_hits_total", namespaceLabel, "ns"); !ok || v != 20 {
		t.Errorf("node2 after node1's shutdown: tiered_cache_l1_hits_total = %v (one series: %v), want 20", v, ok)
	}
}

// metricsLine is the driver's report of its scrape of node1's /metrics.
var metricsLine = regexp.MustCompile(`(?m)^metrics: node1 GET /metrics \(OpenTelemetry, Prometheus exporter\): (\d+) tiered_\* families; ` +
	`product cache: tiered_cache_l1_hits_total (\d+), tiered_cache_loads_total (\d+) \(/stats: (\d+), (\d+)\)$`)

// checkMetricsLine checks the driver's metrics line in a run's output: the
// families are all there, and the counters it read equal /stats and are not
// zero.
func checkMetricsLine(t *testing.T, out string) {
	t.Helper()
	m := metricsLine.FindStringSubmatch(out)
	if m == nil {
		t.Errorf("output lacks %q", metricsLine)
		return
	}
	if n, _ := strconv.Atoi(m[1]); n < len(wantFamilies)-1 {
		t.Errorf("node1 /metrics has %d tiered_* families, want at least %d", n, len(wantFamilies)-1)
	}
	if m[2] != m[4] || m[3] != m[5] || m[2] == "0" || m[3] == "0" {
		t.Errorf("node1 /metrics and /stats differ, or counted nothing: %q", m[0])
	}
}
