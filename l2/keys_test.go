package l2

import (
	"strings"
	"testing"
)

// hashTag returns the part of a Redis key that Redis Cluster hashes, as the
// cluster spec defines it (HASH_SLOT, "Hash tags"): the bytes between the
// first '{' and the first '}' after it, when there is at least one byte
// between them; otherwise the whole key. tagged reports which.
func hashTag(key string) (tag string, tagged bool) {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j], true
		}
	}
	return key, false
}

// slot is Redis Cluster's HASH_SLOT: CRC16 of the hash tag, mod 16384.
// go-redis has one, but not in its public API.
func slot(key string) int {
	tag, _ := hashTag(key)
	return int(crc16(tag)) & 16383
}

// crc16 is the CRC the cluster spec names: CRC-16/XMODEM (polynomial
// 0x1021, initial value 0, no reflection, no final xor).
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func TestSlotFunction(t *testing.T) {
	t.Parallel()
	// The check value from the cluster spec's reference implementation.
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	// Answers of CLUSTER KEYSLOT on redis-server 7.0 (TestClusterSlotFunction
	// checks the tricky keys against a live cluster).
	for key, want := range map[string]int{
		"somekey":       11058,
		"foo{hash_tag}": 2515,
	} {
		if got := slot(key); got != want {
			t.Errorf("slot(%q) = %d, want %d", key, got, want)
		}
	}
	for _, tc := range []struct {
		key, tag string
		tagged   bool
	}{
		{"a{b}c", "b", true},
		{"a{b}{c}", "b", true},
		{"a{}b}", "a{}b}", false}, // empty tag: the whole key
		{"a}{b", "a}{b", false},   // no '}' after the '{'
		{"{{b}", "{b", true},
	} {
		if tag, tagged := hashTag(tc.key); tag != tc.tag || tagged != tc.tagged {
			t.Errorf("hashTag(%q) = %q, %v; want %q, %v", tc.key, tag, tagged, tc.tag, tc.tagged)
		}
	}
}

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
	tag, tagged := hashTag(keys[0])
	if !tagged {
		t.Errorf("key %q: %q has no hash tag (empty or missing), so Redis hashes the whole key", k, keys[0])
		return
	}
	for _, rk := range keys[1:] {
		if tg, _ := hashTag(rk); tg != tag || slot(rk) != slot(keys[0]) {
			t.Errorf("key %q: %q (tag %q, slot %d) and %q (tag %q, slot %d) are not in one slot",
				k, keys[0], tag, slot(keys[0]), rk, tg, slot(rk))
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
		if slot(old) == slot(old+":lease") {
			t.Errorf("old layout of %q: %q and its lease share slot %d; the test cannot see the bug", k, old, slot(old))
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
