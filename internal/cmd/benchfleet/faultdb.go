package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// faultDB is the source of truth: a version per key, and the log of writes.
type faultDB struct {
	names    []string
	index    map[string]int // read-only once built
	versions []atomic.Int64

	mu     sync.Mutex   // guards writes
	writes [][]writeRec // by key, in the order they were logged
}

// writeRec is one write: the database bump, then Delete on a node.
type writeRec struct {
	version int64
	ret     time.Duration // since base, taken right after Delete returned
	node    int
	err     error // Delete's error; nil when acknowledged
}

func newFaultDB() *faultDB {
	db := &faultDB{
		names:    make([]string, faultKeys),
		index:    make(map[string]int, faultKeys),
		versions: make([]atomic.Int64, faultKeys),
		writes:   make([][]writeRec, faultKeys),
	}
	for k := range faultKeys {
		db.names[k] = fmt.Sprintf("k%04d", k)
		db.index[db.names[k]] = k
		db.versions[k].Store(1)
	}
	return db
}

// Load is every node's loader: the key's current version. It does not
// sleep.
func (db *faultDB) Load(_ context.Context, key string) (Item, error) {
	k, ok := db.index[key]
	if !ok {
		return Item{}, tiered.ErrNotFound
	}
	return Item{Key: key, Version: db.versions[k].Load()}, nil
}

func (db *faultDB) logWrite(k int, w writeRec) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.writes[k] = append(db.writes[k], w)
}
