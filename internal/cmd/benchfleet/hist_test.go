package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/stats"
)

// TestHist checks the histogram's buckets and quantiles against the exact
// nearest-rank quantiles of the same samples.
func TestHist(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 63, 64, 65, 127, 128, 1000, time.Millisecond, time.Hour, 1<<63 - 1} {
		lo := histLow(histBucket(d))
		if lo > d || float64(d-lo) > float64(d)/histSub {
			t.Errorf("d=%d: bucket %d starts at %d", d, histBucket(d), lo)
		}
		if next := histLow(histBucket(d) + 1); next > 0 && next <= d { // 0 or less: past the largest duration
			t.Errorf("d=%d: the next bucket starts at %d", d, next)
		}
	}
	var h hist
	ds := make([]time.Duration, 10000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range ds {
		ds[i] = time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		h.add(ds[i])
	}
	slices.Sort(ds)
	for _, q := range []float64{0.01, 0.5, 0.99, 1} {
		want, got := stats.Percentile(ds, q), h.quantile(q)
		if got > want || float64(want-got) > float64(want)/histSub {
			t.Errorf("q=%v: %v, want %v within 1/%d", q, got, want, histSub)
		}
	}
	var m hist
	m.merge(&h)
	if m.n != h.n || m.max != h.max || m.quantile(0.5) != h.quantile(0.5) {
		t.Errorf("merge: n %d max %v, want %d %v", m.n, m.max, h.n, h.max)
	}
}
