// Command quickstart is a small product service with a tiered cache in
// front of SQLite: copy it to start your own. Run two or more instances
// against one Redis and one database; a price changed through any instance
// is dropped from every instance's cache at once.
//
//	go run ./quickstart -addr :8081 -redis localhost:6379 -db /tmp/products.db -name A
//	go run ./quickstart -addr :8082 -redis localhost:6379 -db /tmp/products.db -name B
//
//	GET /products/{id}   the product, read through the cache
//	PUT /products/{id}   {"price": 520} updates the row, then drops the cached copy everywhere
//	GET /stats           the cache's counters (tiered.Stats)
//
// `make quickstart` runs the demo in demo.go, which starts both instances
// for you on an embedded Redis.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go

	"github.com/tieredcache/tiered/tiered"
)

// Product is a row of the products table and the value the cache holds.
type Product struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Price int64  `json:"price"` // in cents
}

func main() {
	// The demo's launcher (demo.go); drop this line and demo.go when you copy this file.
	if len(os.Args) > 1 && os.Args[1] == "demo" {
		os.Exit(demoMain(os.Args[2:]))
	}
	addr := flag.String("addr", "localhost:8081", "HTTP listen address")
	redisAddr := flag.String("redis", "localhost:6379", "Redis address")
	dbPath := flag.String("db", "products.db", "SQLite file, created and seeded if missing")
	name := flag.String("name", "", "instance name shown in responses (default: the listen address)")
	flag.Parse()
	if err := run(*addr, *redisAddr, *dbPath, *name); err != nil {
		log.Fatal(err)
	}
}

// run serves until SIGINT or SIGTERM.
func run(addr, redisAddr, dbPath, name string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The source of truth. WAL and busy_timeout let several processes share the file.
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return err
	}
	defer db.Close()
	// Instances may start together: both statements are no-ops the second time.
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS products (
		id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL)`); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO products VALUES
		(1, 'espresso cup', 450), (2, 'walnut tray', 2900), (3, 'linen napkin', 650)`); err != nil {
		return err
	}

	// One cache per value type. Every instance uses the same Namespace, so
	// they share Redis entries and hear each other's invalidations.
	// ContextTimeoutEnabled lets a read give up on a Redis that stopped
	// answering (and fall through to SQLite) after tiered's OpTimeout.
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	cache, err := tiered.New[Product](rdb, &tiered.Options{Namespace: "products", TTL: 10 * time.Minute})
	if err != nil {
		return err
	}
	defer cache.Close()
	// Wait until the invalidation bus is subscribed, so that the first
	// requests already use both tiers (a service's readiness probe).
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cache.WaitReady(readyCtx); err != nil {
		return fmt.Errorf("redis at %s not ready: %w", redisAddr, err)
	}

	// The loader runs on a miss in memory and in Redis: once per key for the
	// whole fleet, however many requests and instances miss at once.
	load := tiered.LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
		var p Product
		err := db.QueryRowContext(ctx, `SELECT id, name, price FROM products WHERE id = ?`, key).
			Scan(&p.ID, &p.Name, &p.Price)
		if errors.Is(err, sql.ErrNoRows) {
			return p, tiered.ErrNotFound // cached too, briefly: a missing id does not hit SQLite each time
		}
		return p, err
	})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if name == "" {
		name = ln.Addr().String()
	}
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Served-By", name)
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	type answer struct {
		Product
		ServedBy string `json:"served_by"`
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) {
		key, ok := productKey(w, r)
		if !ok {
			return
		}
		p, err := cache.GetOrLoad(r.Context(), key, load) // memory, then Redis, then SQLite
		if errors.Is(err, tiered.ErrNotFound) {
			http.Error(w, "no such product", http.StatusNotFound)
			return
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, http.StatusOK, answer{p, name})
	})
	mux.HandleFunc("PUT /products/{id}", func(w http.ResponseWriter, r *http.Request) {
		key, ok := productKey(w, r)
		if !ok {
			return
		}
		var body struct {
			Price int64 `json:"price"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Price <= 0 {
			http.Error(w, `want {"price": cents > 0}`, http.StatusBadRequest)
			return
		}
		// First the database, then the cache: Delete drops the key from
		// Redis and, through pub/sub, from every instance's memory.
		var p Product
		err := db.QueryRowContext(r.Context(), `UPDATE products SET price = ? WHERE id = ?
			RETURNING id, name, price`, body.Price, key).Scan(&p.ID, &p.Name, &p.Price)
		if errors.Is(err, sql.ErrNoRows) {
			http.Error(w, "no such product", http.StatusNotFound)
			return
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// ErrQueued: Redis did not answer in time; the invalidation waits in
		// an outbox and goes out as soon as it does. The row is updated anyway.
		if err := cache.Delete(r.Context(), key); err != nil && !errors.Is(err, tiered.ErrQueued) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, http.StatusOK, answer{p, name})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, struct {
			ServedBy string `json:"served_by"`
			tiered.Stats
		}{name, cache.Stats()})
	})

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Printf("%s: listening on http://%s", name, ln.Addr())
	select {
	case err := <-served:
		return err
	case <-ctx.Done(): // finish the requests in progress before the deferred Closes
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx)
	}
}

// productKey returns the cache key of the request's product: the id in one
// canonical form, so that /products/01 and /products/1 share one entry.
func productKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "bad product id", http.StatusBadRequest)
		return "", false
	}
	return strconv.FormatInt(id, 10), true
}
