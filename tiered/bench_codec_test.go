package tiered

import (
	"context"
	"fmt"
	"testing"

	"github.com/tieredcache/tiered/internal/redistest"
)

// losslessJSON is JSON declared lossless: the cache skips the round trip.
type losslessJSON struct{ JSON }

func (losslessJSON) Lossless() bool { return true }

// BenchmarkCodecRoundTrip: the cost of returning and caching what the codec
// gives back (one Unmarshal of the ~256-byte benchValue) on a load and on a
// Set, against the same codec declared lossless, side by side in one run.
func BenchmarkCodecRoundTrip(b *testing.B) {
	addr := redistest.Start(b).Addr
	loader := LoaderFunc[benchValue](func(context.Context, string) (benchValue, error) { return newBenchValue(), nil })
	codecs := []struct {
		name  string
		codec Codec
	}{{"json", JSON{}}, {"json-lossless", losslessJSON{}}}
	b.Run("op=decode-only", func(b *testing.B) { // the round trip's own work
		payload, err := JSON{}.Marshal(newBenchValue())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			var v benchValue
			if err := (JSON{}).Unmarshal(payload, &v); err != nil {
				b.Fatal(err)
			}
			benchSink = v
		}
	})
	round := 0
	for _, op := range []string{"miss", "set"} {
		for _, cd := range codecs {
			b.Run("op="+op+"/codec="+cd.name, func(b *testing.B) {
				c := benchCache(b, addr, Options{Codec: cd.codec})
				ctx := context.Background()
				v := newBenchValue()
				round++
				i := 0
				b.ReportAllocs()
				for b.Loop() {
					key := fmt.Sprintf("rt-%d-%d", round, i)
					i++
					var err error
					if op == "set" {
						err = c.Set(ctx, key, v)
					} else {
						benchSink, err = c.GetOrLoad(ctx, key, loader)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
