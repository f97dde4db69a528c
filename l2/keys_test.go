package l2

import (
	"strings"
	"testing"

	"github.com/tieredcache/tiered/internal/hashslot"
)

// trickyKeys are user keys whose braces, escape bytes or emptiness could
// break the hash tag of a naive layout.
var trickyKeys = []string{
	"k", "ключ", "user:42",
	"}x", "}", "}}", "}{}", "}{x}", "}x{y}", // unescaped, the hash tag would be empty
	"", // likewise: ns:{}
	"~", "~}", "~}x", "~~", "~x", "x~",
	"a}b", "a}", "{x}", "{}", "{", "x{", "x{}", "{}}",
	"\x00", "a\x00b", "\x00}", "}\x00", "~\x00}",
	":lease", "}:lease", "x}:lease", "x}:waiters",
}

// TestKeyEscaping pins the layout of escaped and unescaped keys.
func TestKeyEscaping(t *testing.T) {
	t.Parallel()
	s := &Store{ns: "ns"}
	for _, tc := range []struct{ key, value string }{
		{"k", "ns:{k}"},
		{"a}b", "ns:{a}b}"},
		{"{x}", "ns:{{x}}"},
		{"x~", "ns:{x~}"},
		{"}x", "ns:{~}x}"},
		{"}", "ns:{~}}"},
		{"~", "ns:{~~}"},
		{"~}x", "ns:{~~}x}"},
		{"", "ns:{~}"},
	} {
		if got := s.Key(tc.key); got != tc.value {
			t.Errorf("Key(%q) = %q, want %q", tc.key, got, tc.value)
		}
		if got, want := s.leaseKey(tc.key), tc.value+":lease"; got != want {
			t.Errorf("leaseKey(%q) = %q, want %q", tc.key, got, want)
		}
		if got, want := s.waitersKey(tc.key), tc.value+":waiters"; got != want {
			t.Errorf("waitersKey(%q) = %q, want %q", tc.key, got, want)
		}
	}
}

// checkSameSlot fails t unless k's value, lease and waiters keys have one
// non-empty hash tag, and so one slot.
func checkSameSlot(t *testing.T, s *Store, k string) {
	t.Helper()
	keys := []string{s.Key(k), s.leaseKey(k), s.waitersKey(k)}
	tag, tagged := hashslot.HashTag(keys[0])
	if !tagged {
		t.Errorf("key %q: %q has no hash tag (empty or missing), so Redis hashes the whole key", k, keys[0])
		return
	}
	for _, rk := range keys[1:] {
		if tg, _ := hashslot.HashTag(rk); tg != tag || hashslot.Of(rk) != hashslot.Of(keys[0]) {
			t.Errorf("key %q: %q (tag %q, slot %d) and %q (tag %q, slot %d) are not in one slot",
				k, keys[0], tag, hashslot.Of(keys[0]), rk, tg, hashslot.Of(rk))
		}
	}
}

func TestKeySlots(t *testing.T) {
	t.Parallel()
	for _, ns := range []string{"ns", "app:v2", "x"} {
		s := &Store{ns: ns}
		for _, k := range trickyKeys {
			checkSameSlot(t, s, k)
		}
	}
}

// TestKeySlotsOldLayout shows that TestKeySlots catches the bug the escaping
// fixes: in the old layout ns:{k} the value and lease of "}x" part slots.
func TestKeySlotsOldLayout(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"}x", "}", ""} {
		old := "ns:{" + k + "}"
		if hashslot.Of(old) == hashslot.Of(old+":lease") {
			t.Errorf("old layout of %q: %q and its lease share slot %d; the test cannot see the bug", k, old, hashslot.Of(old))
		}
	}
}

// parseKey inverts the layout: it returns the namespace, kind and user key
// of a Redis key a Store made.
func parseKey(t *testing.T, rk string) (ns, kind, k string) {
	t.Helper()
	i := strings.IndexByte(rk, '{')
	if i < 1 || rk[i-1] != ':' {
		t.Fatalf("%q: no namespace", rk)
	}
	ns, rest := rk[:i-1], rk[i+1:]
	for _, suffix := range []string{"}:lease", "}:waiters", "}"} {
		if body, ok := strings.CutSuffix(rest, suffix); ok {
			kind = suffix
			if esc, ok := strings.CutPrefix(body, string(keyEscape)); ok {
				return ns, kind, esc
			}
			if body == "" || body[0] == '}' {
				t.Fatalf("%q: unescaped body %q should have been escaped", rk, body)
			}
			return ns, kind, body
		}
	}
	t.Fatalf("%q: no known suffix", rk)
	return
}

// TestKeysInjective: distinct user keys, in one namespace or two, never get
// the same Redis key, whatever the kind (value, lease, waiters).
func TestKeysInjective(t *testing.T) {
	t.Parallel()
	type origin struct{ ns, kind, key string }
	seen := make(map[string]origin)
	keys := append([]string{"x", "~x", "}x", "~~}x", "~}~x"}, trickyKeys...)
	for _, ns := range []string{"ns", "ns:", "n"} {
		s := &Store{ns: ns}
		for _, k := range keys {
			for kind, rk := range map[string]string{"}": s.Key(k), "}:lease": s.leaseKey(k), "}:waiters": s.waitersKey(k)} {
				o := origin{ns, kind, k}
				if prev, dup := seen[rk]; dup && prev != o {
					t.Errorf("%+v and %+v both map to %q", prev, o, rk)
				}
				seen[rk] = o
				if gns, gkind, gk := parseKey(t, rk); (origin{gns, gkind, gk}) != o {
					t.Errorf("%q parses as %q %q %q, want %+v", rk, gns, gkind, gk, o)
				}
			}
		}
	}
	s := &Store{ns: "ns"}
	if s.Key("}x") == s.Key("~}x") || s.Key("") == s.Key("~") {
		t.Error("an escaped key collides with the key that spells its escape")
	}
}

// FuzzKeys checks the layout's two properties on arbitrary keys: one
// non-empty hash tag for a key's value, lease and waiters, and a Redis key
// that parses back to the user key.
func FuzzKeys(f *testing.F) {
	for _, k := range trickyKeys {
		f.Add(k)
	}
	s := &Store{ns: "ns"}
	f.Fuzz(func(t *testing.T, k string) {
		checkSameSlot(t, s, k)
		for _, rk := range []string{s.Key(k), s.leaseKey(k), s.waitersKey(k)} {
			if ns, _, got := parseKey(t, rk); ns != "ns" || got != k {
				t.Errorf("%q parses as %q in %q, want %q in ns", rk, got, ns, k)
			}
		}
	})
}
