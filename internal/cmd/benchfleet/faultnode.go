package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/faultproxy"
	"github.com/tieredcache/tiered/tiered"
)

// faultNode is one node of a fault run.
type faultNode struct {
	id     int
	rdb    *redis.Client
	busRdb *redis.Client     // rdb, or for the silent node a client through proxy
	proxy  *faultproxy.Proxy // nil but for the silent node
	bus    *tiered.Bus
	cache  *tiered.Cache[Item]
}

func (n *faultNode) close() {
	if n.cache != nil {
		n.cache.Close()
	}
	if n.bus != nil {
		n.bus.Close()
	}
	if n.busRdb != n.rdb {
		n.busRdb.Close()
	}
	if n.proxy != nil {
		n.proxy.Close()
	}
	n.rdb.Close()
}

// faultClient is the client a tiered user is told to configure: go-redis
// honours context deadlines on the socket only with ContextTimeoutEnabled.
func faultClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ContextTimeoutEnabled: true})
}

func newFaultNode(ctx context.Context, id int, addr string, silent bool, logger *slog.Logger) (*faultNode, error) {
	n := &faultNode{id: id, rdb: faultClient(addr)}
	n.busRdb = n.rdb
	if silent {
		var err error
		if n.proxy, err = faultproxy.New(addr); err != nil {
			n.close()
			return nil, err
		}
		n.busRdb = faultClient(n.proxy.Addr())
	}
	var err error
	if n.bus, err = tiered.NewBus(n.busRdb, &tiered.BusOptions{Logger: logger}); err != nil {
		n.close()
		return nil, err
	}
	n.cache, err = tiered.New[Item](n.rdb, &tiered.Options{
		Namespace: faultNamespace,
		TTL:       time.Minute,
		Bus:       n.bus,
		Logger:    logger,
	})
	if err != nil {
		n.close()
		return nil, err
	}
	if err := waitUpTo(ctx, nodeReadyTimeout, n.cache.WaitReady); err != nil {
		n.close()
		return nil, fmt.Errorf("node %d: never ready: %w", id, err)
	}
	return n, nil
}

// newFaultNodes builds the nodes of a fault run on addr, the last one
// silent (its bus reaches Redis through a faultproxy). On failure it
// returns the nodes built so far, for the caller to close.
func newFaultNodes(ctx context.Context, cfg config, addr string) ([]*faultNode, error) {
	var logger *slog.Logger
	if cfg.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	nodes := make([]*faultNode, 0, cfg.nodes)
	for i := range cfg.nodes {
		n, err := newFaultNode(ctx, i, addr, i == cfg.nodes-1, logger)
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}
