package pubsub

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Message format, version 1:
//
//	magic 0x54 ('T') | version 1 | kind
//	uvarint len | node ID      (at most MaxNodeIDBytes)
//	uvarint len | namespace    (at most MaxNamespaceBytes)
//	uvarint n   | n × (uvarint len | key)   (n ≥ 1; n = 0 for Flush)
//
// The whole message is at most MaxMessageBytes. Messages never carry values:
// the worst a forged or garbled message can do is cause a miss.
const (
	messageMagic   = 'T'
	messageVersion = 1

	// MaxMessageBytes bounds one encoded message; [Encode] splits larger
	// key sets into several messages.
	MaxMessageBytes = 256 << 10
	// MaxNodeIDBytes bounds a node ID.
	MaxNodeIDBytes = 64
	// MaxNamespaceBytes bounds a namespace.
	MaxNamespaceBytes = 256
)

// Kind is what a message asks of its receivers.
type Kind byte

const (
	// Invalidate: drop the keys from L1; they were written or deleted.
	Invalidate Kind = 1
	// Wake: a lease on the keys ended (value filled or lease released);
	// nodes waiting for it should look in Redis again. L1 is not touched.
	Wake Kind = 2
	// Flush: the whole namespace was purged from Redis; drop all of its L1
	// entries. It carries no keys.
	Flush Kind = 3
)

func (k Kind) String() string {
	switch k {
	case Invalidate:
		return "invalidate"
	case Wake:
		return "wake"
	case Flush:
		return "flush"
	}
	return fmt.Sprintf("Kind(%d)", byte(k))
}

func (k Kind) known() bool { return k == Invalidate || k == Wake || k == Flush }

// ErrGarbled is wrapped by every decoding error.
var ErrGarbled = errors.New("pubsub: garbled message")

// ErrTooLarge is returned by Encode when a single key, with the header, does
// not fit in MaxMessageBytes, or the node ID or namespace exceeds its bound.
var ErrTooLarge = errors.New("pubsub: message field too large")

// Message is one announcement on the bus.
type Message struct {
	Kind      Kind
	NodeID    string
	Namespace string
	Keys      []string
}

func (m *Message) header() []byte {
	b := make([]byte, 0, 3+2*binary.MaxVarintLen16+len(m.NodeID)+len(m.Namespace))
	b = append(b, messageMagic, messageVersion, byte(m.Kind))
	b = binary.AppendUvarint(b, uint64(len(m.NodeID)))
	b = append(b, m.NodeID...)
	b = binary.AppendUvarint(b, uint64(len(m.Namespace)))
	return append(b, m.Namespace...)
}

// Encode returns m as one or more messages of at most MaxMessageBytes each,
// splitting Keys between them; each carries the same kind, node and
// namespace. It returns nil for a message without keys, except for a Flush,
// which is one message and carries none.
func Encode(m Message) ([][]byte, error) {
	if !m.Kind.known() {
		return nil, fmt.Errorf("pubsub: unknown kind %d", m.Kind)
	}
	if len(m.NodeID) > MaxNodeIDBytes || len(m.Namespace) > MaxNamespaceBytes {
		return nil, fmt.Errorf("%w: node ID %d bytes, namespace %d bytes", ErrTooLarge, len(m.NodeID), len(m.Namespace))
	}
	if m.Kind == Flush && len(m.Keys) > 0 {
		return nil, fmt.Errorf("pubsub: a flush carries no keys, got %d", len(m.Keys))
	}
	head := m.header()
	if m.Kind == Flush {
		return [][]byte{binary.AppendUvarint(head, 0)}, nil
	}
	if len(m.Keys) == 0 {
		return nil, nil
	}
	var out [][]byte
	for rest := m.Keys; len(rest) > 0; {
		// Find how many keys fit.
		size, n := len(head)+binary.MaxVarintLen32, 0
		for n < len(rest) {
			ks := binary.MaxVarintLen32 + len(rest[n])
			if size+ks > MaxMessageBytes {
				break
			}
			size += ks
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: key of %d bytes", ErrTooLarge, len(rest[0]))
		}
		b := make([]byte, 0, size)
		b = append(b, head...)
		b = binary.AppendUvarint(b, uint64(n))
		for _, k := range rest[:n] {
			b = binary.AppendUvarint(b, uint64(len(k)))
			b = append(b, k...)
		}
		out = append(out, b)
		rest = rest[n:]
	}
	return out, nil
}

// Decode parses one message. Its errors wrap [ErrGarbled]; it never panics.
func Decode(b []byte) (Message, error) {
	if len(b) > MaxMessageBytes {
		return Message{}, fmt.Errorf("%w: %d bytes", ErrGarbled, len(b))
	}
	if len(b) < 3 || b[0] != messageMagic {
		return Message{}, fmt.Errorf("%w: bad magic", ErrGarbled)
	}
	if b[1] != messageVersion {
		return Message{}, fmt.Errorf("%w: unknown version %d", ErrGarbled, b[1])
	}
	m := Message{Kind: Kind(b[2])}
	if !m.Kind.known() {
		return Message{}, fmt.Errorf("%w: unknown kind %d", ErrGarbled, b[2])
	}
	r := reader{b: b[3:]}
	m.NodeID = r.str(MaxNodeIDBytes)
	m.Namespace = r.str(MaxNamespaceBytes)
	n := r.uvarint()
	if r.err == nil && ((n == 0) != (m.Kind == Flush) || n > uint64(len(r.b))) {
		r.err = fmt.Errorf("%w: bad key count %d for %v", ErrGarbled, n, m.Kind)
	}
	if r.err == nil && n > 0 {
		m.Keys = make([]string, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			m.Keys = append(m.Keys, r.str(MaxMessageBytes))
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrGarbled, len(r.b))
	}
	if r.err != nil {
		return Message{}, r.err
	}
	return m, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad length", ErrGarbled)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str(limit int) string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(limit) || n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: field of %d bytes", ErrGarbled, n)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
