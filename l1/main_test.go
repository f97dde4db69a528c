package l1

import (
	"strconv"
	"testing"

	"github.com/tieredcache/tiered/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// newCache returns a 4 MiB Cache, closed when t ends. (The default 64 MiB
// makes ristretto allocate millions of counters, slow under -race.)
func newCache[V any](t *testing.T) *Cache[V] {
	t.Helper()
	c, err := New[V](&Options{MaxBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// lookup reports what Get returns for key once ristretto has applied every
// buffered write.
func lookup[V any](c *Cache[V], key string) (V, bool) {
	c.Wait()
	return c.Get(key)
}

// keysInStripes returns two keys whose generations share a stripe and one
// whose generation lives in another stripe than both.
func keysInStripes(t *testing.T) (a, sameStripe, otherStripe string) {
	t.Helper()
	a = "key-a"
	for i := 0; sameStripe == "" || otherStripe == ""; i++ {
		if i > 1_000_000 {
			t.Fatal("no key found in the same stripe as key-a")
		}
		k := "key-" + strconv.Itoa(i)
		if k == a {
			continue
		}
		switch {
		case stripeOf(k) == stripeOf(a) && sameStripe == "":
			sameStripe = k
		case stripeOf(k) != stripeOf(a) && otherStripe == "":
			otherStripe = k
		}
	}
	return a, sameStripe, otherStripe
}
