package tiered

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/l2"
)

// TestBusMisuse: a Bus refuses what would break the caches on it.
func TestBusMisuse(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		rdb := redistest.Client(t, b.Addr)
		bus, err := NewBus(rdb, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		products, err := New[Product](rdb, &Options{Namespace: "products", TTL: time.Minute, Bus: bus})
		if err != nil {
			t.Fatal(err)
		}
		defer products.Close()

		// A second cache of the namespace would read the first one's
		// values as corrupt and delete them.
		_, err = New[string](rdb, &Options{Namespace: "products", TTL: time.Minute, Bus: bus})
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), `"products" already has a cache`) {
			t.Fatalf("second cache of a namespace on one bus: %v", err)
		}
		// Another namespace is fine, and so is the first one again once
		// its cache is closed.
		names, err := New[string](rdb, &Options{Namespace: "names", TTL: time.Minute, Bus: bus})
		if err != nil {
			t.Fatal(err)
		}

		// A bus in use does not close: its caches would lose L1 for good.
		if err := bus.Close(); !errors.Is(err, ErrBusInUse) {
			t.Fatalf("Close of a bus in use: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		if err := names.WaitReady(ctx); err != nil {
			t.Fatalf("the bus stopped after a refused Close: %v", err)
		}
		names.Close()
		again, err := New[string](rdb, &Options{Namespace: "names", TTL: time.Minute, Bus: bus})
		if err != nil {
			t.Fatalf("namespace free again after Close: %v", err)
		}
		again.Close()

		// The bus a cache made for itself is the cache's to close.
		own, err := New[string](rdb, &Options{Namespace: "own", TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := own.Bus().Close(); !errors.Is(err, ErrBusInUse) {
			t.Fatalf("Close of a cache's own bus: %v", err)
		}
		if _, err := New[string](rdb, &Options{Namespace: "other", TTL: time.Minute, Bus: own.Bus()}); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("a cache's own bus given to another cache: %v", err)
		}
		own.Close()
		if err := own.Bus().WaitHealthy(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitHealthy after the cache closed its bus: %v", err)
		}
	})
}

// TestClosedCache: every method of a closed cache returns ErrClosed, even
// a Delete of no keys, and a WaitReady in progress on a shared bus ends.
func TestClosedCache(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		rdb := redistest.Client(t, b.Addr)
		// A bus that cannot become healthy: WaitReady waits until Close.
		bus, err := NewBus(redistest.Client(t, "127.0.0.1:1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		c, err := New[Product](rdb, &Options{Namespace: "closed", TTL: time.Minute, Bus: bus})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		waiting := make(chan error, 1)
		go func() {
			waiting <- c.WaitReady(ctx)
		}()
		time.Sleep(10 * time.Millisecond)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-waiting:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("WaitReady after Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("WaitReady on a shared bus did not end at Close")
		}
		loader := LoaderFunc[Product](func(context.Context, string) (Product, error) { return Product{}, nil })
		for name, call := range map[string]func() error{
			"Delete()":       func() error { return c.Delete(ctx) },
			"Delete(k)":      func() error { return c.Delete(ctx, "k") },
			"Get":            func() error { _, err := c.Get(ctx, "k"); return err },
			"GetOrLoad":      func() error { _, err := c.GetOrLoad(ctx, "k", loader); return err },
			"GetManyCached":  func() error { _, err := c.GetManyCached(ctx, []string{"k"}); return err },
			"Set":            func() error { return c.Set(ctx, "k", Product{}) },
			"Clear":          func() error { return c.Clear(ctx) },
			"InvalidateTags": func() error { return c.InvalidateTags(ctx, "t") },
			"WaitReady":      func() error { return c.WaitReady(ctx) },
		} {
			if err := call(); !errors.Is(err, ErrClosed) {
				t.Errorf("%s on a closed cache: %v", name, err)
			}
		}
	})
}

// TestErrorMessages: an error names the package once, whatever layer it
// came from, and errors.Is still finds every sentinel.
func TestErrorMessages(t *testing.T) {
	cause := errors.New("i/o timeout")
	l2err := fmt.Errorf("%w: set script: %w", l2.ErrUnavailable, cause) // as l2 words it
	rejected := fmt.Errorf("%w: %w: set script: %w", l2.ErrUnavailable, l2.ErrRejected, cause)
	for _, tc := range []struct {
		err  error
		want string
		is   []error
	}{
		{wrap(l2err, ErrUnavailable), "tiered: redis unavailable: set script: i/o timeout", []error{ErrUnavailable, cause}},
		{wrap(l2err, ErrQueued, ErrUnavailable), "tiered: invalidation queued: redis unavailable: set script: i/o timeout", []error{ErrQueued, ErrUnavailable, cause}},
		{wrap(rejected, ErrUnavailable), "tiered: redis unavailable: command rejected: set script: i/o timeout", []error{ErrUnavailable, l2.ErrRejected, cause}},
		{wrap(errBreakerOpen, ErrUnavailable), "tiered: redis unavailable: breaker open: redis failed repeatedly", []error{ErrUnavailable, errBreakerOpen}},
		{wrap(errors.New("pubsub: unknown Mode"), ErrInvalidOptions), "tiered: invalid options: unknown Mode", []error{ErrInvalidOptions}},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("message %q, want %q", got, tc.want)
		}
		for _, s := range tc.is {
			if !errors.Is(tc.err, s) {
				t.Errorf("%q does not wrap %v", tc.err, s)
			}
		}
	}
	// One from New, through l2's own validation.
	_, err := New[Product](redistest.Client(t, "127.0.0.1:1"), &Options{Namespace: "bad{", TTL: time.Minute})
	if err == nil || strings.Count(err.Error(), "tiered: ") != 1 || strings.Contains(err.Error(), "l2: ") {
		t.Errorf("New with a bad namespace: %v", err)
	}
}

// TestShutdownReportsUndelivered: an invalidation the outbox could not
// deliver by Shutdown's deadline is reported as ErrQueued, not dropped in
// silence. (That Shutdown delivers what it can is TestCloseWhileBusy's
// outbox, flushed within its deadline.)
func TestShutdownReportsUndelivered(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, _ := newNode[Product](t, b.Addr, Options{WriteTimeout: 100 * time.Millisecond})
		b.Stop()
		if err := c.Delete(ctx, "k"); !errors.Is(err, ErrQueued) {
			t.Fatalf("Delete with Redis down: %v, want ErrQueued", err)
		}
		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if err := c.Shutdown(sctx); !errors.Is(err, ErrQueued) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown with the invalidation undelivered: %v, want ErrQueued and the deadline", err)
		}
		if err := c.Close(); !errors.Is(err, ErrQueued) {
			t.Fatalf("Close after Shutdown: %v, want Shutdown's result", err)
		}
	})
}
