package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// The driver's HTTP client side: one request to a node, and every node's
// /stats at once.

// do sends one request to n and decodes a 200 answer's JSON into v.
func (d *driver) do(ctx context.Context, n *nodeProc, method, path string, body []byte, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+n.addr+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if resp.StatusCode >= 500 {
			return resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
		}
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return resp.StatusCode, fmt.Errorf("decoding answer: %w", err)
	}
	return resp.StatusCode, nil
}

// snapshot is every node's /stats at one time.
type snapshot struct {
	at    time.Time
	stats []nodeStats
	errs  []error
}

func (s snapshot) firstErr() error {
	return errors.Join(s.errs...)
}

// snapshot fetches every node's /stats (with ?key=key when key is not
// empty) in parallel.
func (d *driver) snapshot(ctx context.Context, key string) snapshot {
	s := snapshot{stats: make([]nodeStats, len(d.nodes)), errs: make([]error, len(d.nodes))}
	path := "/stats"
	if key != "" {
		path += "?key=" + key
	}
	var wg sync.WaitGroup
	for i, n := range d.nodes {
		wg.Go(func() { s.stats[i], s.errs[i] = d.nodeStats(ctx, n, path) })
	}
	wg.Wait()
	s.at = time.Now()
	return s
}

// nodeStats fetches one node's /stats at path (with a query, maybe).
func (d *driver) nodeStats(ctx context.Context, n *nodeProc, path string) (nodeStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var s nodeStats
	status, err := d.do(ctx, n, http.MethodGet, path, nil, &s)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d", status)
	}
	if err != nil {
		return s, fmt.Errorf("%s %s: %w", n.name, path, err)
	}
	return s, nil
}
