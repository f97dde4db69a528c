// Package stats summarises latency samples for the repository's
// benchmark command, fleet tests and example cluster, so that they all
// report a p99 the same way.
package stats

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the q-quantile of ds by the nearest-rank method: the
// smallest sample that at least a fraction q of the samples do not exceed.
// q = 1 gives the maximum, q ≤ 0 the minimum; no samples give 0.
//
// ds need not be sorted and is not modified: a sorted ds is read in place,
// an unsorted one is sorted in a copy. A caller that takes several
// quantiles of many samples sorts them once first.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	if !slices.IsSorted(ds) {
		ds = slices.Clone(ds)
		slices.Sort(ds)
	}
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}
