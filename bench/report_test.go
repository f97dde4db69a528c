package main

import (
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// These tests cover the report alone; the workloads need a redis-server
// and run through make bench-peers.

func TestSplice(t *testing.T) {
	doc := "# Title\n\nbefore\n" + markerStart + "\nold table\n" + markerEnd + "\nafter\n"
	got, err := splice([]byte(doc), "new table\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Title\n\nbefore\n" + markerStart + "\nnew table\n" + markerEnd + "\nafter\n"
	if string(got) != want {
		t.Errorf("splice:\n%s\nwant:\n%s", got, want)
	}
	for _, bad := range []string{"no markers\n", markerEnd + "\n" + markerStart + "\n"} {
		if _, err := splice([]byte(bad), "x"); err == nil {
			t.Errorf("splice(%q): no error", bad)
		}
	}
}

func TestNum(t *testing.T) {
	for _, c := range []struct {
		x    float64
		want string
	}{
		{0, "0"}, {8, "8"}, {0.126, "0.13"}, {12.34, "12.3"}, {123.4, "123"},
		{1234.5, "1,235"}, {1234567, "1,234,567"}, {-1234, "-1,234"}, {math.NaN(), "–"},
	} {
		if got := num(c.x); got != c.want {
			t.Errorf("num(%v) = %q, want %q", c.x, got, c.want)
		}
	}
}

func TestHistQuantile(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := h.quantile(c.q)
		if rel := math.Abs(float64(got-c.want)) / float64(c.want); rel > 1.0/histSub {
			t.Errorf("quantile(%v) = %v, want %v within %.1f%%", c.q, got, c.want, 100.0/histSub)
		}
	}
	for b := 1; b < len(h.counts); b++ {
		if bucketMid(b) <= bucketMid(b-1) {
			t.Fatalf("bucket %d's middle %v is not above bucket %d's %v", b, bucketMid(b), b-1, bucketMid(b-1))
		}
	}
	if last := bucket(math.MaxUint64); last != len(h.counts)-1 {
		t.Errorf("bucket(MaxUint64) = %d, want the last of %d", last, len(h.counts))
	}
	for _, ns := range []uint64{0, 1, 31, 32, 33, 1000, 1 << 40} {
		if mid := bucketMid(bucket(ns)); math.Abs(mid-float64(ns)) > float64(ns)/histSub+1 {
			t.Errorf("bucket(%d) has middle %v", ns, mid)
		}
	}
}

// TestMarkdownAndSVG builds a report with every kind of cell (a figure, a
// zero on a log scale, none) and checks the table's shape and that the
// SVG is well-formed XML.
func TestMarkdownAndSVG(t *testing.T) {
	r := &report{kinds: kinds}
	w := r.row("warm L1 hit", "ns/op")
	w.chart = &chart{title: "hit", log: true, lowerBetter: true}
	w.set("tiered", "200 (0)", 200)
	w.set("go-redis/cache", "3,000 (8)", 3000)
	w.set("rueidis", "0", 0)
	w.set("go-redis", "never", math.NaN())
	lin := r.row("stampede", "loads")
	lin.chart = &chart{title: "loads <per key> & more"}
	lin.set("tiered", "1", 1)
	r.note("¹ a note")
	m := machine{date: "2026-01-02", cpus: 2, goos: "linux/amd64", goVer: "go1.26", redis: "7.0.15", loadStart: "1.00", loadEnd: "2.00"}
	md := r.markdown(config{}, m, "chart.svg")
	for _, want := range []string{
		"| workload | figure | tiered | go-redis/cache | rueidis | go-redis |",
		"| warm L1 hit | ns/op | 200 (0) | 3,000 (8) | 0 | never |",
		"| stampede | loads | 1 | not run | not run | not run |",
		"¹ a note", "](chart.svg)", "load average of 1.00",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	d := xml.NewDecoder(strings.NewReader(string(r.svg(m))))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
	}
}
