package l2

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestTags: members are recorded per tag and read back; removing what an
// invalidation read keeps a key that a load tagged again since (a plain set
// lost it: the example cluster's probe then served a stale page for a TTL).
func TestTags(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.store(t, "tags")
		if err := s.AddTags(ctx, []string{"k1", "k2"}, []string{"a", "}b"}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.AddTags(ctx, []string{"k3"}, []string{"a"}, time.Minute); err != nil {
			t.Fatal(err)
		}
		reads, err := s.TagMembers(ctx, []string{"a", "}b", "none"})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range [][]string{{"k1", "k2", "k3"}, {"k1", "k2"}, {}} {
			got := slices.Sorted(slices.Values(reads[i].Members))
			if !slices.Equal(got, want) {
				t.Fatalf("tag %d: members %q, want %q", i, got, want)
			}
		}
		// k2 is loaded again, and tagged again, after the read.
		time.Sleep(2 * time.Millisecond)
		if err := s.AddTags(ctx, []string{"k2"}, []string{"a"}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveTagMembers(ctx, []string{"a", "}b", "none"}, reads); err != nil {
			t.Fatal(err)
		}
		after, err := s.TagMembers(ctx, []string{"a", "}b"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(after[0].Members, []string{"k2"}) || len(after[1].Members) != 0 {
			t.Fatalf("after the removal: %q and %q; want k2 alone in a", after[0].Members, after[1].Members)
		}
		// The set lives at least the TTL given.
		rdb := b.client(t)
		if pttl, _ := rdb.PTTL(ctx, "tags:tag:{a}").Result(); pttl < 50*time.Second {
			t.Fatalf("tag set PTTL %v", pttl)
		}
	})
}
