package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain makes the test binary a node when the parent re-executes it,
// and checks that the tests leave no goroutine of theirs running.
func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv(envNode); ok {
		os.Exit(nodeMain())
	}
	if _, ok := os.LookupEnv(envTestParent); ok {
		os.Exit(testParentMain())
	}
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines still running after the tests:\n\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func TestCluster(t *testing.T) {
	cfg := testConfig()
	cfg.Duration = 3 * time.Second
	out := runCluster(t, cfg)
	if !strings.Contains(out, "cold burst:") || !strings.Contains(out, "final check:") {
		t.Errorf("output lacks the cold burst or the final check:\n%s", out)
	}
}

func TestClusterChaos(t *testing.T) {
	cfg := testConfig()
	cfg.Duration = 6 * time.Second
	cfg.Chaos = true
	out := runCluster(t, cfg)
	if !strings.Contains(out, "--- chaos: dropping every connection") ||
		!strings.Contains(out, "restarted on the same port") {
		t.Errorf("output does not show the chaos:\n%s", out)
	}
	if !regexp.MustCompile(`(?m) DOWN$`).MatchString(out) {
		t.Errorf("no row shows a node with its bus down during the outage:\n%s", out)
	}
	// Every node dropped its L1 when its subscription came back: the
	// resets column of its load-phase total.
	totals := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 11 || f[0] != "total" {
			continue
		}
		totals++
		if resets, err := strconv.Atoi(f[8]); err != nil || resets < 1 {
			t.Errorf("%s: no L1 reset after the outage: %q", f[1], line)
		}
	}
	if totals != cfg.Nodes {
		t.Errorf("found %d total rows, want %d", totals, cfg.Nodes)
	}
}

// envTestParent makes the test binary run a cluster as a plain parent
// process, for TestNodesDieWithParent to kill.
const envTestParent = "TIERED_EXAMPLE_TEST_PARENT"

func testParentMain() int {
	cfg := defaultConfig()
	cfg.Nodes = 2
	cfg.Duration = time.Minute
	cfg.Quiet = true
	if _, err := run(context.Background(), cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func testConfig() config {
	cfg := defaultConfig()
	cfg.Nodes = 2
	cfg.Readers = 4
	return cfg
}

var summaryLine = regexp.MustCompile(`^summary nodes=(\d+) seconds=(\d+) reads=(\d+) writes=(\d+) ` +
	`l1_hit_ratio=(\d+\.\d{3}) l2_hit_ratio=(\d+\.\d{3}) db_loads=(\d+) cold_burst_db_loads=(\d+) ` +
	`stale_reads=(\d+) max_staleness_ms=(\d+\.\d) errors=(\d+)$`)

// runCluster runs the cluster with cfg, checks its summary line and that
// it cleaned up after itself, and returns its output.
func runCluster(t *testing.T, cfg config) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+time.Minute)
	defer cancel()
	var out bytes.Buffer
	s, err := run(ctx, cfg, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, text)
	}
	defer func() {
		if t.Failed() {
			t.Logf("output:\n%s", text)
		}
	}()

	lines := strings.Split(strings.TrimSpace(text), "\n")
	last := lines[len(lines)-1]
	t.Log(last)
	m := summaryLine.FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last line is not a summary: %q", last)
	}
	if last != s.String() {
		t.Errorf("last line %q, want the returned summary %q", last, s)
	}
	want := map[int]string{1: strconv.Itoa(cfg.Nodes), 2: strconv.Itoa(int(cfg.Duration.Seconds())),
		8: "1", 9: "0", 11: "0"}
	names := map[int]string{1: "nodes", 2: "seconds", 8: "cold_burst_db_loads", 9: "stale_reads", 11: "errors"}
	for i, w := range want {
		if m[i] != w {
			t.Errorf("%s=%s, want %s", names[i], m[i], w)
		}
	}
	if !s.OK() {
		t.Errorf("summary not OK: %s", s)
	}
	if s.Reads == 0 || s.Writes == 0 || s.DBLoads == 0 || s.L1HitRatio <= 0 {
		t.Errorf("the run did too little: %s", s)
	}
	// The staleness probe read writes back through other nodes.
	if m := probeLine.FindStringSubmatch(text); m == nil || m[1] == "0" {
		t.Errorf("no (write, other node) pair was probed: %q", m)
	}

	// No node outlived the run, and the temporary directory is gone.
	for _, pid := range nodePIDs(text) {
		if alive(pid) {
			t.Errorf("node pid %d still running after run returned", pid)
		}
	}
	if dir := tempDir(text); dir == "" {
		t.Error("output does not name the database file")
	} else if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s not removed (stat: %v)", dir, err)
	}
	return text
}

var probeLine = regexp.MustCompile(`(?m)^probe: (\d+) \(write, other node\) pairs converged`)

var (
	pidLine = regexp.MustCompile(`(?m)^  node\d+  pid (\d+)`)
	dbLine  = regexp.MustCompile(`(?m)^cluster: \d+ products in (\S+)/products\.db `)
)

func nodePIDs(out string) []int {
	var pids []int
	for _, m := range pidLine.FindAllStringSubmatch(out, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

func tempDir(out string) string {
	if m := dbLine.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

// leakedGoroutines waits up to d for the goroutines of this package and of
// the libraries it starts to end, and returns the stacks of those left.
func leakedGoroutines(d time.Duration) string {
	markers := []string{"example/cluster.", "miniredis", "go-redis", "net/http.(*persistConn)", "os/exec"}
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "leakedGoroutines") || strings.Contains(g, "cluster.TestMain") {
				continue
			}
			for _, m := range markers {
				if strings.Contains(g, m) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
