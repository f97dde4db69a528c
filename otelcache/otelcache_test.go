package otelcache_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/tieredcache/tiered/internal/tieredtest"
	"github.com/tieredcache/tiered/otelcache"
	"github.com/tieredcache/tiered/tiered"
)

// newCache returns a ready cache of strings in namespace ns on an embedded
// Redis, closed (with its client and server) when the test ends.
func newCache(t *testing.T, ns string) *tiered.Cache[string] {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	// MaxStaleness is long so that a loaded machine's late PONG does not
	// make a read skip L1 and change the counts this test expects.
	return tieredtest.Cache[string](t, rdb, &tiered.Options{Namespace: ns, TTL: time.Minute, MaxStaleness: time.Minute})
}

// newReader returns a manual reader and a meter of a provider it reads.
func newReader(t *testing.T) (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return r, mp
}

// collected are the data points of one collection from meter "test", by instrument name and
// then attribute set.
type collected map[string]map[attribute.Distinct]point

type point struct {
	int64s  []int64
	float64 float64
	kind    string // "sum", "gauge"
	mono    bool
}

func collect(t *testing.T, r *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := collected{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "test" { // the meter every test reads
			continue
		}
		for _, m := range sm.Metrics {
			byAttr := out[m.Name]
			if byAttr == nil {
				byAttr = map[attribute.Distinct]point{}
				out[m.Name] = byAttr
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					p := byAttr[dp.Attributes.Equivalent()]
					p.int64s, p.kind, p.mono = append(p.int64s, dp.Value), "sum", d.IsMonotonic
					byAttr[dp.Attributes.Equivalent()] = p
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					p := byAttr[dp.Attributes.Equivalent()]
					p.int64s, p.kind = append(p.int64s, dp.Value), "gauge"
					byAttr[dp.Attributes.Equivalent()] = p
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					byAttr[dp.Attributes.Equivalent()] = point{float64: dp.Value, kind: "gauge", int64s: []int64{0}}
				}
			default:
				t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return out
}

// key returns the map key of an attribute set.
func key(attrs ...attribute.KeyValue) attribute.Distinct {
	s := attribute.NewSet(attrs...)
	return s.Equivalent()
}

// int64 returns the one value of name with attrs.
func (c collected) int64(t *testing.T, name string, attrs ...attribute.KeyValue) (int64, bool) {
	t.Helper()
	p, ok := c[name][key(attrs...)]
	if !ok {
		return 0, false
	}
	if len(p.int64s) != 1 {
		t.Fatalf("%s: %d data points for one attribute set", name, len(p.int64s))
	}
	return p.int64s[0], true
}

// cacheFields are the fields of tiered.Stats by instrument name.
var cacheFields = map[string]func(tiered.Stats) uint64{
	"tiered.cache.l1.hits":        func(s tiered.Stats) uint64 { return s.L1Hits },
	"tiered.cache.l2.hits":        func(s tiered.Stats) uint64 { return s.L2Hits },
	"tiered.cache.misses":         func(s tiered.Stats) uint64 { return s.Misses },
	"tiered.cache.negative_hits":  func(s tiered.Stats) uint64 { return s.NegativeHits },
	"tiered.cache.loads":          func(s tiered.Stats) uint64 { return s.Loads },
	"tiered.cache.load_errors":    func(s tiered.Stats) uint64 { return s.LoadErrors },
	"tiered.cache.lease_waits":    func(s tiered.Stats) uint64 { return s.LeaseWaits },
	"tiered.cache.stale_discards": func(s tiered.Stats) uint64 { return s.StaleDiscards },
	"tiered.cache.l2.errors":      func(s tiered.Stats) uint64 { return s.L2Errors },
	"tiered.cache.corrupt":        func(s tiered.Stats) uint64 { return s.Corrupt },
	"tiered.cache.rejected":       func(s tiered.Stats) uint64 { return s.Rejected },
	"tiered.cache.invalidations":  func(s tiered.Stats) uint64 { return s.Invalidations },
	"tiered.cache.resets":         func(s tiered.Stats) uint64 { return s.Resets },
	"tiered.cache.queued":         func(s tiered.Stats) uint64 { return s.Queued },
	"tiered.cache.delivered":      func(s tiered.Stats) uint64 { return s.Delivered },
	"tiered.cache.purges":         func(s tiered.Stats) uint64 { return s.Purges },
	"tiered.cache.l1.unproven":    func(s tiered.Stats) uint64 { return s.L1Unproven },
	"tiered.cache.breaker.opens":  func(s tiered.Stats) uint64 { return s.BreakerOpens },
	"tiered.cache.breaker.skips":  func(s tiered.Stats) uint64 { return s.BreakerSkips },
	"tiered.cache.stale_served":   func(s tiered.Stats) uint64 { return s.StaleServed },
	"tiered.cache.refreshes":      func(s tiered.Stats) uint64 { return s.Refreshes },
}

var busFields = map[string]func(tiered.BusStats) uint64{
	"tiered.bus.received":     func(s tiered.BusStats) uint64 { return s.Received },
	"tiered.bus.own":          func(s tiered.BusStats) uint64 { return s.Own },
	"tiered.bus.garbled":      func(s tiered.BusStats) uint64 { return s.Garbled },
	"tiered.bus.gaps":         func(s tiered.BusStats) uint64 { return s.Gaps },
	"tiered.bus.pings":        func(s tiered.BusStats) uint64 { return s.Pings },
	"tiered.bus.replaced":     func(s tiered.BusStats) uint64 { return s.Replaced },
	"tiered.outbox.queued":    func(s tiered.BusStats) uint64 { return s.Queued },
	"tiered.outbox.delivered": func(s tiered.BusStats) uint64 { return s.Delivered },
	"tiered.outbox.dropped":   func(s tiered.BusStats) uint64 { return s.Dropped },
	"tiered.outbox.purges":    func(s tiered.BusStats) uint64 { return s.Purges },
	"tiered.outbox.pending":   func(s tiered.BusStats) uint64 { return uint64(s.Pending) },
}

// within checks that got is between the field's value before and after the
// collection, and equal to it when the two agree (the usual case for a
// cache at rest; a bus's pings go on in the background).
func within[S any](t *testing.T, name string, got int64, ok bool, before, after S, field func(S) uint64) {
	t.Helper()
	if !ok {
		t.Errorf("%s: not reported", name)
		return
	}
	lo, hi := field(before), field(after)
	if lo == hi && uint64(got) != lo {
		t.Errorf("%s = %d, Stats says %d", name, got, lo)
	} else if uint64(got) < lo || uint64(got) > hi {
		t.Errorf("%s = %d, Stats says between %d and %d", name, got, lo, hi)
	}
}

// exercise does reads and writes that move most counters.
func exercise(t *testing.T, c *tiered.Cache[string]) {
	t.Helper()
	ctx := context.Background()
	load := tiered.LoaderFunc[string](func(context.Context, string) (string, error) { return "v", nil })
	fail := tiered.LoaderFunc[string](func(context.Context, string) (string, error) { return "", errors.New("db down") })
	for _, k := range []string{"a", "b", "c"} {
		if _, err := c.GetOrLoad(ctx, k, load); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetOrLoad(ctx, k, load); err != nil { // L1 hit
			t.Fatal(err)
		}
	}
	if _, err := c.GetOrLoad(ctx, "broken", fail); err == nil {
		t.Fatal("a failing loader returned no error")
	}
	if _, err := c.Get(ctx, "absent"); !errors.Is(err, tiered.ErrNotFound) {
		t.Fatalf("Get of an absent key: %v", err)
	}
	if err := c.Set(ctx, "a", "w"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "bad key\x00"); err == nil {
		t.Log("a key with a NUL byte was accepted") // Rejected may stay 0; fine
	}
}

func TestRegisterReportsStats(t *testing.T) {
	c := newCache(t, "users")
	r, mp := newReader(t)
	attrs := []attribute.KeyValue{attribute.String("service", "api")}
	reg, err := otelcache.Register(mp.Meter("test"), c, "users", &otelcache.Options{Attributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	exercise(t, c)

	before := c.Stats()
	got := collect(t, r)
	after := c.Stats()
	want := append(attrs, otelcache.NamespaceKey.String("users"))
	for name, field := range cacheFields {
		v, ok := got.int64(t, name, want...)
		within(t, name, v, ok, before, after, field)
		if p := got[name][key(want...)]; p.kind != "sum" || !p.mono {
			t.Errorf("%s: %s monotonic=%v, want a monotonic sum", name, p.kind, p.mono)
		}
	}
	if len(got) != len(cacheFields) {
		t.Errorf("%d instruments reported, want %d", len(got), len(cacheFields))
	}
	for _, f := range []string{"tiered.cache.loads", "tiered.cache.load_errors", "tiered.cache.misses"} {
		if v, _ := got.int64(t, f, want...); v == 0 {
			t.Errorf("%s = 0 after the exercise", f)
		}
	}
}

func TestRegisterBusReportsStats(t *testing.T) {
	c := newCache(t, "users")
	r, mp := newReader(t)
	reg, err := otelcache.RegisterBus(mp.Meter("test"), c.Bus(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	exercise(t, c)

	before := c.Bus().Stats()
	got := collect(t, r)
	after := c.Bus().Stats()
	for name, field := range busFields {
		v, ok := got.int64(t, name)
		within(t, name, v, ok, before, after, field)
	}
	if v, _ := got.int64(t, "tiered.bus.received"); v == 0 {
		t.Error("tiered.bus.received = 0 after writes")
	}
	if v, ok := got.int64(t, "tiered.bus.healthy"); !ok || v != 1 {
		t.Errorf("tiered.bus.healthy = %d (reported %v), want 1", v, ok)
	}
	p, ok := got["tiered.bus.proof.age"][key()]
	if !ok || p.float64 < 0 || p.float64 > time.Minute.Seconds() {
		t.Errorf("tiered.bus.proof.age = %v (reported %v), want a few seconds at most", p.float64, ok)
	}
	if p := got["tiered.outbox.pending"][key()]; p.kind != "sum" || p.mono {
		t.Errorf("tiered.outbox.pending: %s monotonic=%v, want a non-monotonic sum", p.kind, p.mono)
	}
}

// fakeBus is a BusSource in a given state.
type fakeBus struct {
	s       tiered.BusStats
	healthy bool
	age     time.Duration
}

func (b *fakeBus) Stats() tiered.BusStats  { return b.s }
func (b *fakeBus) Healthy() bool           { return b.healthy }
func (b *fakeBus) ProofAge() time.Duration { return b.age }

func TestRegisterBusUnhealthy(t *testing.T) {
	r, mp := newReader(t)
	b := &fakeBus{s: tiered.BusStats{Pending: 7, Queued: 9}, age: -1}
	reg, err := otelcache.RegisterBus(mp.Meter("test"), b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	got := collect(t, r)
	if v, _ := got.int64(t, "tiered.bus.healthy"); v != 0 {
		t.Errorf("tiered.bus.healthy = %d, want 0", v)
	}
	if v, _ := got.int64(t, "tiered.outbox.pending"); v != 7 {
		t.Errorf("tiered.outbox.pending = %d, want 7", v)
	}
	if _, ok := got["tiered.bus.proof.age"][key()]; ok {
		t.Error("tiered.bus.proof.age reported without a proof")
	}
}

func TestUnregister(t *testing.T) {
	c := newCache(t, "users")
	r, mp := newReader(t)
	reg, err := otelcache.Register(mp.Meter("test"), c, "users", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, r); len(got["tiered.cache.loads"]) != 1 {
		t.Fatalf("before Unregister: %v", got["tiered.cache.loads"])
	}
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if err := reg.Unregister(); err != nil {
		t.Fatalf("second Unregister: %v", err)
	}
	exercise(t, c)
	// The SDK keeps a cumulative series it stopped receiving; what matters
	// is that nothing reads the cache any more: the value stays as it was.
	got := collect(t, r)
	if v, ok := got.int64(t, "tiered.cache.loads", otelcache.NamespaceKey.String("users")); ok && v != 0 {
		t.Errorf("tiered.cache.loads = %d after Unregister, want nothing", v)
	}
}

// TestRegisterTwice: two caches on one meter are two series; the same
// cache again is refused until the first registration ends, since the SDK
// would sum the two callbacks' observations.
func TestRegisterTwice(t *testing.T) {
	users, orders := newCache(t, "users"), newCache(t, "orders")
	r, mp := newReader(t)
	meter := mp.Meter("test")
	first, err := otelcache.Register(meter, users, "users", nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := otelcache.Register(meter, orders, "orders", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Unregister()
	if _, err := otelcache.Register(meter, users, "users", nil); !errors.Is(err, otelcache.ErrRegistered) {
		t.Fatalf("same cache, meter and attributes again: %v, want ErrRegistered", err)
	}
	other, err := otelcache.Register(mp.Meter("other"), users, "users", nil)
	if err != nil {
		t.Fatalf("same cache on another meter: %v", err)
	}
	defer other.Unregister()
	exercise(t, users)
	got := collect(t, r)
	u, _ := got.int64(t, "tiered.cache.loads", otelcache.NamespaceKey.String("users"))
	o, _ := got.int64(t, "tiered.cache.loads", otelcache.NamespaceKey.String("orders"))
	if want := users.Stats().Loads; uint64(u) != want || o != 0 {
		t.Errorf("loads: users %d (Stats %d), orders %d (want 0)", u, want, o)
	}

	if err := first.Unregister(); err != nil {
		t.Fatal(err)
	}
	again, err := otelcache.Register(meter, users, "users", nil)
	if err != nil {
		t.Fatalf("after Unregister: %v", err)
	}
	again.Unregister()
	b, err := otelcache.RegisterBus(meter, users.Bus(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Unregister()
	if _, err := otelcache.RegisterBus(meter, users.Bus(), nil); !errors.Is(err, otelcache.ErrRegistered) {
		t.Fatalf("same bus again: %v, want ErrRegistered", err)
	}
}

func TestNoopMeter(t *testing.T) {
	c := newCache(t, "users")
	reg, err := otelcache.Register(noop.NewMeterProvider().Meter("test"), c, "users", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
}

func TestInvalid(t *testing.T) {
	c := newCache(t, "users")
	_, mp := newReader(t)
	m := mp.Meter("test")
	for name, f := range map[string]func() error{
		"nil cache":       func() error { _, err := otelcache.Register(m, nil, "users", nil); return err },
		"empty namespace": func() error { _, err := otelcache.Register(m, c, "", nil); return err },
		"nil meter":       func() error { _, err := otelcache.Register(nil, c, "users", nil); return err },
		"nil bus":         func() error { _, err := otelcache.RegisterBus(m, nil, nil); return err },
	} {
		t.Run(name, func(t *testing.T) {
			if err := f(); !errors.Is(err, otelcache.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}
