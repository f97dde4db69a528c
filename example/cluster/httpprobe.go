package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/tiered/httpcache"
)

// The driver's side of the cached HTTP endpoints (http.go). HTTP readers
// send GETs of the three routes through random nodes as random identities,
// every request with its identity's session cookie, as a browser would. Two
// checks apply to every answer:
//
//   - no cross-identity body: an answer of /http/me/ must name the
//     identity that asked (and carry its discount); one that names another
//     is a private leak (private_leaks);
//   - no stale response: every product in an answer is judged as the
//     product reads are (probe.go), against the log of answered writes by
//     the time the request started; a PUT answers only after its
//     InvalidateTags returned. A stale answer counts in stale_reads (a page
//     counts once, however many of its products are stale).
//
// After each write, a probe reads the product through both product routes
// of every other node until they show the new version, and the final
// check reads every written product (and its page) through every node and
// compares it with the database.

// identities are the callers of the HTTP readers.
var identities = []string{"ada", "brian", "chloe", "dmitri", "emeka", "fatima", "grace", "hiro"}

// HTTP routes the driver reads, as indexes of httpCounters.reads.
const (
	routeProduct = iota // GET /http/products/{id}
	routePage           // GET /http/pages/{n}
	routeMe             // GET /http/me/products/{id}
	routeCount
)

// httpCounters are the driver's figures of the HTTP endpoints.
type httpCounters struct {
	reads       [routeCount]atomic.Uint64 // answered 200, by route
	hits        atomic.Uint64             // of those, X-Cache: hit
	misses      atomic.Uint64             // X-Cache: miss
	bypasses    atomic.Uint64             // X-Cache: bypass
	leaks       atomic.Uint64             // /http/me/ answers that named another identity
	stale       atomic.Uint64             // of the driver's stale reads, those through the HTTP endpoints
	conv        durations                 // how long after the ack each HTTP probe of an acknowledged write converged
	unconverged atomic.Uint64             // HTTP probes that never saw the version they wanted
}

func (c *httpCounters) total() uint64 {
	var n uint64
	for i := range c.reads {
		n += c.reads[i].Load()
	}
	return n
}

// httpReader reads the HTTP routes through random nodes as random
// identities until ctx is done: Zipf-distributed products and pages.
func (d *driver) httpReader(ctx context.Context) {
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	z := rand.NewZipf(r, zipfS, 1, uint64(d.cfg.Products-1))
	pages := (d.cfg.Products + pageSize - 1) / pageSize
	zp := rand.NewZipf(r, zipfS, 1, uint64(pages-1))
	for ctx.Err() == nil {
		n, user := d.nodes[r.IntN(len(d.nodes))], identities[r.IntN(len(identities))]
		switch r.IntN(routeCount) {
		case routeProduct:
			d.readHTTPProduct(ctx, n, int64(z.Uint64())+1, user)
		case routePage:
			d.readHTTPPage(ctx, n, int64(zp.Uint64())+1, user)
		case routeMe:
			d.readMyProduct(ctx, n, int64(z.Uint64())+1, user)
		}
	}
}

// readHTTPProduct GETs /http/products/{id} through n as user, checks the
// answer and returns the product (zero on error).
func (d *driver) readHTTPProduct(ctx context.Context, n *nodeProc, id int64, user string) Product {
	path := "/http/products/" + strconv.FormatInt(id, 10)
	start := time.Now()
	var p Product
	if !d.getHTTP(ctx, n, path, user, &p, routeProduct) {
		return Product{}
	}
	if p.ID != id {
		d.fail("%s GET %s: product %d", n.name, path, p.ID)
		return Product{}
	}
	if d.checkVia(n, "GET "+path, p, start) {
		d.web.stale.Add(1)
	}
	return p
}

// readHTTPPage GETs /http/pages/{page} through n as user, checks the
// answer and returns its products (nil on error).
func (d *driver) readHTTPPage(ctx context.Context, n *nodeProc, page int64, user string) []Product {
	path := "/http/pages/" + strconv.FormatInt(page, 10)
	start := time.Now()
	var pp productPage
	if !d.getHTTP(ctx, n, path, user, &pp, routePage) {
		return nil
	}
	first := (page-1)*pageSize + 1
	want := min(int64(d.cfg.Products)-first+1, pageSize)
	if pp.Page != page || int64(len(pp.Products)) != want {
		d.fail("%s GET %s: page %d with %d products, want %d", n.name, path, pp.Page, len(pp.Products), want)
		return nil
	}
	for i, p := range pp.Products {
		if p.ID != first+int64(i) {
			d.fail("%s GET %s: product %d at position %d", n.name, path, p.ID, i)
			return nil
		}
	}
	for _, p := range pp.Products {
		if d.checkVia(n, "GET "+path, p, start) {
			d.web.stale.Add(1)
			break // a stale page is one stale read
		}
	}
	return pp.Products
}

// readMyProduct GETs /http/me/products/{id} through n as user, checks that
// the answer is user's and not stale, and returns its product (zero on
// error or a leak).
func (d *driver) readMyProduct(ctx context.Context, n *nodeProc, id int64, user string) Product {
	path := "/http/me/products/" + strconv.FormatInt(id, 10)
	start := time.Now()
	var mp myProduct
	if !d.getHTTP(ctx, n, path, user, &mp, routeMe) {
		return Product{}
	}
	if mp.User != user || mp.DiscountPct != discount(user) {
		if d.web.leaks.Add(1) <= maxReported {
			d.out.printf("LEAK: %s answered GET %s as %q with the body of %q (discount %d%%)",
				n.name, path, user, mp.User, mp.DiscountPct)
		}
		return Product{}
	}
	if mp.Product.ID != id {
		d.fail("%s GET %s: product %d", n.name, path, mp.Product.ID)
		return Product{}
	}
	if d.checkVia(n, "GET "+path+" as "+user, mp.Product, start) {
		d.web.stale.Add(1)
	}
	return mp.Product
}

// getHTTP GETs path through n with user's session cookie, decodes a 200
// answer into v and counts it by route and X-Cache. It counts anything
// else as an error, and reports whether v was decoded.
func (d *driver) getHTTP(ctx context.Context, n *nodeProc, path, user string, v any, route int) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.addr+path, nil)
	if err != nil {
		d.fail("%s GET %s: %v", n.name, path, err)
		return false
	}
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: user})
	resp, err := d.http.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			d.fail("%s GET %s: %v", n.name, path, err)
		}
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		d.fail("%s GET %s: %s: %s", n.name, path, resp.Status, msg)
		return false
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		if ctx.Err() == nil {
			d.fail("%s GET %s: decoding the answer: %v", n.name, path, err)
		}
		return false
	}
	d.web.reads[route].Add(1)
	switch resp.Header.Get(httpcache.XCacheHeader) {
	case httpcache.Hit:
		d.web.hits.Add(1)
	case httpcache.Miss:
		d.web.misses.Add(1)
	default:
		d.web.bypasses.Add(1)
	}
	return true
}

// probeHTTP reads want through /http/products/{id} and /http/me/products/
// {id} (as one identity, a different one each write) of every node but the
// writer, every probeInterval, until both show want's version or a newer
// one, and records how long after the answer that read started.
func (d *driver) probeHTTP(ctx context.Context, writer *nodeProc, want Product, ackAt time.Time, queued bool) {
	user := identities[int(want.Version)%len(identities)]
	d.pollOthers(ctx, writer, ackAt, func(n *nodeProc) func(context.Context) bool {
		var public, mine bool
		return func(ctx context.Context) bool {
			public = public || d.readHTTPProduct(ctx, n, want.ID, user).Version >= want.Version
			mine = mine || d.readMyProduct(ctx, n, want.ID, user).Version >= want.Version
			return public && mine
		}
	}, func(late time.Duration) {
		if !queued {
			d.web.conv.add(late)
		}
	}, &d.web.unconverged)
}

// finalCheckHTTP reads every written product through both product routes,
// and every page that shows one, through every node, and compares them
// with the database, as finalCheck does for the product reads; it runs
// after finalCheck, which waited for the bounds.
func (d *driver) finalCheckHTTP(ctx context.Context) error {
	ids, _, _ := d.acks.written()
	want := make(map[int64]int64, len(ids)) // version by id
	var pages []int64
	for _, id := range ids {
		p, err := d.cat.get(ctx, id)
		if err != nil {
			return fmt.Errorf("final check: %w", err)
		}
		want[id] = p.Version
		pages = append(pages, (id-1)/pageSize+1)
	}
	slices.Sort(pages)
	pages = slices.Compact(pages)
	behind := 0
	judge := func(n *nodeProc, via string, p Product, start time.Time) bool {
		w, ok := want[p.ID]
		if p.ID == 0 || !ok || p.Version >= w {
			return false
		}
		behind++
		if done, queued := d.acks.lateness(p.ID, p.Version, start); done > d.cfg.Bound || queued > d.cfg.ErrorBound {
			return true // the read counted it as stale already
		}
		d.stale.Add(1)
		if d.web.stale.Add(1) <= maxReported {
			d.out.printf("STALE: %s answered %s with version %d of product %d; the database has version %d",
				n.name, via, p.Version, p.ID, w)
		}
		return true
	}
	for i, id := range ids {
		user := identities[i%len(identities)]
		for _, n := range d.nodes {
			start := time.Now()
			judge(n, fmt.Sprintf("GET /http/products/%d", id), d.readHTTPProduct(ctx, n, id, user), start)
			start = time.Now()
			judge(n, fmt.Sprintf("GET /http/me/products/%d as %s", id, user), d.readMyProduct(ctx, n, id, user), start)
		}
	}
	for _, page := range pages {
		for _, n := range d.nodes {
			start := time.Now()
			for _, p := range d.readHTTPPage(ctx, n, page, identities[0]) {
				if judge(n, fmt.Sprintf("GET /http/pages/%d", page), p, start) {
					break
				}
			}
		}
	}
	d.out.printf("final check (HTTP): %d written products and %d pages read through %d nodes: %d answers behind the database",
		len(ids), len(pages), len(d.nodes), behind)
	return nil
}

// reportHTTP prints the figures of the HTTP endpoints.
func (d *driver) reportHTTP(final snapshot) {
	w := &d.web
	total := w.total()
	var loads, l1, l2 uint64
	for i := range d.nodes {
		if final.errs[i] == nil {
			loads += final.stats[i].HTTPCache.Loads
			l1 += final.stats[i].HTTPCache.L1Hits
			l2 += final.stats[i].HTTPCache.L2Hits
		}
	}
	d.out.printf("http: %d answers (%d /http/products, %d /http/pages, %d /http/me as %d identities): "+
		"X-Cache hit %s, miss %s, bypass %s; %d handler runs; %d L1 and %d Redis hits; %d private leaks; %d stale",
		total, w.reads[routeProduct].Load(), w.reads[routePage].Load(), w.reads[routeMe].Load(), len(identities),
		percent(w.hits.Load(), total), percent(w.misses.Load(), total), percent(w.bypasses.Load(), total),
		loads, l1, l2, w.leaks.Load(), w.stale.Load())
	n, q := w.conv.quantiles(0.5, 0.99, 1)
	d.out.printf("http probe: %d (write, other node) pairs converged: p50 %s, p99 %s, max %s after the ack; %d never did",
		n, ms(q[0]), ms(q[1]), ms(q[2]), w.unconverged.Load())
}
