package main

import (
	"math/bits"
	"slices"
	"time"
)

// hist is a histogram of durations with histSub buckets per power of two
// (a relative error under 1/histSub), for workloads that make too many
// reads to keep every latency. The zero hist is empty; a hist is not safe
// for concurrent use (give each goroutine its own and merge them).
type hist struct {
	counts [(65 - histBits) * histSub]uint64 // bucket(math.MaxUint64) is the last
	n      uint64
	max    time.Duration
}

const (
	histBits = 5
	histSub  = 1 << histBits
)

// bucket returns the bucket of ns nanoseconds.
func bucket(ns uint64) int {
	if ns < histSub {
		return int(ns)
	}
	e := bits.Len64(ns) - 1 // ≥ histBits
	sub := (ns >> (e - histBits)) & (histSub - 1)
	return (e-histBits+1)*histSub + int(sub)
}

// bucketMid returns the middle of bucket b, in nanoseconds.
func bucketMid(b int) float64 {
	if b < histSub {
		return float64(b)
	}
	e := b/histSub - 1 + histBits
	lo := uint64(1)<<e | uint64(b%histSub)<<(e-histBits)
	return float64(lo) + float64(uint64(1)<<(e-histBits))/2
}

func (h *hist) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucket(uint64(d))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q ≤ 1), or 0 for an empty hist.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(bucketMid(i)), h.max)
		}
	}
	return h.max
}

// quantile returns the q-quantile of ds (sorted in place), nearest rank,
// or 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// us returns d in microseconds.
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
