package tiered

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// TestWarningsWithoutLogger: a misconfiguration warning reaches
// slog.Default() when Options.Logger is nil, and Options.Logger when set.
// Before, it went to the Logger only, which discards by default, so the
// users who needed it never saw it. Not parallel: it replaces slog.Default.
func TestWarningsWithoutLogger(t *testing.T) {
	mr := redistest.Mini(t)
	for _, withLogger := range []bool{false, true} {
		var got bytes.Buffer
		h := slog.NewTextHandler(&got, nil)
		prev := slog.Default()
		var opts Options
		if withLogger {
			opts.Logger = slog.New(h)
			slog.SetDefault(slog.New(slog.DiscardHandler))
		} else {
			slog.SetDefault(slog.New(h))
		}
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr}) // ContextTimeoutEnabled off
		c, err := New[Product](rdb, &Options{Namespace: "warn", TTL: time.Minute, Logger: opts.Logger})
		slog.SetDefault(prev)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		rdb.Close()
		if !strings.Contains(got.String(), "ContextTimeoutEnabled off") {
			t.Errorf("Logger set %v: the warning %q did not reach it", withLogger, got.String())
		}
	}
}

// TestNilLoader: a nil loader is ErrNilLoader at once, whether or not L1
// holds the key. Before, a GetOrLoad answered by L1 returned the value,
// and one that missed returned an error no sentinel matched.
func TestNilLoader(t *testing.T) {
	c, _ := newNode[Product](t, redistest.Mini(t).Addr, Options{})
	ctx := context.Background()
	if err := c.Set(ctx, "k", Product{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"k", "absent"} {
		if _, err := c.GetOrLoad(ctx, key, nil); !errors.Is(err, ErrNilLoader) {
			t.Errorf("GetOrLoad(%q, nil) = %v, want ErrNilLoader", key, err)
		}
	}
	if _, err := c.GetMany(ctx, []string{"k"}, nil); !errors.Is(err, ErrNilLoader) {
		t.Errorf("GetMany(nil) = %v, want ErrNilLoader", err)
	}
	if _, err := c.Scope("u").GetOrLoad(ctx, "k", nil); !errors.Is(err, ErrNilLoader) {
		t.Errorf("Scoped.GetOrLoad(nil) = %v, want ErrNilLoader", err)
	}
}
