package l2

// Key layout. For a user key k in namespace ns a Store uses three Redis keys:
//
//	ns:{t}          the value (an envelope)
//	ns:{t}:lease    the lease token of the node loading k, or the
//	                uncacheable marker
//	ns:{t}:waiters  set while another node waits for the lease
//
// where t is k escaped: t = "~"+k when k is empty or starts with '}' or with
// the escape byte '~', and t = k for every other key, which therefore keeps
// the Redis name it always had (ns:{k}).
//
// Why escape. Redis Cluster hashes only a key's hash tag: the bytes between
// its first '{' and the first '}' after that, if there is at least one byte
// between them; otherwise it hashes the whole key. A namespace holds no brace
// (New checks), so the first '{' is the one after "ns:" and the tag is t up
// to its first '}' (all of t when t has none: the '}' the layout appends
// closes the tag). Unescaped, k = "}x" would give ns:{}x}, whose tag is
// empty: Redis would hash the whole key, ns:{}x} and ns:{}x}:lease would land
// in different slots, and every script touching both would fail with
// CROSSSLOT. So would k = "" (ns:{} and ns:{}:lease).
//
// The tag is never empty: t is never empty and never starts with '}' (an
// escaped t starts with '~'; an unescaped one is a non-empty k that does not
// start with '}'), so the tag holds at least t's first byte. The three keys
// of k all start with "ns:{" + t + "}", which contains the brace that closes
// the tag, so they share the tag and thus the slot. A '}' later in k (a}b)
// shortens the tag to "a", which is harmless: a}b and a}c share a slot.
//
// Why injective. Escaped t start with '~' and unescaped ones never do, so k
// is recovered from t as t[1:] when t starts with '~', else as t itself:
// distinct user keys get distinct t. And distinct (ns, t, kind) give distinct
// Redis keys: the namespace is what precedes the first '{' (less the ':'),
// the kind is told by the last byte ('}' for a value, 'e' for a lease, 's'
// for waiters), and t is what is left between "ns:{" and the kind's suffix.

// keyEscape is the byte that marks an escaped user key; see the key layout.
const keyEscape = '~'

// Key returns the Redis key of k's value.
func (s *Store) Key(k string) string { return s.redisKey(k, "}") }

func (s *Store) leaseKey(k string) string   { return s.redisKey(k, "}:lease") }
func (s *Store) waitersKey(k string) string { return s.redisKey(k, "}:waiters") }

// redisKey returns "ns:{" + t + suffix, with t the escaped k (one allocation).
func (s *Store) redisKey(k, suffix string) string {
	esc := ""
	if k == "" || k[0] == '}' || k[0] == keyEscape {
		esc = string(keyEscape)
	}
	return s.ns + ":{" + esc + k + suffix
}
