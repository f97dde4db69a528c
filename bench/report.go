package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file turns the workloads' figures into the markdown table (stdout
// and, with -docs, docs/benchmarks.md between the markers) and hands the
// charted rows to svg.go.

// Markers around the generated part of the docs page.
const (
	markerStart = "<!-- bench-peers:start -->"
	markerEnd   = "<!-- bench-peers:end -->"
)

// report collects the table's rows, in the order the workloads add them.
type report struct {
	kinds []kind
	rows  []*row
	notes []string
}

// row is one line of the table: a figure of one workload for every library.
type row struct {
	label, metric string
	cells         map[string]cell // by library name
	chart         *chart          // nil: not in the chart
}

// cell is one library's figure: text for the table and, when it has one, a
// number for the chart.
type cell struct {
	text  string
	value float64 // NaN: no bar
	note  string  // what the chart writes instead of a bar, when value is NaN
}

// chart says how a row is drawn: a panel of one bar per library.
type chart struct {
	title       string
	log         bool // logarithmic scale (figures that span decades)
	lowerBetter bool
}

func (r *report) row(label, metric string) *row {
	w := &row{label: label, metric: metric, cells: map[string]cell{}}
	r.rows = append(r.rows, w)
	return w
}

// note adds a footnote under the table, once.
func (r *report) note(s string) {
	if !slices.Contains(r.notes, s) {
		r.notes = append(r.notes, s)
	}
}

func (w *row) set(library, text string, value float64) {
	w.cells[library] = cell{text: text, value: value}
}

// setNone sets a cell with no figure to chart: note says why in the chart.
func (w *row) setNone(library, text, note string) {
	w.cells[library] = cell{text: text, value: math.NaN(), note: note}
}

// num formats x with about three significant digits, thousands separated.
func num(x float64) string {
	switch ax := math.Abs(x); {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "–"
	case ax >= 1000:
		s := strconv.FormatInt(int64(math.Round(x)), 10)
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case ax >= 100 || x == math.Trunc(x):
		return strconv.FormatFloat(x, 'f', 0, 64)
	case ax >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}

// machine describes where the figures were measured.
type machine struct {
	date  string
	cpus  int
	model string
	goos  string
	goVer string
	redis string
	took  time.Duration
	// loadStart and loadEnd are the 1-minute load averages when the run
	// began and ended: other work on the machine shows there.
	loadStart, loadEnd string
}

// loadAverage returns the 1-minute load average, or "?" where there is no
// /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func (m machine) String() string {
	model := ""
	if m.model != "" {
		model = " (" + m.model + ")"
	}
	return fmt.Sprintf("%s, %d CPUs%s, %s, redis-server %s on loopback", m.goos, m.cpus, model, m.goVer, m.redis)
}

func machineInfo(ctx context.Context, rdb *redis.Client) (machine, error) {
	m := machine{
		date:      time.Now().UTC().Format("2006-01-02"),
		cpus:      runtime.NumCPU(),
		goos:      runtime.GOOS + "/" + runtime.GOARCH,
		goVer:     runtime.Version(),
		loadStart: loadAverage(),
	}
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return m, fmt.Errorf("INFO server: %w", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			m.redis = v
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
	}
	return m, nil
}

// markdown returns the generated part of the docs section.
func (r *report) markdown(cfg config, m machine, svgName string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s; the run took %.0f s, with a 1-minute load average of %s at its start and %s at its end (the machine's other work).\n\n",
		m.date, m, m.took.Seconds(), m.loadStart, m.loadEnd)
	b.WriteString(parameters(cfg))
	b.WriteString("\n| workload | figure |")
	for _, k := range r.kinds {
		fmt.Fprintf(&b, " %s |", k.name)
	}
	b.WriteString("\n|---|---|")
	for range r.kinds {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, w := range r.rows {
		fmt.Fprintf(&b, "| %s | %s |", w.label, w.metric)
		for _, k := range r.kinds {
			c, ok := w.cells[k.name]
			if !ok {
				c.text = "not run"
			}
			fmt.Fprintf(&b, " %s |", c.text)
		}
		b.WriteString("\n")
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.notes {
			b.WriteString(n + "\n")
		}
	}
	if svgName != "" {
		fmt.Fprintf(&b, "\n![The table's charted rows, one panel per figure](%s)\n", svgName)
	}
	return b.String()
}

// parameters lists the run's parameters, as the flags set them, for the
// workloads that ran.
func parameters(c config) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, "- "+format+"\n", args...) }
	ran := func(w string) bool { return slices.Contains(c.workloads, w) }
	p("value: a struct of an ID, a version and a %d-byte random payload (about 250 bytes as JSON); Redis TTL %s and local TTL %s in every library", payloadBytes, fmtDur(redisTTL), fmtDur(localTTL))
	p("local caches: tiered L1 64 MiB (its default); go-redis/cache TinyLFU of %s entries; rueidis 128 MiB per connection (its default); go-redis none", num(goCacheLocalSize))
	if ran("l1hit") {
		p("warm L1 hit: %s warm keys cycled, testing.Benchmark with benchtime %s, %d interleaved rounds, median", num(float64(c.hitKeys)), c.benchtime, c.rounds)
	}
	if ran("zipf") {
		p("Zipf: %s keys, s=%.2f, %d goroutines on one node, %s reads each (the same keys in the same order for every library), loader %s; local cache empty at the start; Redis holding every key (warm) or none (cold)", num(float64(c.zipfKeys)), c.zipfS, c.zipfGoroutines, num(float64(c.zipfReads)), fmtDur(c.zipfLoad))
	}
	if ran("stampede") {
		p("stampede: %d nodes × %d goroutines released together on one cold key, loader %s, %d keys per library (after %d not counted)", c.nodes, c.callers, fmtDur(c.loader), c.stampedeKeys, c.warmupKeys)
	}
	if ran("invalidate") {
		p("invalidation: 2 nodes, %d trials per library (fewer if the first 3 all reach the cap), the reader pausing %s between reads (a nanosleep; about 110 µs here), cap %s per trial", c.trials, fmtDur(c.poll), fmtDur(c.invCap))
	}
	if ran("multiget") {
		p("multiget: %d keys per call, %d calls per library and case, libraries interleaved call by call", c.mgetKeys, c.mgetIters)
	}
	if ran("faults") {
		p("faults: %d nodes (1 writer at %d writes/s; %d readers on each other node, sleeping %s between reads), %d keys, %s per library, CLIENT PAUSE %s (all commands) at a third of the run; a read is stale if its value is older than a write acknowledged more than %s before the read began", c.nodes, c.faultWrites, c.faultReaders, fmtDur(c.pace), c.faultKeys, fmtDur(c.faultDur), fmtDur(c.pause), fmtDur(c.staleBound))
	}
	return b.String()
}

// write prints the table and writes the docs and the chart if asked.
func (r *report) write(cfg config, m machine) error {
	m.loadEnd = loadAverage()
	svgName := ""
	if cfg.svg != "" {
		svgName = filepath.Base(cfg.svg)
	}
	md := r.markdown(cfg, m, svgName)
	fmt.Print(md)
	if cfg.svg != "" {
		if err := os.WriteFile(cfg.svg, r.svg(m), 0o644); err != nil {
			return err
		}
		logf("wrote %s", cfg.svg)
	}
	if cfg.docs != "" {
		old, err := os.ReadFile(cfg.docs)
		if err != nil {
			return err
		}
		doc, err := splice(old, md)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.docs, err)
		}
		if err := os.WriteFile(cfg.docs, doc, 0o644); err != nil {
			return err
		}
		logf("wrote the table into %s", cfg.docs)
	}
	return nil
}

// splice replaces what lies between the markers in doc with md.
func splice(doc []byte, md string) ([]byte, error) {
	i := bytes.Index(doc, []byte(markerStart))
	j := bytes.Index(doc, []byte(markerEnd))
	if i < 0 || j < i {
		return nil, fmt.Errorf("no %s … %s markers", markerStart, markerEnd)
	}
	var out bytes.Buffer
	out.Write(doc[:i+len(markerStart)])
	out.WriteString("\n" + md)
	out.Write(doc[j:])
	return out.Bytes(), nil
}
