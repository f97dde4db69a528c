package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Product is a row of the products table, and the value the nodes cache.
type Product struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	Price     int64     `json:"price"`   // in cents
	Version   int64     `json:"version"` // bumped by every update
	UpdatedAt time.Time `json:"updated_at"`
}

// errNoProduct is returned by catalog methods for an id with no row.
var errNoProduct = errors.New("no such product")

// catalog is the source of truth: a SQLite file in WAL mode that the parent
// and every node open at once. WAL lets readers run alongside the one writer;
// busy_timeout makes a writer wait for another process's write lock instead
// of failing, and _txlock=immediate takes that lock at BEGIN, so a
// transaction never has to upgrade a read lock (which SQLite may refuse).
//
// A catalog is safe for concurrent use by multiple goroutines.
type catalog struct {
	db *sql.DB
}

func openCatalog(path string) (*catalog, error) {
	dsn := "file:" + path +
		"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &catalog{db: db}, nil
}

func (c *catalog) Close() error { return c.db.Close() }

var (
	adjectives = []string{"espresso", "walnut", "linen", "copper", "glass", "oak", "wool", "slate", "cotton", "brass"}
	nouns      = []string{"cup", "bowl", "lamp", "chair", "shelf", "rug", "vase", "stool", "tray", "clock"}
)

// seed creates the products table with n products, ids 1 to n, version 1.
func (c *catalog) seed(ctx context.Context, n int) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE products (
		id         INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		price      INTEGER NOT NULL,
		version    INTEGER NOT NULL,
		updated_at INTEGER NOT NULL -- Unix microseconds
	)`); err != nil {
		return err
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO products VALUES (?, ?, ?, 1, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	now := time.Now().UnixMicro()
	for id := 1; id <= n; id++ {
		name := fmt.Sprintf("%s %s #%d", adjectives[id%len(adjectives)], nouns[(id/len(adjectives))%len(nouns)], id)
		if _, err := stmt.ExecContext(ctx, id, name, 100+rand.IntN(10000), now); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// get returns the product with the given id, or errNoProduct.
func (c *catalog) get(ctx context.Context, id int64) (Product, error) {
	row := c.db.QueryRowContext(ctx,
		`SELECT id, name, price, version, updated_at FROM products WHERE id = ?`, id)
	return scanProduct(row)
}

// setPrice updates a product's price and bumps its version, in one
// transaction, and returns the row as committed.
func (c *catalog) setPrice(ctx context.Context, id, price int64) (Product, error) {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return Product{}, err
	}
	defer tx.Rollback()
	row := tx.QueryRowContext(ctx, `UPDATE products
		SET price = ?, version = version + 1, updated_at = ?
		WHERE id = ?
		RETURNING id, name, price, version, updated_at`, price, time.Now().UnixMicro(), id)
	p, err := scanProduct(row)
	if err != nil {
		return Product{}, err
	}
	if err := tx.Commit(); err != nil {
		return Product{}, err
	}
	return p, nil
}

// list returns the products with ids first to last, in order.
func (c *catalog) list(ctx context.Context, first, last int64) ([]Product, error) {
	rows, err := c.db.QueryContext(ctx,
		`SELECT id, name, price, version, updated_at FROM products WHERE id BETWEEN ? AND ? ORDER BY id`, first, last)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ps []Product
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, rows.Err()
}

func scanProduct(row interface{ Scan(...any) error }) (Product, error) {
	var p Product
	var updated int64
	err := row.Scan(&p.ID, &p.Name, &p.Price, &p.Version, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return Product{}, errNoProduct
	}
	if err != nil {
		return Product{}, err
	}
	p.UpdatedAt = time.UnixMicro(updated).UTC()
	return p, nil
}
