package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/faultproxy"
)

// event is one fault injected.
type event struct {
	at, done time.Duration
	what     string
	result   string
}

// injectFaults injects the faults of faults.go's comment at their times and
// returns what it did. It returns early when stop is closed.
func injectFaults(ctx context.Context, stop <-chan struct{}, base time.Time, cfg config, admin *redis.Client, silent *faultNode) []event {
	d := cfg.faultDur
	cmd := func(args ...any) func() string {
		return func() string {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			r, err := admin.Do(cctx, args...).Result()
			if err != nil {
				return "error: " + err.Error()
			}
			return fmt.Sprint(r)
		}
	}
	steps := []struct {
		at   time.Duration
		what string
		do   func() string
	}{
		{d / 6, fmt.Sprintf("node %d's bus connection silent", silent.id), func() string {
			silent.proxy.Silence()
			return "ok"
		}},
		// See faults.go's comment for why the silenced connections are cut.
		{d/6 + silenceFor, fmt.Sprintf("node %d's bus: %s", silent.id, silenceEnd(cfg)), func() string {
			if cfg.silenceResume {
				silent.proxy.Resume()
			} else {
				silent.proxy.Set(faultproxy.Forward, faultproxy.NewConns)
				silent.proxy.CutAll()
			}
			return fmt.Sprintf("ok, %d bytes dropped while silent", silent.proxy.Dropped())
		}},
		{d / 3, "CLIENT KILL TYPE pubsub", cmd("CLIENT", "KILL", "TYPE", "pubsub")},
		{d / 3, "CLIENT KILL TYPE normal", cmd("CLIENT", "KILL", "TYPE", "normal")},
		{d / 2, "CLIENT PAUSE 1000 WRITE", cmd("CLIENT", "PAUSE", "1000", "WRITE")},
		{2 * d / 3, "CLIENT PAUSE 1000 ALL", cmd("CLIENT", "PAUSE", "1000", "ALL")},
	}
	var events []event
	for _, s := range steps {
		t := time.NewTimer(time.Until(base.Add(s.at)))
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return events
		}
		at := time.Since(base)
		r := s.do()
		events = append(events, event{at: at, done: time.Since(base), what: s.what, result: r})
	}
	return events
}

// silenceEnd says how the silence of the silent node's bus ends.
func silenceEnd(cfg config) string {
	if cfg.silenceResume {
		return "silent connections forwarded again (-silenceresume)"
	}
	return "silent connections cut, new ones forwarded"
}
