package pubsub

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestKindString(t *testing.T) {
	t.Parallel()
	for k, want := range map[Kind]string{Invalidate: "invalidate", Wake: "wake", Flush: "flush", 0: "Kind(0)", 4: "Kind(4)", 255: "Kind(255)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", byte(k), got, want)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		m    Message
	}{
		{"invalidate one key", Message{Kind: Invalidate, NodeID: "node-1", Namespace: "products", Keys: []string{"42"}}},
		{"wake", Message{Kind: Wake, NodeID: "node-1", Namespace: "products", Keys: []string{"42"}}},
		{"several keys, order kept", Message{Kind: Invalidate, NodeID: "n", Namespace: "ns", Keys: []string{"b", "a", "c", "a"}}},
		{"empty key", Message{Kind: Invalidate, NodeID: "n", Namespace: "ns", Keys: []string{""}}},
		{"empty node ID and namespace", Message{Kind: Invalidate, Keys: []string{"k"}}},
		{"binary and unicode", Message{Kind: Wake, NodeID: "\x00\xff", Namespace: "ключ", Keys: []string{"\x00", "T\x01\x01", "ключ"}}},
		{"longest node ID and namespace", Message{Kind: Invalidate,
			NodeID: strings.Repeat("n", MaxNodeIDBytes), Namespace: strings.Repeat("s", MaxNamespaceBytes), Keys: []string{"k"}}},
		{"key with a two-byte length", Message{Kind: Invalidate, NodeID: "n", Namespace: "ns", Keys: []string{strings.Repeat("k", 300)}}},
		{"1000 keys", Message{Kind: Invalidate, NodeID: "n", Namespace: "ns", Keys: numberedKeys(1000, "key-")}},
		{"flush", Message{Kind: Flush, NodeID: "n", Namespace: "ns"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := Encode(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != 1 {
				t.Fatalf("Encode returned %d messages, want 1", len(out))
			}
			got, err := Decode(out[0])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.m) {
				t.Fatalf("Decode(Encode(m)) = %+v, want %+v", got, tc.m)
			}
		})
	}
}

func numberedKeys(n int, prefix string) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

// TestEncodeLayout pins the version 1 format byte by byte.
func TestEncodeLayout(t *testing.T) {
	t.Parallel()
	out, err := Encode(Message{Kind: Wake, NodeID: "n1", Namespace: "ns", Keys: []string{"a", "bc"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{'T', 1, 2, 2, 'n', '1', 2, 'n', 's', 2, 1, 'a', 2, 'b', 'c'}
	if len(out) != 1 || !bytes.Equal(out[0], want) {
		t.Fatalf("Encode = %q, want [%q]", out, want)
	}
}

// TestEncodeSplits: a key set too large for one message is split into
// several, each within MaxMessageBytes, which together carry every key once,
// in order.
func TestEncodeSplits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		keys    []string
		minMsgs int
	}{
		{"many small keys", numberedKeys(100_000, "key-"), 3},
		{"half-limit keys", []string{
			strings.Repeat("a", MaxMessageBytes/2), strings.Repeat("b", MaxMessageBytes/2),
			strings.Repeat("c", MaxMessageBytes/2), "d",
		}, 3},
		{"one large key among small ones", append(numberedKeys(10, "k"), strings.Repeat("x", MaxMessageBytes-64)), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := Message{Kind: Invalidate, NodeID: "node", Namespace: "ns", Keys: tc.keys}
			out, err := Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) < tc.minMsgs {
				t.Fatalf("Encode returned %d messages, want at least %d", len(out), tc.minMsgs)
			}
			var keys []string
			total := 0
			for i, b := range out {
				if len(b) > MaxMessageBytes {
					t.Fatalf("message %d is %d bytes, more than MaxMessageBytes", i, len(b))
				}
				total += len(b)
				got, err := Decode(b)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if got.Kind != m.Kind || got.NodeID != m.NodeID || got.Namespace != m.Namespace || len(got.Keys) == 0 {
					t.Fatalf("message %d = %v/%q/%q with %d keys", i, got.Kind, got.NodeID, got.Namespace, len(got.Keys))
				}
				keys = append(keys, got.Keys...)
			}
			if !slices.Equal(keys, tc.keys) {
				t.Fatalf("the messages carry %d keys, not the %d given in order", len(keys), len(tc.keys))
			}
			// Not wasteful: no more messages than twice what the bytes need.
			if need := (total + MaxMessageBytes - 1) / MaxMessageBytes; len(out) > 2*need+1 {
				t.Fatalf("%d messages for %d bytes", len(out), total)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("k", MaxMessageBytes)
	for _, tc := range []struct {
		name    string
		m       Message
		wantErr error // nil: no error and no messages
	}{
		{"no keys", Message{Kind: Invalidate, NodeID: "n", Namespace: "ns"}, nil},
		{"empty key slice", Message{Kind: Invalidate, NodeID: "n", Namespace: "ns", Keys: []string{}}, nil},
		{"kind 0", Message{Kind: 0, NodeID: "n", Namespace: "ns", Keys: []string{"k"}}, errAny},
		{"kind 4", Message{Kind: 4, NodeID: "n", Namespace: "ns", Keys: []string{"k"}}, errAny},
		{"flush with keys", Message{Kind: Flush, NodeID: "n", Namespace: "ns", Keys: []string{"k"}}, errAny},
		{"node ID too long", Message{Kind: Invalidate, NodeID: strings.Repeat("n", MaxNodeIDBytes+1), Namespace: "ns", Keys: []string{"k"}}, ErrTooLarge},
		{"namespace too long", Message{Kind: Invalidate, NodeID: "n", Namespace: strings.Repeat("s", MaxNamespaceBytes+1), Keys: []string{"k"}}, ErrTooLarge},
		{"key too large", Message{Kind: Invalidate, NodeID: "n", Namespace: "ns", Keys: []string{huge}}, ErrTooLarge},
		{"key too large after good ones", Message{Kind: Wake, NodeID: "n", Namespace: "ns", Keys: append(numberedKeys(5000, "k"), huge)}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := Encode(tc.m)
			if out != nil {
				t.Errorf("Encode returned %d messages, want none", len(out))
			}
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("err = %v, want nil", err)
			case tc.wantErr == errAny && err == nil:
				t.Fatal("Encode succeeded, want an error")
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "pubsub: ") {
				t.Fatalf("error %q lacks the pubsub: prefix", err)
			}
		})
	}
}

// errAny in a test table stands for "any error".
var errAny = errors.New("any error")

// raw builds a message byte by byte: a header, then fields each written as
// a uvarint length and the bytes, or as raw bytes when given as []byte.
func raw(magic, version, kind byte, parts ...any) []byte {
	b := []byte{magic, version, kind}
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = binary.AppendUvarint(b, uint64(len(p)))
			b = append(b, p...)
		case int:
			b = binary.AppendUvarint(b, uint64(p))
		case []byte:
			b = append(b, p...)
		}
	}
	return b
}

func TestDecodeGarbled(t *testing.T) {
	t.Parallel()
	valid := raw('T', 1, 1, "node", "ns", 2, "a", "b")
	if _, err := Decode(valid); err != nil {
		t.Fatalf("the base case does not decode: %v", err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"magic only", []byte{'T'}},
		{"header only", []byte{'T', 1, 1}},
		{"bad magic", raw('X', 1, 1, "node", "ns", 1, "a")},
		{"version 0", raw('T', 0, 1, "node", "ns", 1, "a")},
		{"version 2", raw('T', 2, 1, "node", "ns", 1, "a")},
		{"kind 0", raw('T', 1, 0, "node", "ns", 1, "a")},
		{"flush with a key", raw('T', 1, 3, "node", "ns", 1, "a")},
		{"kind 4", raw('T', 1, 4, "node", "ns", 1, "a")},
		{"invalidate without keys", raw('T', 1, 1, "node", "ns", 0)},
		{"node ID too long", raw('T', 1, 1, strings.Repeat("n", MaxNodeIDBytes+1), "ns", 1, "a")},
		{"namespace too long", raw('T', 1, 1, "node", strings.Repeat("s", MaxNamespaceBytes+1), 1, "a")},
		{"node ID length past the end", raw('T', 1, 1, 10, []byte("node"))},
		{"no namespace", raw('T', 1, 1, "node")},
		{"no key count", raw('T', 1, 1, "node", "ns")},
		{"zero keys", raw('T', 1, 1, "node", "ns", 0)},
		{"more keys than bytes", raw('T', 1, 1, "node", "ns", 3, "a")},
		{"huge key count", raw('T', 1, 1, "node", "ns", 1<<62, "a")},
		{"key length past the end", raw('T', 1, 1, "node", "ns", 1, 5, []byte("ab"))},
		{"missing last key", raw('T', 1, 1, "node", "ns", 2, "a")},
		{"trailing bytes", append(bytes.Clone(valid), 0)},
		{"truncated length varint", raw('T', 1, 1, []byte{0x80})},
		{"overlong varint", raw('T', 1, 1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})},
		{"longer than MaxMessageBytes", raw('T', 1, 1, "node", "ns", 1, strings.Repeat("k", MaxMessageBytes))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := Decode(tc.b)
			if !errors.Is(err, ErrGarbled) {
				t.Fatalf("Decode(%.60q) = %+v, %v; want an error wrapping ErrGarbled", tc.b, m, err)
			}
			if !reflect.DeepEqual(m, Message{}) {
				t.Fatalf("Decode returned %+v with its error, want a zero Message", m)
			}
		})
	}
}

// encodedSize is the size of m in one message with minimal uvarints.
func encodedSize(m Message) int {
	n := 3 + uvarintLen(len(m.NodeID)) + len(m.NodeID) + uvarintLen(len(m.Namespace)) + len(m.Namespace) + uvarintLen(len(m.Keys))
	for _, k := range m.Keys {
		n += uvarintLen(len(k)) + len(k)
	}
	return n
}

func uvarintLen(n int) int { return len(binary.AppendUvarint(nil, uint64(n))) }

// FuzzDecode: Decode never panics and fails only with ErrGarbled; what it
// accepts, Encode turns back into messages that decode to the same kind,
// node, namespace and keys; and when the input is in the canonical form
// Encode writes (minimal uvarints, and small enough that Encode's
// conservative size estimate does not split it), re-encoding gives the
// input's bytes exactly.
//
// Decode is more lenient than Encode in two harmless ways, which is why the
// byte-for-byte check is limited to canonical inputs: it accepts non-minimal
// uvarints (0x80 0x00 for 0), and a message near MaxMessageBytes that Encode,
// which reserves 5 bytes for every length, would have split in two.
//
// The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		{Kind: Invalidate, NodeID: "node-1", Namespace: "products", Keys: []string{"42"}},
		{Kind: Wake, NodeID: "n", Namespace: "ns", Keys: []string{"a", "", "c"}},
	} {
		out, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(out[0])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		m, err := Decode(b)
		if !bytes.Equal(in, b) {
			t.Fatal("Decode modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrGarbled) {
				t.Fatalf("error %v does not wrap ErrGarbled", err)
			}
			return
		}
		out, err := Encode(m)
		if err != nil {
			t.Fatalf("Decode accepted %+v, which Encode rejects: %v", m, err)
		}
		var keys []string
		for _, part := range out {
			if len(part) > MaxMessageBytes {
				t.Fatalf("re-encoded message of %d bytes", len(part))
			}
			pm, err := Decode(part)
			if err != nil {
				t.Fatalf("re-encoded message does not decode: %v", err)
			}
			if pm.Kind != m.Kind || pm.NodeID != m.NodeID || pm.Namespace != m.Namespace {
				t.Fatalf("re-encoded header %v/%q/%q, want %v/%q/%q", pm.Kind, pm.NodeID, pm.Namespace, m.Kind, m.NodeID, m.Namespace)
			}
			keys = append(keys, pm.Keys...)
		}
		if !slices.Equal(keys, m.Keys) {
			t.Fatalf("re-encoded keys %q, want %q", keys, m.Keys)
		}
		canonical := len(b) == encodedSize(m)
		if canonical && len(out) == 1 && !bytes.Equal(out[0], b) {
			t.Fatalf("canonical input re-encodes to different bytes:\n got %x\nwant %x", out[0], b)
		}
		// Encode's estimate exceeds the real size by at most 4 bytes for the
		// key count and 4 for each key length.
		if canonical && len(out) != 1 && len(b)+4+4*len(m.Keys) <= MaxMessageBytes {
			t.Fatalf("canonical input of %d bytes re-encoded into %d messages", len(b), len(out))
		}
	})
}
