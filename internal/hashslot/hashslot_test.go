package hashslot

import (
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	// The check value from the cluster spec's reference implementation.
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	// Answers of CLUSTER KEYSLOT on redis-server 7.0.
	for _, tc := range []struct {
		key  string
		want int
	}{
		{"somekey", 11058},
		{"foo{hash_tag}", 2515},
		{"hash_tag", 2515},
	} {
		if got := Of(tc.key); got != tc.want {
			t.Errorf("Of(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
	for _, tc := range []struct {
		key, tag string
		tagged   bool
	}{
		{"plain", "plain", false},
		{"a{b}c", "b", true},
		{"a{}c{d}", "a{}c{d}", false}, // an empty first tag: the whole key
		{"a{b", "a{b", false},
		{"a{b}{c}", "b", true},
		{"a{}b}", "a{}b}", false},
		{"a}{b", "a}{b", false}, // no '}' after the '{'
		{"{{b}", "{b", true},
		{"a}b{c}", "c", true},
		{"{{x}}", "{x", true},
	} {
		if tag, tagged := HashTag(tc.key); tag != tc.tag || tagged != tc.tagged {
			t.Errorf("HashTag(%q) = %q, %v; want %q, %v", tc.key, tag, tagged, tc.tag, tc.tagged)
		}
	}
}

func TestChannel(t *testing.T) {
	seen := make(map[string]bool, Count)
	for slot := range Count {
		ch := Channel("tiered:bus", slot)
		if got := Of(ch); got != slot {
			t.Fatalf("Channel(_, %d) = %q hashes to %d", slot, ch, got)
		}
		if !strings.HasPrefix(ch, "tiered:bus{") || seen[ch] {
			t.Fatalf("Channel(_, %d) = %q: bad or repeated", slot, ch)
		}
		seen[ch] = true
	}
}
