// Package benchlist is the JSON list of products that the HTTP benchmarks
// serve: package httpcache's BenchmarkList and benchfleet's http workload
// encode the same items, so that their figures are of the same body.
package benchlist

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Item is one product of a list: ten fields of the kinds a product
// listing has.
type Item struct {
	ID          int64     `json:"id"`
	SKU         string    `json:"sku"`
	Name        string    `json:"name"`
	Category    string    `json:"category"`
	Description string    `json:"description"`
	PriceCents  int64     `json:"price_cents"`
	Stock       int       `json:"stock"`
	Rating      float64   `json:"rating"`
	Tags        []string  `json:"tags"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Items returns n items with the IDs first, first+1, and so on; every other
// field follows from the ID.
func Items(first int64, n int) []Item {
	items := make([]Item, n)
	for i := range items {
		id := first + int64(i)
		items[i] = Item{
			ID: id, SKU: fmt.Sprintf("EC-%d", id), Name: fmt.Sprintf("espresso cup %d", id),
			Category: "kitchen", Description: "a small white porcelain cup, dishwasher safe",
			PriceCents: 1999 + id, Stock: int(id % 17), Rating: 4.25 + float64(id%4)/10,
			Tags:      []string{"cup", "porcelain", "gift"},
			UpdatedAt: time.Date(2025, 11, 24, 10, 0, int(id%60), 0, time.UTC),
		}
	}
	return items
}

// Write encodes items with encoding/json, as a handler without a cache does
// on every call, and writes them as an application/json reply with its
// Content-Length (a 500 if they do not encode).
func Write(w http.ResponseWriter, items []Item) {
	b, err := json.Marshal(items)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}
