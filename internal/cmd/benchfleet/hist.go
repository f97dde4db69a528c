package main

import (
	"math"
	"math/bits"
	"time"
)

// hist is a histogram of durations with histSub buckets per power of two
// (a relative error under 1/histSub), for workloads that make too many
// reads to keep every latency. The zero hist is empty.
type hist struct {
	counts [64 * histSub]uint64
	n      uint64
	sum    time.Duration
	max    time.Duration
}

const (
	histBits = 5
	histSub  = 1 << histBits
)

// histBucket returns the bucket of d: d itself below 2·histSub ns, else
// one of histSub buckets of d's power of two.
func histBucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 2*histSub {
		return int(v)
	}
	s := bits.Len64(v) - histBits - 1 // v>>s is in [histSub, 2·histSub)
	return 2*histSub + (s-1)*histSub + int(v>>s) - histSub
}

// histLow returns the smallest duration in bucket i.
func histLow(i int) time.Duration {
	if i < 2*histSub {
		return time.Duration(i)
	}
	s := (i-2*histSub)/histSub + 1
	return time.Duration(uint64((i-2*histSub)%histSub+histSub) << s)
}

func (h *hist) add(d time.Duration) {
	h.counts[histBucket(d)]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile by the nearest-rank method, as the
// lower bound of its bucket; q = 1 is the maximum, exact.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	rank := max(uint64(math.Ceil(q*float64(h.n))), 1)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return histLow(i)
		}
	}
	return h.max
}
