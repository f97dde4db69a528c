package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/tieredcache/tiered/otelcache"
)

// Metrics. Every node serves GET /metrics in the Prometheus text format,
// produced by OpenTelemetry: an SDK MeterProvider whose one reader is the
// Prometheus exporter, with each of the node's caches registered through
// otelcache.Register and the bus (shared by both caches) once through
// otelcache.RegisterBus. The exporter is registered on a prometheus.Registry
// of the node's own, not on prometheus.DefaultRegisterer, so nothing is
// global: two nodes could live in one process, and /metrics shows only what
// the node registered (no go_* or process_* families). Prometheus reads the
// caches' counters at each scrape; the requests pay nothing for it.

// serviceName is the service.name of every node's resource; the node's name
// is its service.instance.id. The exporter reports both on target_info.
const serviceName = "tiered-example-cluster"

// meterName is the instrumentation scope of the nodes' instruments.
const meterName = "github.com/tieredcache/tiered/example/cluster"

// metricsPrefix starts the name of every family otelcache's instruments
// become in Prometheus (tiered.cache.l1.hits: tiered_cache_l1_hits_total).
const metricsPrefix = "tiered_"

// namedSource is a cache to report, with the namespace it was made with
// (a tiered.Cache does not expose it).
type namedSource struct {
	namespace string
	cache     otelcache.Source
}

// nodeMetrics is a node's MeterProvider and the handler of its /metrics.
// It is safe for concurrent use by multiple goroutines.
type nodeMetrics struct {
	provider *sdkmetric.MeterProvider
	handler  http.Handler // GET /metrics
	regs     []*otelcache.Registration

	once sync.Once // guards err: shutdown runs once
	err  error     // the first shutdown's result
}

// startMetrics reports bus and caches on a new MeterProvider whose reader
// is a Prometheus exporter on a registry of its own, for the node name.
// Call shutdown when the node stops.
func startMetrics(name string, bus otelcache.BusSource, caches ...namedSource) (*nodeMetrics, error) {
	reg := prometheus.NewRegistry()
	// One meter, so one scope: its otel_scope_* labels would only repeat
	// meterName on every series.
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(serviceName), semconv.ServiceInstanceID(name))
	m := &nodeMetrics{
		provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res)),
		handler:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}
	meter := m.provider.Meter(meterName)
	for _, c := range caches {
		r, err := otelcache.Register(meter, c.cache, c.namespace, nil)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("metrics: cache %q: %w", c.namespace, err), m.shutdown(context.Background()))
		}
		m.regs = append(m.regs, r)
	}
	r, err := otelcache.RegisterBus(meter, bus, nil)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("metrics: bus: %w", err), m.shutdown(context.Background()))
	}
	m.regs = append(m.regs, r)
	return m, nil
}

// shutdown stops the reporting and shuts the MeterProvider down; a scrape
// after it finds no metrics. It is idempotent: calls after the first
// return the first's result.
func (m *nodeMetrics) shutdown(ctx context.Context) error {
	m.once.Do(func() {
		var errs []error
		for _, r := range m.regs {
			errs = append(errs, r.Unregister())
		}
		errs = append(errs, m.provider.Shutdown(ctx))
		if err := errors.Join(errs...); err != nil {
			m.err = fmt.Errorf("metrics: %w", err)
		}
	})
	return m.err
}

// families is a parsed scrape: metric families by name.
type families map[string]*dto.MetricFamily

// scrapeMetrics GETs http://addr/metrics and parses the text format.
func scrapeMetrics(ctx context.Context, client *http.Client, addr string) (families, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	// The text format, which Prometheus also accepts, rather than whatever
	// a default negotiation would give.
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /metrics: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	return families(fs), nil
}

// tiered returns the names of the families that otelcache's instruments
// became.
func (fs families) tiered() []string {
	var names []string
	for name := range fs {
		if strings.HasPrefix(name, metricsPrefix) {
			names = append(names, name)
		}
	}
	return names
}

// value returns the value of the series of family name whose labels
// include every label=value pair of labels (given as pairs), and whether
// exactly one series matched.
func (fs families) value(name string, labels ...string) (float64, bool) {
	f := fs[name]
	if f == nil {
		return 0, false
	}
	var v float64
	n := 0
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		n++
		switch {
		case m.GetCounter() != nil:
			v = m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			v = m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			v = m.GetUntyped().GetValue()
		}
	}
	return v, n == 1
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// namespaceLabel is the Prometheus label of otelcache.NamespaceKey.
const namespaceLabel = "tiered_namespace"

// reportMetrics scrapes the first node's /metrics, as Prometheus would,
// prints how many tiered_* families it exports and two of its product
// cache's counters, and counts an error if the scrape fails or those
// counters differ from final, the node's /stats taken after the last read.
func (d *driver) reportMetrics(ctx context.Context, final snapshot) {
	n := d.nodes[0]
	if final.errs[0] != nil {
		return // summarize counts it
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	fs, err := scrapeMetrics(ctx, d.http, n.addr)
	if err != nil {
		d.fail("%s %v", n.name, err)
		return
	}
	st := final.stats[0].Cache
	var got [2]float64
	for i, c := range []struct {
		family string
		want   uint64
	}{{"tiered_cache_l1_hits_total", st.L1Hits}, {"tiered_cache_loads_total", st.Loads}} {
		v, ok := fs.value(c.family, namespaceLabel, d.ns)
		if !ok || v != float64(c.want) {
			d.fail("%s /metrics: %s{%s=%q} is %v (found: %v); /stats says %d",
				n.name, c.family, namespaceLabel, d.ns, v, ok, c.want)
		}
		got[i] = v
	}
	d.out.printf("metrics: %s GET /metrics (OpenTelemetry, Prometheus exporter): %d tiered_* families; "+
		"product cache: tiered_cache_l1_hits_total %.0f, tiered_cache_loads_total %.0f (/stats: %d, %d)",
		n.name, len(fs.tiered()), got[0], got[1], st.L1Hits, st.Loads)
}
