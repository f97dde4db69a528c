package main

// This file, with demo_procs.go and demo_client.go, is the launcher `make
// quickstart` runs (`go run ./quickstart demo`), not part of the service:
// you do not need it to copy main.go.
//
// It starts an embedded Redis (miniredis, in this process, on a free
// loopback port), then two instances of the service, A and B, sharing it
// and one SQLite file in a temporary directory, and walks through an
// invalidation: A and B both cache a product, A changes its price, B
// answers the new price at once.
//
// The instances are separate processes: this binary run again with the
// service's flags (os.Executable). Each has its own memory, its own Redis
// connections and its own subscription, exactly as two pods would, so the
// only way B can learn of A's write is the invalidation message that
// A's cache.Delete publishes through Redis. (Two caches in one process, each
// with its own Redis client, would behave the same, but would prove less.)

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// demoMain is main for `quickstart demo [-serve]`.
func demoMain(args []string) int {
	fs := flag.NewFlagSet("quickstart demo", flag.ContinueOnError)
	serve := fs.Bool("serve", false, "after the walk-through, keep Redis and both instances running until Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = runDemo(ctx, demoConfig{
		Out:     os.Stdout,
		Logs:    os.Stderr,
		Serve:   *serve,
		Command: func(args ...string) *exec.Cmd { return exec.Command(exe, args...) },
	})
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "quickstart: interrupted")
		return 130
	case err != nil:
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		return 1
	}
	return 0
}

// demoConfig is what runDemo needs from its caller (demoMain, or the test).
type demoConfig struct {
	Out     io.Writer                      // the walk-through
	Logs    io.Writer                      // the instances' log lines after startup
	Serve   bool                           // keep serving until ctx is done
	Command func(args ...string) *exec.Cmd // runs the service with these flags
	Bound   time.Duration                  // how late B may serve the old price (default tiered.DefaultMaxStaleness)

	// then, if set, runs after the walk-through with A's and B's URLs
	// (the test's further checks); its error is runDemo's.
	then func(ctx context.Context, a, b string) error
}

// step is one request of the walk-through, as the demo saw it.
type step struct {
	Instance string  // "A" or "B": where the demo sent the request
	Method   string  // GET or PUT
	Product  Product // what it answered
	ServedBy string  // its served_by field
	Source   string  // "sqlite", "redis" or "memory", from its /stats before and after

	Sent, Answered time.Time // when the request went out and its answer came back
}

// demoResult is what a run did, for the test.
type demoResult struct {
	Steps  []step
	Dir    string             // the temporary directory, removed when runDemo returns
	Exited []*os.ProcessState // the instances' exit states: all non-nil once runDemo returns
}

// runDemo runs the walk-through and, with cfg.Serve, serves until ctx is
// done. It stops the instances and Redis and removes its directory before
// it returns, whatever happened.
func runDemo(ctx context.Context, cfg demoConfig) (res demoResult, err error) {
	if cfg.Bound == 0 {
		cfg.Bound = tiered.DefaultMaxStaleness
	}
	dir, err := os.MkdirTemp("", "tiered-quickstart-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	res.Dir = dir
	dbPath := filepath.Join(dir, "products.db")

	mr, stopRedis, err := startRedis()
	if err != nil {
		return res, err
	}
	defer stopRedis()

	var instances []*instance
	defer func() { // stop the instances before Redis goes
		for _, in := range instances {
			res.Exited = append(res.Exited, in.stop())
		}
	}()
	for _, name := range []string{"A", "B"} {
		in, err := startInstance(ctx, cfg, name, mr.Addr(), dbPath)
		if err != nil {
			return res, err
		}
		instances = append(instances, in)
	}
	a, b := instances[0], instances[1]

	out := cfg.Out
	fmt.Fprintf(out, "tiered quickstart: two instances of example/quickstart share one SQLite file and one Redis\n\n")
	fmt.Fprintf(out, "  Redis   miniredis on %s (embedded in this process: nothing to install)\n", mr.Addr())
	fmt.Fprintf(out, "  SQLite  %s\n", dbPath)
	for _, in := range instances {
		fmt.Fprintf(out, "  %s       %s (pid %d)\n", in.name, in.url, in.cmd.Process.Pid)
	}
	fmt.Fprintln(out)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &client{http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	// say prints one step: the request, the price answered, and who
	// answered (served_by) from where.
	say := func(n int, request string, s step, what string) {
		fmt.Fprintf(out, "%d. %-33s → %s  %s: %s\n", n, request, dollars(s.Product.Price), s.ServedBy, what)
	}
	indent := strings.Repeat(" ", len("1. ")+33+len(" - $0.00  "))

	// 1 to 3: A loads the product from SQLite into Redis and its memory;
	// B finds it in Redis and keeps a copy in its own memory.
	s, err := c.step(ctx, a, "GET", "/products/1", "")
	if err != nil {
		return res, err
	}
	res.Steps = append(res.Steps, s)
	say(1, "GET A /products/1", s, sourceText[s.Source])
	for n := 2; n <= 3; n++ {
		s, err = c.step(ctx, b, "GET", "/products/1", "")
		if err != nil {
			return res, err
		}
		res.Steps = append(res.Steps, s)
		say(n, "GET B /products/1", s, sourceText[s.Source])
	}
	old := s.Product.Price

	// 4: A changes the price: UPDATE in SQLite, then cache.Delete.
	newPrice := old + 70
	body := fmt.Sprintf(`{"price":%d}`, newPrice)
	s, err = c.step(ctx, a, "PUT", "/products/1", body)
	if err != nil {
		return res, err
	}
	acked := s.Answered
	res.Steps = append(res.Steps, s)
	say(4, "PUT A /products/1 "+body, s, `UPDATE in SQLite, then cache.Delete("1"): the key`)
	fmt.Fprintf(out, "%sleaves Redis, and B's memory through pub/sub\n", indent)

	// 5: B answers the new price. A read on B that starts after B heard
	// of the Delete (one pub/sub hop: about a millisecond) cannot return the
	// old price, and none that starts Bound after the Delete returned can.
	for n := 5; ; n++ {
		s, err = c.step(ctx, b, "GET", "/products/1", "")
		if err != nil {
			return res, err
		}
		res.Steps = append(res.Steps, s)
		late := s.Sent.Sub(acked)
		if s.Product.Price == newPrice && n == 5 {
			say(n, "GET B /products/1", s, "the new price at once, from "+sourceName[s.Source])
			break
		} else if s.Product.Price == newPrice {
			say(n, "GET B /products/1", s, fmt.Sprintf("the new price, %v after the PUT, from %s", late.Round(time.Microsecond), sourceName[s.Source]))
			break
		}
		say(n, "GET B /products/1", s, fmt.Sprintf("the old price %v after the PUT (invalidation in flight)", late.Round(time.Microsecond)))
		if late > cfg.Bound {
			return res, fmt.Errorf("instance B served the old price %v after the PUT, more than %v", late, cfg.Bound)
		}
		time.Sleep(2 * time.Millisecond)
	}

	fmt.Fprintf(out, "\nGET /stats (tiered.Stats):\n")
	for _, in := range instances {
		st, err := c.stats(ctx, in)
		if err != nil {
			return res, err
		}
		fmt.Fprintf(out, "  %s  L1Hits=%d L2Hits=%d Misses=%d Loads=%d Invalidations=%d\n",
			in.name, st.L1Hits, st.L2Hits, st.Misses, st.Loads, st.Invalidations)
	}
	fmt.Fprintf(out, "  (B's Invalidations: A's Delete, received over Redis pub/sub)\n\n")
	if cfg.then != nil {
		if err := cfg.then(ctx, a.url, b.url); err != nil {
			return res, err
		}
	}

	if !cfg.Serve {
		fmt.Fprintf(out, "Done. `make quickstart ARGS=-serve` keeps both instances running for curl.\n")
		return res, nil
	}
	fmt.Fprintf(out, "Serving until Ctrl-C. Try:\n")
	fmt.Fprintf(out, "  curl %s/products/2\n", a.url)
	fmt.Fprintf(out, "  curl %s/products/2\n", b.url)
	fmt.Fprintf(out, "  curl -X PUT -d '{\"price\":3100}' %s/products/2\n", a.url)
	fmt.Fprintf(out, "  curl %s/products/2\n", b.url)
	fmt.Fprintf(out, "  curl %s/stats\n", b.url)
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nStopping.")
		return res, nil
	case <-a.exited:
		return res, fmt.Errorf("instance A exited: %v", a.err)
	case <-b.exited:
		return res, fmt.Errorf("instance B exited: %v", b.err)
	}
}

var sourceName = map[string]string{"sqlite": "SQLite", "redis": "Redis", "memory": "memory (L1)"}

var sourceText = map[string]string{
	"sqlite": "loaded from SQLite (in neither memory nor Redis)",
	"redis":  "from Redis, where A put it",
	"memory": "from its own memory (L1)",
}

func dollars(cents int64) string { return fmt.Sprintf("$%d.%02d", cents/100, cents%100) }
