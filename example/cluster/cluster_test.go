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

	"github.com/tieredcache/tiered/internal/redistest"
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
	for _, want := range []string{"cold burst:", "final check:", "final check (HTTP):"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestClusterChaos runs the cluster with -chaos on miniredis and on a
// redis-server of its own (skipped without redis-server on PATH, unless
// REQUIRE_REDIS=1), and checks that every fault ran and showed, and that
// the run stayed consistent throughout (runCluster).
func TestClusterChaos(t *testing.T) {
	for _, backend := range []string{"miniredis", "redis-server"} {
		t.Run(backend, func(t *testing.T) {
			cfg := testConfig()
			cfg.Duration = 12 * time.Second
			cfg.Chaos = true
			killed := regexp.MustCompile(`chaos 5/5: miniredis was down for \S+; restarted with its data on the same port`)
			if backend == "redis-server" {
				redistest.Require(t)
				cfg.Redis = redisAuto
				killed = regexp.MustCompile(`chaos 5/5: redis-server pid \d+ was SIGKILLed and down for \S+; restarted empty on \S+ as pid \d+`)
			}
			out := runCluster(t, cfg)
			if backend == "redis-server" {
				ms := serverPIDs.FindAllStringSubmatch(out, -1)
				if len(ms) != 2 {
					t.Errorf("found %d redis-server pids in the output, want 2 (started, restarted)", len(ms))
				}
				for _, m := range ms {
					if pid, _ := strconv.Atoi(m[1]); alive(pid) {
						t.Errorf("redis-server pid %d still running after run returned", pid)
					}
				}
			}
			for _, re := range []*regexp.Regexp{
				regexp.MustCompile(`chaos 1/5: reset [1-9]\d* connections`),
				regexp.MustCompile(`chaos 2/5: pause over: the server held every client's commands`),
				regexp.MustCompile(`chaos 3/5: pause over: the server held every client's write commands`),
				regexp.MustCompile(`chaos 4/5: node1's bus noticed after \S+ and replaced the connection`),
				killed,
			} {
				if !re.MatchString(out) {
					t.Errorf("output lacks %q", re)
				}
			}
			// The kill takes every bus down; the pauses and the silence
			// leave buses subscribed without a proof of freshness.
			if !regexp.MustCompile(`(?m) DOWN$`).MatchString(out) {
				t.Error("no row shows a node with its bus down during the kill")
			}
			if !regexp.MustCompile(`(?m)^ +\d+s  node1 .* late$`).MatchString(out) {
				t.Error("no row shows node1 serving no L1 for want of a proof")
			}
			// Every node dropped its L1 when its subscription came back
			// (resets), and skipped L1 while its bus could not prove it
			// fresh (unproven): the load-phase totals.
			totals := 0
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) != 13 || f[0] != "total" {
					continue
				}
				totals++
				if resets, err := strconv.Atoi(f[8]); err != nil || resets < 1 {
					t.Errorf("%s: no L1 reset after the faults: %q", f[1], line)
				}
				if unproven, err := strconv.Atoi(f[9]); err != nil || unproven < 1 {
					t.Errorf("%s: no read skipped L1 for want of a proof: %q", f[1], line)
				}
			}
			if totals != cfg.Nodes {
				t.Errorf("found %d total rows, want %d", totals, cfg.Nodes)
			}
		})
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

var summaryLine = regexp.MustCompile(`^summary nodes=(?P<nodes>\d+) seconds=(?P<seconds>\d+) ` +
	`reads=(?P<reads>\d+) writes=(?P<writes>\d+) ` +
	`l1_hit_ratio=(?P<l1_hit_ratio>\d+\.\d{3}) l2_hit_ratio=(?P<l2_hit_ratio>\d+\.\d{3}) ` +
	`db_loads=(?P<db_loads>\d+) cold_burst_db_loads=(?P<cold_burst_db_loads>\d+) ` +
	`http_reads=(?P<http_reads>\d+) http_hit_ratio=(?P<http_hit_ratio>\d+\.\d{3}) private_leaks=(?P<private_leaks>\d+) ` +
	`stale_reads=(?P<stale_reads>\d+) stale_after_error=(?P<stale_after_error>\d+) ` +
	`max_staleness_ms=(?P<max_staleness_ms>\d+\.\d) queued_invalidations=(?P<queued_invalidations>\d+) ` +
	`errors=(?P<errors>\d+)$`)

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
	want := map[string]string{"nodes": strconv.Itoa(cfg.Nodes), "seconds": strconv.Itoa(int(cfg.Duration.Seconds())),
		"cold_burst_db_loads": "1", "private_leaks": "0", "stale_reads": "0", "stale_after_error": "0", "errors": "0"}
	for name, w := range want {
		if got := m[summaryLine.SubexpIndex(name)]; got != w {
			t.Errorf("%s=%s, want %s", name, got, w)
		}
	}
	if !s.OK() {
		t.Errorf("summary not OK: %s", s)
	}
	if s.Reads == 0 || s.Writes == 0 || s.DBLoads == 0 || s.L1HitRatio <= 0 {
		t.Errorf("the run did too little: %s", s)
	}
	// The HTTP readers went through the middleware, and some answers came
	// from the cache: private_leaks=0 is not for want of cached bodies.
	if s.HTTPReads == 0 || s.HTTPHitRatio <= 0 {
		t.Errorf("the HTTP endpoints served nothing from the cache: %s", s)
	}
	// The staleness probes read writes back through other nodes, through
	// the product API and through the cached HTTP endpoints.
	if m := probeLine.FindStringSubmatch(text); m == nil || m[1] == "0" {
		t.Errorf("no (write, other node) pair was probed: %q", m)
	}
	if m := httpProbeLine.FindStringSubmatch(text); m == nil || m[1] == "0" {
		t.Errorf("no (write, other node) pair was probed through HTTP: %q", m)
	}
	// The driver scraped node1's /metrics and found what /stats says.
	checkMetricsLine(t, text)

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

// serverPIDs finds the pids of the redis-servers a -redis auto run started.
var serverPIDs = regexp.MustCompile(`redis-server (?:\S+ \(started for the run, |pid \d+ was SIGKILLed.* as )pid (\d+)`)

var (
	probeLine     = regexp.MustCompile(`(?m)^probe: (\d+) \(write, other node\) pairs converged`)
	httpProbeLine = regexp.MustCompile(`(?m)^http probe: (\d+) \(write, other node\) pairs converged`)
)

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
