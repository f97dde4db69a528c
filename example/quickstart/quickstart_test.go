package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// serviceEnv makes the test binary the service: TestDemo runs it again
// with the service's flags, as the demo runs its own binary.
const serviceEnv = "QUICKSTART_TEST_SERVICE"

func TestMain(m *testing.M) {
	if os.Getenv(serviceEnv) == "1" {
		main() // returns after SIGINT, once the instance has shut down
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestDemo runs the walk-through of `make quickstart` with the instances as
// processes of this test binary, checks what each step answered, a few
// requests the walk-through does not make, and that the run leaves no
// process, goroutine or file behind.
func TestDemo(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, logs syncBuffer
	res, err := runDemo(ctx, demoConfig{
		Out:  &out,
		Logs: &logs,
		Command: func(args ...string) *exec.Cmd {
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = append(os.Environ(), serviceEnv+"=1")
			return cmd
		},
		then: furtherChecks,
	})
	t.Logf("output:\n%s", out.String())
	if s := logs.String(); s != "" {
		t.Logf("instances' logs:\n%s", s)
	}
	if err != nil {
		t.Fatal(err)
	}

	// The walk-through: A loads, B reads Redis then its memory, A writes,
	// B answers the new price (after at most a few tries with the old one,
	// each within the bound, which runDemo checks).
	if len(res.Steps) < 5 {
		t.Fatalf("%d steps, want at least 5: %+v", len(res.Steps), res.Steps)
	}
	want := []struct {
		instance, method string
		price            int64
		sources          []string
	}{
		{"A", "GET", 450, []string{"sqlite"}},
		{"B", "GET", 450, []string{"redis"}},
		// ristretto applies a fill asynchronously: on a loaded machine
		// B's second read may still find its copy in Redis only.
		{"B", "GET", 450, []string{"memory", "redis"}},
		{"A", "PUT", 520, []string{""}},
	}
	for i, w := range want {
		s := res.Steps[i]
		if s.Instance != w.instance || s.Method != w.method || s.ServedBy != w.instance ||
			s.Product != (Product{ID: 1, Name: "espresso cup", Price: w.price}) || !slices.Contains(w.sources, s.Source) {
			t.Errorf("step %d: %+v, want %s on %s, served by it, price %d, from %v", i+1, s, w.method, w.instance, w.price, w.sources)
		}
	}
	last := res.Steps[len(res.Steps)-1]
	if last.Instance != "B" || last.ServedBy != "B" || last.Product.Price != 520 || last.Source != "sqlite" {
		t.Errorf("last step: %+v, want B's answer of the new price 520 from SQLite", last)
	}
	for i, s := range res.Steps[4 : len(res.Steps)-1] {
		if s.Product.Price != 450 {
			t.Errorf("step %d: %+v, want a retry that saw the old price", i+5, s)
		}
	}
	if retries := len(res.Steps) - 5; retries > 0 {
		t.Logf("B served the old price %d time(s) before the invalidation arrived", retries)
	}
	if !strings.Contains(out.String(), "the new price at once, from SQLite") {
		t.Errorf("output lacks the final step")
	}

	// Nothing left behind.
	if len(res.Exited) != 2 {
		t.Fatalf("%d instances stopped, want 2", len(res.Exited))
	}
	for i, ps := range res.Exited {
		if ps == nil || !ps.Success() { // a nil state would mean a process not waited for
			t.Errorf("instance %d: exit state %v, want 0 after a graceful shutdown", i, ps)
		}
	}
	if _, err := os.Stat(res.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists (%v)", res.Dir, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the run:\n%s", runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// furtherChecks makes the requests the walk-through does not: errors, a
// missing product, and an id written another way.
func furtherChecks(ctx context.Context, a, b string) error {
	for _, c := range []struct {
		method, url, body string
		status            int
		has               string
	}{
		{"GET", a + "/products/99", "", 404, "no such product"},
		{"GET", a + "/products/99", "", 404, "no such product"}, // a cached "not found"
		{"GET", a + "/products/abc", "", 400, "bad product id"},
		{"GET", a + "/products/0", "", 400, "bad product id"},
		{"PUT", b + "/products/99", `{"price":100}`, 404, "no such product"},
		{"PUT", b + "/products/2", `{"price":0}`, 400, "price"},
		{"PUT", b + "/products/2", `not json`, 400, "price"},
		{"GET", b + "/products/01", "", 200, `"price":520`}, // the key of /products/1
		{"GET", b + "/products/2", "", 200, `"served_by":"B"`},
		{"GET", a + "/stats", "", 200, `"Loads":`},
	} {
		req, err := http.NewRequestWithContext(ctx, c.method, c.url, strings.NewReader(c.body))
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != c.status || !strings.Contains(string(body), c.has) {
			return fmt.Errorf("%s %s: %d %q, want %d and %q", c.method, c.url, resp.StatusCode, body, c.status, c.has)
		}
		if c.status == 200 && resp.Header.Get("X-Served-By") == "" {
			return fmt.Errorf("%s %s: no X-Served-By header", c.method, c.url)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	return nil
}

// syncBuffer is a bytes.Buffer safe for the instances' log copiers and
// the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
