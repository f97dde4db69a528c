package stats

import (
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100) // 1..100
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	for _, tc := range []struct {
		name string
		ds   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one sample p50", []time.Duration{7}, 0.5, 7},
		{"one sample max", []time.Duration{7}, 1, 7},
		{"p50 of 100", hundred, 0.5, 50},
		{"p99 of 100", hundred, 0.99, 99},
		{"max of 100", hundred, 1, 100},
		{"p1 of 100", hundred, 0.01, 1},
		{"q 0 is the minimum", hundred, 0, 1},
		{"q above 1 is the maximum", hundred, 1.5, 100},
		{"p50 of 4 is the 2nd", []time.Duration{1, 2, 3, 4}, 0.5, 2},
		{"p50 of 5 is the 3rd", []time.Duration{1, 2, 3, 4, 5}, 0.5, 3},
		{"p99 of 10 is the maximum", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99, 10},
		{"unsorted", []time.Duration{5, 1, 4, 2, 3}, 0.5, 3},
		{"unsorted max", []time.Duration{5, 1, 4, 2, 3}, 1, 5},
		{"negative samples", []time.Duration{-3, 2, -1}, 0.5, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			orig := slices.Clone(tc.ds)
			if got := Percentile(tc.ds, tc.q); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.ds, tc.q, got, tc.want)
			}
			if !slices.Equal(tc.ds, orig) {
				t.Errorf("Percentile modified its argument: %v, was %v", tc.ds, orig)
			}
		})
	}
}
