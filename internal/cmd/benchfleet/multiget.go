package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/stats"
	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/tiered"
)

// The multiget workload: GetMany of mgKeys keys against its floor, a raw
// go-redis MGET of the same Redis keys plus the decoding any reader must
// do (l2.DecodeEnvelope and the JSON codec's Unmarshal of each value, into
// a slice), measured side by side: each of mgIters iterations runs every
// operation of its case once, in an order rotated by one operation per
// iteration, so that the machine's noise falls on all of them alike. Each
// case prints the p50 and the mean of each operation and the ratios
// tiered/raw. Measured calls use a context that cannot be cancelled (the
// flight then runs on the caller's goroutine), but for getmany_cancel,
// which uses a cancellable one, as a request's.
//
// Five nodes on one redis-server (TTL 1h, defaults otherwise). Node W
// first fills Redis with mgIters disjoint sets of mgKeys keys (GetMany
// with a BulkLoader); the other four have never seen them. Cases, one line
// each:
//
//	case=l1cold  Redis warm, L1 cold: iteration i reads set i, raw and on
//	             each of the four nodes, once: GetMany (getmany), GetMany
//	             with a cancellable context (getmany_cancel), mgKeys
//	             sequential GetOrLoad calls (seq_getorload) and mgKeys
//	             goroutines calling GetOrLoad at once, timed from before
//	             their start to after the last returned (conc_getorload).
//	case=l1hit   all in L1: GetMany of set 0, which the getmany node has
//	             read (and read again until every key was an L1 hit),
//	             against raw MGET+decode of the same set.
//	case=cold    neither tier: GetMany of a set of keys nobody wrote, with
//	             an in-memory BulkLoader, against raw MGET+decode of the
//	             warm set i as the floor.
//
// Fields: OP_p50_us and OP_mean_us for each operation OP (raw, getmany,
// and in case l1cold getmany_cancel, seq_getorload, conc_getorload);
// ratio_p50 and ratio_mean, getmany/raw. Case l1hit adds l1_hits (its
// GetMany calls' L1 hits, out of iterations × keys), case cold bulkloads
// (BulkLoad calls). The value is Product, the ~256-byte struct of tiered's
// micro-benchmarks.

const (
	mgNamespace = "multiget"
	mgKeys      = 100
	mgIters     = 300
	mgTarget    = 1.2 // case l1cold: getmany ≤ mgTarget × raw
)

// Product is the value of the multiget workload: the same fields as
// benchValue in tiered/bench_test.go (256 bytes in memory, about 350 bytes
// of JSON), so that the workload and the micro-benchmarks decode alike.
type Product struct {
	ID, Version, Price, Stock               int64
	Name, Category, Description, SKU        string
	Tags                                    [8]string
	CreatedUnix, UpdatedUnix, Weight, Score int64
}

func newProduct(id int64) Product {
	return Product{
		ID: id, Version: 7, Price: 1999, Stock: 12,
		Name: "espresso cup", Category: "kitchen", Description: "a small white porcelain cup", SKU: "EC-42",
		Tags:        [8]string{"cup", "white", "porcelain", "espresso", "kitchen", "gift", "small", "sale"},
		CreatedUnix: 1700000000, UpdatedUnix: 1764000000, Weight: 120, Score: 5,
	}
}

// mgOp is one measured operation of an iteration: run does iteration i's
// work, timing only that, and checks the result afterwards.
type mgOp struct {
	name string
	run  func(i int) (time.Duration, error)
	ds   []time.Duration
}

// p50 and mean of the op's durations (sorted by interleave).
func (o *mgOp) p50() time.Duration { return stats.Percentile(o.ds, 0.5) }

func (o *mgOp) mean() time.Duration {
	var s time.Duration
	for _, d := range o.ds {
		s += d
	}
	return s / time.Duration(max(len(o.ds), 1))
}

// interleave runs mgIters iterations of ops, rotating their order by one
// per iteration, and sorts each op's durations.
func interleave(ctx context.Context, ops []*mgOp) error {
	for i := range mgIters {
		if err := ctx.Err(); err != nil {
			return err
		}
		for j := range ops {
			op := ops[(i+j)%len(ops)]
			d, err := op.run(i)
			if err != nil {
				return fmt.Errorf("%s, iteration %d: %w", op.name, i, err)
			}
			op.ds = append(op.ds, d)
		}
	}
	for _, op := range ops {
		slices.Sort(op.ds)
	}
	return nil
}

// mgFleet is the multiget workload's state.
type mgFleet struct {
	w, get, getCancel, seq, conc *cacheNode[Product]
	raw                          *redis.Client
	store                        *l2.Store // for the Redis key names only
	ids                          map[string]int64
	bulk                         tiered.BulkLoaderFunc[Product]
	bulkCalls                    atomic.Int64
	noLoad                       tiered.LoaderFunc[Product]
}

// mgSet returns the keys of set i with prefix.
func mgSet(prefix string, i int) []string {
	keys := make([]string, mgKeys)
	for j := range keys {
		keys[j] = fmt.Sprintf("%s-%03d-%03d", prefix, i, j)
	}
	return keys
}

func runMultiget(ctx context.Context) error {
	return withServer("multiget", func(addr string) error {
		f := &mgFleet{raw: faultClient(addr), ids: map[string]int64{}}
		defer f.raw.Close()
		var err error
		if f.store, err = l2.New(f.raw, &l2.Options{Namespace: mgNamespace}); err != nil {
			return err
		}
		nodes, err := newCacheNodes[Product](ctx, addr, 5, tiered.Options{Namespace: mgNamespace, TTL: time.Hour})
		defer closeNodes(nodes)
		if err != nil {
			return err
		}
		f.w, f.get, f.getCancel, f.seq, f.conc = nodes[0], nodes[1], nodes[2], nodes[3], nodes[4]
		for i := range mgIters {
			for _, p := range []string{"mg", "mgcold"} {
				for j, k := range mgSet(p, i) {
					f.ids[k] = int64(i*mgKeys + j)
				}
			}
		}
		f.bulk = func(_ context.Context, keys []string) (map[string]Product, error) {
			f.bulkCalls.Add(1)
			m := make(map[string]Product, len(keys))
			for _, k := range keys {
				m[k] = newProduct(f.ids[k])
			}
			return m, nil
		}
		f.noLoad = func(_ context.Context, key string) (Product, error) {
			return Product{}, fmt.Errorf("loader called for %s, which Redis holds", key)
		}
		if err := f.prewarm(ctx); err != nil {
			return err
		}
		for _, c := range []func(context.Context) error{f.l1Cold, f.l1Hit, f.cold} {
			if err := c(ctx); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "benchfleet: multiget: getmany node: %+v\n", f.get.cache.Stats())
		return nil
	})
}

// prewarm has node W fill Redis with the mgIters sets.
func (f *mgFleet) prewarm(ctx context.Context) error {
	t0 := time.Now()
	for i := range mgIters {
		m, err := f.w.cache.GetMany(ctx, mgSet("mg", i), f.bulk)
		if err == nil && len(m) != mgKeys {
			err = fmt.Errorf("%d values", len(m))
		}
		if err != nil {
			return fmt.Errorf("prewarm set %d: %w", i, err)
		}
	}
	n, err := f.raw.DBSize(ctx).Result()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "benchfleet: multiget: node W wrote %d sets of %d keys in %v; DBSIZE %d\n",
		mgIters, mgKeys, time.Since(t0).Round(time.Millisecond), n)
	return nil
}

// rawOp is the floor: MGET of the Redis keys of the set that set returns
// for an iteration, and the decoding of every value into a slice.
func (f *mgFleet) rawOp(set func(i int) []string) *mgOp {
	return &mgOp{name: "raw", run: func(i int) (time.Duration, error) {
		keys := set(i)
		rks := make([]string, len(keys))
		for j, k := range keys {
			rks[j] = f.store.Key(k)
		}
		ctx := context.Background()
		t0 := time.Now()
		vs, err := f.raw.MGet(ctx, rks...).Result()
		if err != nil {
			return 0, err
		}
		out := make([]Product, len(vs))
		for j, v := range vs {
			s, ok := v.(string)
			if !ok {
				return 0, fmt.Errorf("%s missing from Redis", rks[j])
			}
			env, err := l2.DecodeEnvelope([]byte(s))
			if err != nil {
				return 0, err
			}
			if err := (tiered.JSON{}).Unmarshal(env.Payload, &out[j]); err != nil {
				return 0, err
			}
		}
		d := time.Since(t0)
		for j, p := range out {
			if p.ID != f.ids[keys[j]] {
				return 0, fmt.Errorf("%s: ID %d", keys[j], p.ID)
			}
		}
		return d, nil
	}}
}

// getManyOp is GetMany on n of the set that set returns, with a context
// that cannot be cancelled unless cancellable.
func (f *mgFleet) getManyOp(name string, n *cacheNode[Product], set func(i int) []string, cancellable bool) *mgOp {
	return &mgOp{name: name, run: func(i int) (time.Duration, error) {
		keys := set(i)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if !cancellable {
			ctx = context.Background()
		}
		t0 := time.Now()
		m, err := n.cache.GetMany(ctx, keys, f.bulk)
		d := time.Since(t0)
		if err != nil {
			return 0, err
		}
		return d, f.check(keys, m)
	}}
}

func (f *mgFleet) check(keys []string, m map[string]Product) error {
	if len(m) != len(keys) {
		return fmt.Errorf("%d values for %d keys", len(m), len(keys))
	}
	for _, k := range keys {
		if m[k].ID != f.ids[k] {
			return fmt.Errorf("%s: ID %d", k, m[k].ID)
		}
	}
	return nil
}

// l1Cold is case l1cold.
func (f *mgFleet) l1Cold(ctx context.Context) error {
	warm := func(i int) []string { return mgSet("mg", i) }
	bg := context.Background()
	seq := &mgOp{name: "seq_getorload", run: func(i int) (time.Duration, error) {
		keys := warm(i)
		m := make(map[string]Product, len(keys))
		t0 := time.Now()
		for _, k := range keys {
			v, err := f.seq.cache.GetOrLoad(bg, k, f.noLoad)
			if err != nil {
				return 0, err
			}
			m[k] = v
		}
		d := time.Since(t0)
		return d, f.check(keys, m)
	}}
	conc := &mgOp{name: "conc_getorload", run: func(i int) (time.Duration, error) {
		keys := warm(i)
		vs := make([]Product, len(keys))
		errs := make([]error, len(keys))
		var wg sync.WaitGroup
		t0 := time.Now()
		for j, k := range keys {
			wg.Go(func() { vs[j], errs[j] = f.conc.cache.GetOrLoad(bg, k, f.noLoad) })
		}
		wg.Wait()
		d := time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
		m := make(map[string]Product, len(keys))
		for j, k := range keys {
			m[k] = vs[j]
		}
		return d, f.check(keys, m)
	}}
	raw := f.rawOp(warm)
	get := f.getManyOp("getmany", f.get, warm, false)
	getCancel := f.getManyOp("getmany_cancel", f.getCancel, warm, true)
	before := []tiered.Stats{f.get.cache.Stats(), f.getCancel.cache.Stats(), f.seq.cache.Stats(), f.conc.cache.Stats()}
	if err := interleave(ctx, []*mgOp{raw, get, getCancel, seq, conc}); err != nil {
		return fmt.Errorf("multiget l1cold: %w", err)
	}
	for i, n := range []*cacheNode[Product]{f.get, f.getCancel, f.seq, f.conc} {
		s := n.cache.Stats()
		fmt.Fprintf(os.Stderr, "benchfleet: multiget l1cold: reader %d: L1 hits %d, L2 hits %d, misses %d, loads %d (want 0, %d, 0, 0)\n",
			i, s.L1Hits-before[i].L1Hits, s.L2Hits-before[i].L2Hits, s.Misses-before[i].Misses, s.Loads-before[i].Loads, mgIters*mgKeys)
	}
	fmt.Printf("workload=multiget case=l1cold keys=%d iterations=%d raw_p50_us=%.1f raw_mean_us=%.1f getmany_p50_us=%.1f getmany_mean_us=%.1f ratio_p50=%.2f ratio_mean=%.2f getmany_cancel_p50_us=%.1f getmany_cancel_mean_us=%.1f seq_getorload_p50_us=%.1f seq_getorload_mean_us=%.1f conc_getorload_p50_us=%.1f conc_getorload_mean_us=%.1f\n",
		mgKeys, mgIters, usf(raw.p50()), usf(raw.mean()), usf(get.p50()), usf(get.mean()),
		ratio(get.p50(), raw.p50()), ratio(get.mean(), raw.mean()),
		usf(getCancel.p50()), usf(getCancel.mean()), usf(seq.p50()), usf(seq.mean()), usf(conc.p50()), usf(conc.mean()))
	r := ratio(get.p50(), raw.p50())
	fmt.Fprintf(os.Stderr, "benchfleet: multiget l1cold: getmany/raw p50 %.2f× (target ≤ %.1f×): %s; mean %.2f×; cancellable ctx p50 %.2f×; sequential GetOrLoad p50 %.2f×, %d goroutines p50 %.2f×\n",
		r, mgTarget, verdict(r <= mgTarget), ratio(get.mean(), raw.mean()), ratio(getCancel.p50(), raw.p50()),
		ratio(seq.p50(), raw.p50()), mgKeys, ratio(conc.p50(), raw.p50()))
	return nil
}

// l1Hit is case l1hit.
func (f *mgFleet) l1Hit(ctx context.Context) error {
	set := func(int) []string { return mgSet("mg", 0) }
	// L1 takes fills asynchronously (ristretto): read until all are hits.
	deadline := time.Now().Add(5 * time.Second)
	for {
		h0 := f.get.cache.Stats().L1Hits
		if _, err := f.get.cache.GetMany(ctx, set(0), f.bulk); err != nil {
			return err
		}
		if f.get.cache.Stats().L1Hits-h0 == mgKeys {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("multiget l1hit: set 0 never all in L1")
		}
		time.Sleep(time.Millisecond)
	}
	raw := f.rawOp(set)
	get := f.getManyOp("getmany", f.get, set, false)
	h0 := f.get.cache.Stats().L1Hits
	if err := interleave(ctx, []*mgOp{raw, get}); err != nil {
		return fmt.Errorf("multiget l1hit: %w", err)
	}
	hits := f.get.cache.Stats().L1Hits - h0
	fmt.Printf("workload=multiget case=l1hit keys=%d iterations=%d raw_p50_us=%.1f raw_mean_us=%.1f getmany_p50_us=%.1f getmany_mean_us=%.1f ratio_p50=%.3f ratio_mean=%.3f l1_hits=%d/%d\n",
		mgKeys, mgIters, usf(raw.p50()), usf(raw.mean()), usf(get.p50()), usf(get.mean()),
		ratio(get.p50(), raw.p50()), ratio(get.mean(), raw.mean()), hits, mgIters*mgKeys)
	return nil
}

// cold is case cold.
func (f *mgFleet) cold(ctx context.Context) error {
	raw := f.rawOp(func(i int) []string { return mgSet("mg", i) })
	get := f.getManyOp("getmany", f.get, func(i int) []string { return mgSet("mgcold", i) }, false)
	calls := f.bulkCalls.Load()
	if err := interleave(ctx, []*mgOp{raw, get}); err != nil {
		return fmt.Errorf("multiget cold: %w", err)
	}
	fmt.Printf("workload=multiget case=cold keys=%d iterations=%d raw_p50_us=%.1f raw_mean_us=%.1f getmany_p50_us=%.1f getmany_mean_us=%.1f ratio_p50=%.2f ratio_mean=%.2f bulkloads=%d\n",
		mgKeys, mgIters, usf(raw.p50()), usf(raw.mean()), usf(get.p50()), usf(get.mean()),
		ratio(get.p50(), raw.p50()), ratio(get.mean(), raw.mean()), f.bulkCalls.Load()-calls)
	return nil
}

// ratio returns a/b.
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
