package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestClusterOnRedisCluster runs the example with -cluster: on a Redis
// Cluster of 3 masters and 3 replicas the run starts, through Cluster
// clients and sharded pub/sub. It checks the summary as TestCluster does
// (runCluster), and that every server of the cluster is gone when the run
// has returned. It is skipped without redis-server and redis-cli on PATH,
// unless REQUIRE_REDIS=1, which makes that a failure.
func TestClusterOnRedisCluster(t *testing.T) {
	requireClusterTools(t)
	cfg := testConfig()
	cfg.Duration = 4 * time.Second
	cfg.Cluster = true
	out := runCluster(t, cfg)

	m := clusterDesc.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("output does not describe a Redis Cluster of 3 masters and 3 replicas:\n%s", out)
	}
	servers := append(strings.Fields(m[1]), strings.Fields(m[2])...)
	if len(servers) != 6 {
		t.Fatalf("found %d cluster servers in %q, want 6", len(servers), m[0])
	}
	for _, addr := range servers {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("cluster server %s still accepts connections after run returned", addr)
		}
	}
}

// clusterDesc finds the masters and the replicas of a -cluster run.
var clusterDesc = regexp.MustCompile(`Redis Cluster of 3 masters \(([^)]*)\) and 3 replicas \(([^)]*)\), formed for the run`)

// requireClusterTools skips t when redis-server or redis-cli is not on
// PATH, or fails it when REQUIRE_REDIS=1 (as redistest.Require does for
// redis-server alone).
func requireClusterTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("REQUIRE_REDIS") == "1" {
		t.Fatalf("REQUIRE_REDIS=1 but %s not on PATH", strings.Join(missing, " and "))
	}
	t.Skipf("skipped: no %s on PATH (set REQUIRE_REDIS=1 to make this a failure)", strings.Join(missing, " and "))
}

// TestClusterFlags checks what -cluster may be combined with.
func TestClusterFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{[]string{"-cluster"}, ""},
		{[]string{"-cluster", "-nodes", "5", "-seconds", "3"}, ""},
		{[]string{"-cluster", "-chaos"}, "-chaos cannot be combined with -cluster"},
		{[]string{"-cluster", "-redis", "auto"}, "cannot be combined with -redis"},
		{[]string{"-cluster", "-redis", "127.0.0.1:6379"}, "cannot be combined with -redis"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cfg, err := parseFlags(tc.args, io.Discard)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.want == "" && !cfg.Cluster:
				t.Error("-cluster did not set Cluster")
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	if cfg, err := parseFlags([]string{"-cluster", "-chaos"}, io.Discard); !errors.Is(err, errClusterChaos) {
		t.Errorf("-cluster -chaos: %v, want errClusterChaos", err)
	} else if _, err := run(context.Background(), cfg, io.Discard); !errors.Is(err, errClusterChaos) {
		t.Errorf("run with Cluster and Chaos: %v, want errClusterChaos", err)
	}
}

// TestClusterWithoutTools checks that -cluster says what is missing when
// redis-server and redis-cli are not on PATH.
func TestClusterWithoutTools(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	rs, err := startCluster(context.Background(), t.TempDir())
	if err == nil {
		rs.Close()
		t.Fatal("startCluster succeeded without redis-server on PATH")
	}
	if want := "redis-server and redis-cli are not on PATH"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to say %q", err, want)
	}
}
