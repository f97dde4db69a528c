package tiered

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// bulkDB is a fake database with a BulkLoad that records its calls.
type bulkDB struct {
	mu    sync.Mutex
	rows  map[string]Product // guarded by mu
	calls [][]string         // guarded by mu: the keys of each BulkLoad call
	// gate, if set, runs at the start of every BulkLoad, after the rows
	// were read: a test blocks a load in it.
	gate func(keys []string)
	err  error // returned by every BulkLoad while set
}

func newBulkDB(n int) *bulkDB {
	db := &bulkDB{rows: make(map[string]Product)}
	for i := range n {
		db.rows[fmt.Sprint("k", i)] = Product{ID: i, Version: 1}
	}
	return db
}

func (db *bulkDB) BulkLoad(ctx context.Context, keys []string) (map[string]Product, error) {
	db.mu.Lock()
	db.calls = append(db.calls, slices.Clone(keys))
	err := db.err
	m := make(map[string]Product)
	for _, k := range keys {
		if p, ok := db.rows[k]; ok {
			m[k] = p
		}
	}
	gate := db.gate
	db.mu.Unlock()
	if gate != nil {
		gate(keys)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (db *bulkDB) set(k string, p Product) {
	db.mu.Lock()
	db.rows[k] = p
	db.mu.Unlock()
}

// loaded returns how many BulkLoad calls ran and how many keys they asked.
func (db *bulkDB) loaded() (calls, keys int) {
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, c := range db.calls {
		keys += len(c)
	}
	return len(db.calls), keys
}

func keysN(from, to int) []string {
	var ks []string
	for i := from; i < to; i++ {
		ks = append(ks, fmt.Sprint("k", i))
	}
	return ks
}

// TestGetMany: a batch of keys found in L1, in Redis, nowhere (loaded in
// one BulkLoad), and in the database neither (cached as "not found" and
// absent from the result); duplicates are read once, and bad keys fail
// alone in a *BatchError.
func TestGetMany(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, _ := newNode[Product](t, b.Addr, Options{})
		other, _ := newNode[Product](t, b.Addr, Options{})
		db := newBulkDB(30)
		// k0..k9 in this node's L1 (and Redis); k10..k19 in Redis only.
		if _, err := c.GetMany(ctx, keysN(0, 10), db); err != nil {
			t.Fatal(err)
		}
		if _, err := other.GetMany(ctx, keysN(10, 20), db); err != nil {
			t.Fatal(err)
		}
		for _, k := range keysN(0, 10) {
			inL1(c)(k)
		}
		db.calls = nil
		keys := append(keysN(0, 40), "k5", "k25", "k35", "", strings.Repeat("x", 2000))
		got, err := c.GetMany(ctx, keys, db)
		var be *BatchError
		if !errors.As(err, &be) || len(be.Errs) != 2 || !errors.Is(err, ErrKeyEmpty) || !errors.Is(err, ErrKeyTooLong) {
			t.Fatalf("err = %v, want a BatchError of the two bad keys", err)
		}
		if len(got) != 30 {
			t.Fatalf("%d values, want 30 (k30..k39 do not exist): %v", len(got), slices.Sorted(maps.Keys(got)))
		}
		for k, p := range got {
			if fmt.Sprint("k", p.ID) != k {
				t.Fatalf("%s = %+v", k, p)
			}
		}
		calls, n := db.loaded()
		if calls != 1 || n != 20 {
			t.Fatalf("%d BulkLoad calls of %d keys, want one of the 20 cold keys (k20..k39)", calls, n)
		}
		// k30..k39 are cached as "not found": no load the second time.
		got, err = other.GetMany(ctx, keysN(0, 40), db)
		if err != nil || len(got) != 30 {
			t.Fatalf("second read: %d values, %v", len(got), err)
		}
		if calls, _ := db.loaded(); calls != 1 {
			t.Fatalf("the second read loaded (%d calls)", calls)
		}
		if _, err := c.Get(ctx, "k35"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of a key the BulkLoader did not return = %v", err)
		}
		if _, err := c.GetMany(ctx, nil, db); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetMany(ctx, keys, nil); err == nil {
			t.Fatal("nil BulkLoader accepted")
		}
	})
}

// TestGetManyErrors: a BulkLoad error fails its keys and only those; a
// panic is a *PanicError for each; values found elsewhere still return.
func TestGetManyErrors(t *testing.T) {
	c, _ := newNode[Product](t, redistest.Mini(t).Addr, Options{})
	ctx := context.Background()
	db := newBulkDB(10)
	if _, err := c.GetMany(ctx, keysN(0, 5), db); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("database down")
	db.err = boom
	got, err := c.GetMany(ctx, keysN(0, 10), db)
	var be *BatchError
	if !errors.As(err, &be) || len(be.Errs) != 5 || !errors.Is(err, boom) || len(got) != 5 {
		t.Fatalf("got %d values, err %v; want 5 values and 5 failed keys", len(got), err)
	}
	panicky := BulkLoaderFunc[Product](func(context.Context, []string) (map[string]Product, error) { panic("oops") })
	if _, err := c.GetMany(ctx, []string{"p1", "p2"}, panicky); !errors.Is(err, ErrLoaderPanic) || len(err.(*BatchError).Errs) != 2 {
		t.Fatalf("panic: %v", err)
	}
}

// TestGetManySharesFlights: a key that a GetOrLoad is loading is not
// loaded again by a GetMany that asks for it (it joins the flight), and a
// GetOrLoad of a key a GetMany is loading joins the batch's flight.
func TestGetManySharesFlights(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, _ := newNode[Product](t, b.Addr, Options{})
		db := newBulkDB(10)
		started, release := make(chan struct{}), make(chan struct{})
		var single atomic.Int64
		slow := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
			single.Add(1)
			close(started)
			<-release
			return Product{ID: 0, Version: 7}, nil
		})
		done := make(chan error, 1)
		go func() {
			_, err := c.GetOrLoad(ctx, "k0", slow)
			done <- err
		}()
		<-started
		res := make(chan map[string]Product, 1)
		go func() {
			m, err := c.GetMany(ctx, keysN(0, 3), db)
			if err != nil {
				t.Error(err)
			}
			res <- m
		}()
		// The batch loads k1 and k2 and waits for k0's flight.
		waitFor(t, 5*time.Second, "the batch to load k1 and k2", func() bool { calls, _ := db.loaded(); return calls == 1 })
		close(release)
		m := <-res
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if m["k0"].Version != 7 || len(m) != 3 {
			t.Fatalf("GetMany = %+v, want k0 from the GetOrLoad's flight", m)
		}
		if _, n := db.loaded(); n != 2 || single.Load() != 1 {
			t.Fatalf("k0 loaded %d times by the loader and %d keys by BulkLoad", single.Load(), n)
		}

		// The other way round: a GetOrLoad joins the batch's flight.
		db2 := newBulkDB(10)
		gate, open := make(chan struct{}), make(chan struct{})
		db2.gate = func([]string) { close(gate); <-open }
		go func() {
			_, err := c.GetMany(ctx, keysN(5, 8), db2)
			done <- err
		}()
		<-gate
		got := make(chan Product, 1)
		go func() {
			p, err := c.GetOrLoad(ctx, "k6", LoaderFunc[Product](func(context.Context, string) (Product, error) {
				t.Error("GetOrLoad loaded a key the batch is loading")
				return Product{}, nil
			}))
			if err != nil {
				t.Error(err)
			}
			got <- p
		}()
		time.Sleep(20 * time.Millisecond) // let GetOrLoad join
		close(open)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if p := <-got; p.ID != 6 {
			t.Fatalf("GetOrLoad = %+v", p)
		}
	})
}

// TestGetManyRacingDelete: a batch's load that began before a Delete must
// not put its values back in Redis or L1 after it.
func TestGetManyRacingDelete(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, rdb := newNode[Product](t, b.Addr, Options{})
		writer, _ := newNode[Product](t, b.Addr, Options{})
		db := newBulkDB(4)
		gate, open := make(chan struct{}), make(chan struct{})
		db.gate = func([]string) { close(gate); <-open }
		done := make(chan map[string]Product, 1)
		go func() {
			m, err := c.GetMany(ctx, keysN(0, 4), db)
			if err != nil {
				t.Error(err)
			}
			done <- m
		}()
		<-gate // the batch read version 1 and holds the leases
		db.set("k1", Product{ID: 1, Version: 2})
		if err := writer.Delete(ctx, "k1"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the invalidation to reach c", func() bool { return c.Stats().Invalidations >= 1 })
		close(open)
		if m := <-done; m["k1"].Version != 1 {
			t.Fatalf("the batch's callers get what it loaded: %+v", m["k1"])
		}
		if n, _ := rdb.Exists(ctx, "test:{k1}").Result(); n != 0 {
			t.Fatal("the batch wrote its old value into Redis after the Delete")
		}
		if _, ok := inL1(c)("k1"); ok {
			t.Fatal("the batch put its old value into L1 after the Delete")
		}
		db.gate = nil
		m, err := c.GetMany(ctx, []string{"k1"}, db)
		if err != nil || m["k1"].Version != 2 {
			t.Fatalf("after the Delete: %+v, %v", m, err)
		}
		if n, _ := rdb.Exists(ctx, "test:{k0}", "test:{k2}").Result(); n != 2 {
			t.Fatal("the keys the Delete did not touch were not cached")
		}
	})
}

// TestGetManyCached: L1 and Redis only; a miss is absent; a Redis failure
// is an ErrUnavailable per key.
func TestGetManyCached(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, _ := newNode[Product](t, b.Addr, Options{})
		other, _ := newNode[Product](t, b.Addr, Options{})
		for i := range 4 {
			if err := other.Set(ctx, fmt.Sprint("k", i), Product{ID: i}); err != nil {
				t.Fatal(err)
			}
		}
		// The Sets' invalidations reach c on their own time; one arriving
		// after c's read would drop what the read put in L1.
		waitFor(t, 5*time.Second, "the Sets' invalidations to reach c", func() bool { return c.Stats().Invalidations >= 4 })
		got, err := c.GetManyCached(ctx, keysN(0, 8))
		if err != nil || len(got) != 4 || got["k3"].ID != 3 {
			t.Fatalf("GetManyCached = %v, %v", got, err)
		}
		for _, k := range keysN(0, 4) {
			if _, ok := inL1(c)(k); !ok {
				t.Fatalf("%s not in L1 after GetManyCached", k)
			}
		}
		b.Stop()
		// The bus loses its subscription, which drops L1 (a gap may hide
		// invalidations); then every key is unreadable, each reported.
		waitFor(t, 5*time.Second, "the bus to notice", func() bool { return !c.Bus().Healthy() })
		got, err = c.GetManyCached(ctx, keysN(0, 8))
		var be *BatchError
		if !errors.As(err, &be) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Redis down: %v", err)
		}
		if len(got) != 0 || len(be.Errs) != 8 {
			t.Fatalf("%d values (%v) and %d errors for 8 keys, with L1 dropped and Redis down", len(got), got, len(be.Errs))
		}
	})
}

// TestGetManyFleet: three nodes read the same cold keys at once; the fleet
// loads each key once. On a redis-server and on a real Cluster (where a
// batch spans the masters), with the lease waiters woken by sharded or by
// classic pub/sub.
func TestGetManyFleet(t *testing.T) {
	redistest.Require(t)
	eachTarget(t, testGetManyFleet)
}

func testGetManyFleet(t *testing.T, tg fleetTarget) {
	ctx := context.Background()
	db := newBulkDB(60)
	// This test counts the fleet's loads, so nothing may fall through to an
	// unleased load: a long MaxStaleness, as newNode sets one (a lapsed
	// proof splits a node's flights), and a long OpTimeout (a read made on
	// a new connection waits for the server check, which a loaded machine
	// may not finish within the default 200 ms, and then loads unleased).
	fleet := newFleetOn(t, tg, 3, Options{MaxStaleness: time.Minute, OpTimeout: 5 * time.Second})
	var wg sync.WaitGroup
	for _, nd := range fleet {
		c := nd.c
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m, err := c.GetMany(ctx, keysN(0, 60), db)
				if err != nil || len(m) != 60 {
					t.Errorf("%d values, %v", len(m), err)
				}
			}()
		}
	}
	wg.Wait()
	if _, n := db.loaded(); n != 60 {
		t.Fatalf("the fleet loaded %d keys for 60 cold keys", n)
	}
}

// TestGetManyRedisDown: with Redis gone, GetMany answers from one BulkLoad
// call for every key, as GetOrLoad answers from its loader.
func TestGetManyRedisDown(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c, _ := newNode[Product](t, b.Addr, Options{})
		db := newBulkDB(20)
		b.Stop()
		for range 3 { // the last ones with the breaker open
			db.calls = nil
			got, err := c.GetMany(ctx, keysN(0, 20), db)
			if err != nil || len(got) != 20 {
				t.Fatalf("%d values, %v", len(got), err)
			}
			if calls, n := db.loaded(); calls != 1 || n != 20 {
				t.Fatalf("%d BulkLoad calls of %d keys", calls, n)
			}
			c.dropL1(keysN(0, 20)...)
		}
	})
}
