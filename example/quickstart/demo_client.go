package main

// The demo's HTTP client, part of the launcher in demo.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// client makes the demo's requests.
type client struct{ http *http.Client }

// stats is the body of GET /stats.
type stats struct {
	ServedBy string `json:"served_by"`
	tiered.Stats
}

// step sends one request to in and tells where the answer came from by
// comparing in's stats before and after it (the demo sends one request at
// a time).
func (c *client) step(ctx context.Context, in *instance, method, path, body string) (step, error) {
	s := step{Instance: in.name, Method: method}
	before, err := c.stats(ctx, in)
	if err != nil {
		return s, err
	}
	var a struct {
		Product
		ServedBy string `json:"served_by"`
	}
	s.Sent = time.Now()
	if err := c.do(ctx, method, in.url+path, body, &a); err != nil {
		return s, err
	}
	s.Answered = time.Now()
	s.Product, s.ServedBy = a.Product, a.ServedBy
	after, err := c.stats(ctx, in)
	if err != nil {
		return s, err
	}
	switch {
	case after.Loads > before.Loads:
		s.Source = "sqlite"
	case after.L2Hits > before.L2Hits:
		s.Source = "redis"
	case after.L1Hits > before.L1Hits:
		s.Source = "memory"
	}
	return s, nil
}

func (c *client) stats(ctx context.Context, in *instance) (stats, error) {
	var st stats
	err := c.do(ctx, "GET", in.url+"/stats", "", &st)
	return st, err
}

// do sends a request and decodes its JSON answer into v.
func (c *client) do(ctx context.Context, method, url, body string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	return nil
}
