package tiered

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/internal/stats"
)

// Nodes as separate OS processes. The test binary re-executes itself (as
// groupcache's http_test.go does) with childNodeEnv set to the Redis address;
// TestMain then runs runChildNode instead of the tests. The parent drives a
// child with one-line commands on its stdin and reads one-line replies:
//
//	get K     → "ok <version> <1 if it was an L1 hit, else 0>" | "err <msg>"
//	delete K  → "ok" | "err <msg>"
//	hold K    → "holding" once a GetOrLoad of K is inside a loader that never returns
const (
	childNodeEnv     = "TIERED_TEST_CHILD_NODE_REDIS"
	childLeaseTTLEnv = "TIERED_TEST_CHILD_LEASE_TTL"
)

func runChildNode(addr string) int {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	opts := Options{Namespace: "proc", TTL: time.Minute}
	if d, err := time.ParseDuration(os.Getenv(childLeaseTTLEnv)); err == nil {
		opts.LeaseTTL = d
	}
	c, err := New[Product](rdb, &opts)
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.WaitReady(ctx); err != nil {
		fmt.Println("err", err)
		return 1
	}
	src := &srcLoader{rdb: rdb}
	var outMu sync.Mutex
	reply := func(format string, args ...any) {
		outMu.Lock()
		fmt.Printf(format+"\n", args...)
		outMu.Unlock()
	}
	reply("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			reply("err bad command %q", sc.Text())
			continue
		}
		switch f[0] {
		case "get":
			before := c.Stats().L1Hits
			p, err := c.GetOrLoad(ctx, f[1], src)
			if err != nil {
				reply("err %v", err)
				continue
			}
			hit := 0
			if c.Stats().L1Hits > before {
				hit = 1
			}
			reply("ok %d %d", p.Version, hit)
		case "delete":
			if err := c.Delete(ctx, f[1]); err != nil {
				reply("err %v", err)
				continue
			}
			reply("ok")
		case "hold":
			go c.GetOrLoad(ctx, f[1], LoaderFunc[Product](func(context.Context, string) (Product, error) {
				reply("holding")
				select {} // until the parent kills this process
			}))
		default:
			reply("err unknown command %q", f[0])
		}
	}
	return 0
}

// childNode is a node process seen from the parent test.
type childNode struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startChildNode(t *testing.T, addr string, env ...string) *childNode {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, childNodeEnv+"="+addr)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = redistest.DieWithParent()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &childNode{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(n.kill)
	if line := n.read(t); line != "ready" {
		t.Fatalf("child node: %q", line)
	}
	return n
}

func (n *childNode) read(t *testing.T) string {
	t.Helper()
	if !n.out.Scan() {
		t.Fatalf("child node exited: %v", n.out.Err())
	}
	return n.out.Text()
}

func (n *childNode) do(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(n.in, cmd); err != nil {
		t.Fatal(err)
	}
	return n.read(t)
}

// get returns the version a child reads for key and whether it was an L1 hit.
func (n *childNode) get(t *testing.T, key string) (int, bool) {
	t.Helper()
	r := n.do(t, "get "+key)
	var v, hit int
	if _, err := fmt.Sscanf(r, "ok %d %d", &v, &hit); err != nil {
		t.Fatalf("get %s: %q", key, r)
	}
	return v, hit == 1
}

func (n *childNode) kill() {
	if n.cmd.ProcessState == nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
	}
}

// TestFleetInvalidationProcesses is TestFleetInvalidation with every node a
// separate OS process: node A updates the source and deletes; B and C, which
// held the key in L1, return the new version within a bound.
func TestFleetInvalidationProcesses(t *testing.T) {
	s := redistest.Start(t)
	admin := redistest.Client(t, s.Addr)
	nodes := []*childNode{startChildNode(t, s.Addr), startChildNode(t, s.Addr), startChildNode(t, s.Addr)}
	a := nodes[0]
	var lat []time.Duration
	for trial := 1; trial <= 50; trial++ {
		key := "p" + strconv.Itoa(trial%5)
		setSource(t, admin, key, trial)
		if r := a.do(t, "delete "+key); r != "ok" {
			t.Fatal(r)
		}
		for _, n := range nodes {
			deadline := time.Now().Add(2 * time.Second)
			for {
				v, hit := n.get(t, key)
				if v == trial && hit {
					break // the current version, from L1
				}
				if time.Now().After(deadline) {
					t.Fatalf("trial %d: a node never held version %d in L1 (last %d)", trial, trial, v)
				}
			}
		}
		setSource(t, admin, key, -trial)
		if r := a.do(t, "delete "+key); r != "ok" {
			t.Fatal(r)
		}
		acked := time.Now()
		for _, n := range nodes[1:] {
			for {
				v, _ := n.get(t, key)
				if v == -trial {
					lat = append(lat, time.Since(acked))
					break
				}
				if time.Since(acked) > 2*time.Second {
					t.Fatalf("trial %d: a node still returns version %d 2s after the Delete", trial, v)
				}
			}
		}
	}
	t.Logf("invalidation visible in other processes: p50 %v p99 %v max %v over %d reads",
		stats.Percentile(lat, .5), stats.Percentile(lat, .99), stats.Percentile(lat, 1), len(lat))
}

// TestFleetLeaseHolderKilled is TestFleetLeaseHolderStuck with the holder a
// process that is killed while it holds the lease: another node loads after
// the lease TTL.
func TestFleetLeaseHolderKilled(t *testing.T) {
	s := redistest.Start(t)
	const leaseTTL = 500 * time.Millisecond
	holder := startChildNode(t, s.Addr, childLeaseTTLEnv+"="+leaseTTL.String())
	nodes := newFleet(t, s.Addr, 1, Options{Namespace: "proc", LeaseTTL: leaseTTL})
	b := nodes[0]
	setSource(t, b.rdb, "k", 3)
	if _, err := fmt.Fprintln(holder.in, "hold k"); err != nil {
		t.Fatal(err)
	}
	if r := holder.read(t); r != "holding" {
		t.Fatal(r)
	}
	held := time.Now() // the lease was taken before this
	ctx := context.Background()
	if n, _ := b.rdb.Exists(ctx, "proc:{k}:lease").Result(); n != 1 {
		t.Fatal("the holder process does not hold the lease")
	}
	holder.kill()
	t0 := time.Now()
	p, err := b.c.GetOrLoad(ctx, "k", b.src)
	if err != nil || p.Version != 3 {
		t.Fatalf("B got %+v, %v", p, err)
	}
	if b.src.calls.Load() != 1 {
		t.Fatalf("B's loader ran %d times", b.src.calls.Load())
	}
	if d := time.Since(held); d < leaseTTL/2 {
		t.Fatalf("B loaded %v after the lease was taken: it did not wait for the lease (TTL %v)", d, leaseTTL)
	}
	t.Logf("B loaded %v after the holder was killed (lease TTL %v)", time.Since(t0), leaseTTL)
}
