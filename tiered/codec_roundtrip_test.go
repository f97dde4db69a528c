package tiered

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// lossy is a value JSON does not give back as it was: an unexported field
// is dropped, and invalid UTF-8 becomes U+FFFD.
type lossy struct {
	Name   string
	secret string
}

// TestLossyCodecSameValue: the node that loads (or Sets) a value returns
// and caches what the codec gives back, as every other node decodes it from
// Redis, not the loader's value.
func TestLossyCodecSameValue(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		a, _ := newNode[lossy](t, b.Addr, Options{Namespace: "lossy"})
		other, _ := newNode[lossy](t, b.Addr, Options{Namespace: "lossy"})
		loader := LoaderFunc[lossy](func(context.Context, string) (lossy, error) {
			return lossy{Name: "caf\xe9", secret: "s"}, nil
		})
		want := lossy{Name: "caf\uFFFD"}
		check := func(who string, got lossy, err error) {
			t.Helper()
			if err != nil || got != want {
				t.Errorf("%s: got %+q, %v; want %+q", who, got, err, want)
			}
		}
		got, err := a.GetOrLoad(ctx, "k", loader)
		check("the loading node", got, err)
		got, err = other.Get(ctx, "k")
		check("another node, from Redis", got, err)
		got, err = fromL1(a, "k")
		check("the loading node's L1", got, err)

		if err := a.Set(ctx, "s", lossy{Name: "caf\xe9", secret: "s"}); err != nil {
			t.Fatal(err)
		}
		got, err = fromL1(a, "s")
		check("the writer's L1 after Set", got, err)

		m, err := a.GetMany(ctx, []string{"m"}, BulkLoaderFunc[lossy](func(context.Context, []string) (map[string]lossy, error) {
			return map[string]lossy{"m": {Name: "caf\xe9", secret: "s"}}, nil
		}))
		check("GetMany's loading node", m["m"], err)
	})
}

// fromL1 returns key's value in c's L1, or an error if it is not there.
func fromL1[V any](c *Cache[V], key string) (V, error) {
	v, ok := inL1(c)(key)
	if !ok {
		return v, errors.New("not in L1")
	}
	return v, nil
}

// asymmetric encodes what it cannot decode.
type asymmetric struct{ JSON }

func (asymmetric) Unmarshal([]byte, any) error { return errors.New("no") }

// TestCodecCannotDecodeItself: a value whose encoding does not decode is an
// encoding error, not a corrupt value on every other node.
func TestCodecCannotDecodeItself(t *testing.T) {
	redistest.Each(t, false, func(t *testing.T, b redistest.Backend) {
		c, _ := newNode[Product](t, b.Addr, Options{Codec: asymmetric{}, TTL: time.Minute})
		if err := c.Set(context.Background(), "k", Product{}); !errors.Is(err, ErrEncode) {
			t.Fatalf("Set: %v, want ErrEncode", err)
		}
	})
}
