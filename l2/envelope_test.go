package l2

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"testing"
	"time"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  Envelope
	}{
		{"value", Envelope{Expiry: time.UnixMilli(1_700_000_000_123), Payload: []byte(`{"id":1}`)}},
		{"empty payload", Envelope{Expiry: time.UnixMilli(1_700_000_000_000), Payload: []byte{}}},
		{"nil payload", Envelope{Expiry: time.UnixMilli(1_700_000_000_000)}},
		{"negative", Envelope{Negative: true, Expiry: time.UnixMilli(1_700_000_000_000)}},
		{"binary payload", Envelope{Expiry: time.UnixMilli(42), Payload: []byte{0, 0xE7, 1, 0xff, 0}}},
		{"large payload", Envelope{Expiry: time.UnixMilli(42), Payload: bytes.Repeat([]byte{0xA5}, 1<<20)}},
		{"epoch", Envelope{Expiry: time.UnixMilli(0), Payload: []byte("x")}},
		{"latest expiry", Envelope{Expiry: time.UnixMilli(1 << 62), Payload: []byte("x")}},
		{"sub-millisecond expiry is truncated", Envelope{Expiry: time.Unix(1_700_000_000, 123_456_789), Payload: []byte("x")}},
		{"expiry in another zone", Envelope{Expiry: time.UnixMilli(1_700_000_000_000).In(time.FixedZone("X", 3600)), Payload: []byte("x")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			prefix := []byte("prefix")
			b := tc.env.AppendBinary(bytes.Clone(prefix))
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("AppendBinary clobbered the prefix: %q", b[:len(prefix)])
			}
			b = b[len(prefix):]
			if len(b) != HeaderSize+len(tc.env.Payload) {
				t.Fatalf("encoded %d bytes, want %d", len(b), HeaderSize+len(tc.env.Payload))
			}
			got, err := DecodeEnvelope(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Negative != tc.env.Negative || !bytes.Equal(got.Payload, tc.env.Payload) {
				t.Fatalf("decoded %+v, want %+v", got, tc.env)
			}
			if want := time.UnixMilli(tc.env.Expiry.UnixMilli()); !got.Expiry.Equal(want) {
				t.Fatalf("Expiry = %v, want %v", got.Expiry, want)
			}
			if re := got.AppendBinary(nil); !bytes.Equal(re, b) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", re, b)
			}
			// The payload aliases the input.
			if len(b) > HeaderSize {
				b[HeaderSize] ^= 0xff
				if got.Payload[0] != b[HeaderSize] {
					t.Fatal("Payload does not alias the input")
				}
			}
		})
	}
}

// TestEnvelopeLayout pins the version 1 format byte by byte; the CRC is the
// standard CRC-32C check value of "123456789".
func TestEnvelopeLayout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  Envelope
		want string // hex
	}{
		{"value", Envelope{Expiry: time.UnixMilli(0x0102030405060708), Payload: []byte("123456789")},
			"e7" + "01" + "00" + "0102030405060708" + "e3069283" + hex.EncodeToString([]byte("123456789"))},
		{"negative", Envelope{Negative: true, Expiry: time.UnixMilli(1000)},
			"e7" + "01" + "01" + "00000000000003e8" + "00000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := hex.EncodeToString(tc.env.AppendBinary(nil)); got != tc.want {
				t.Fatalf("AppendBinary =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// header returns a version 1 header for payload with the given fields.
func header(magic, version, flags byte, ms uint64, payload []byte) []byte {
	b := []byte{magic, version, flags}
	b = binary.BigEndian.AppendUint64(b, ms)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, crcTable))
	return append(b, payload...)
}

func TestDecodeEnvelopeCorrupt(t *testing.T) {
	t.Parallel()
	valid := Envelope{Expiry: time.UnixMilli(1_700_000_000_000), Payload: []byte("payload")}.AppendBinary(nil)
	flip := func(i int) []byte {
		b := bytes.Clone(valid)
		b[i] ^= 0x01
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"magic only", []byte{0xE7}},
		{"truncated header", valid[:HeaderSize-1]},
		{"bad magic", flip(0)},
		{"zero magic", header(0x00, 1, 0, 1, nil)},
		{"version 0", header(0xE7, 0, 0, 1, nil)},
		{"version 2", header(0xE7, 2, 0, 1, nil)},
		{"unknown flag 0x02", header(0xE7, 1, 0x02, 1, nil)},
		{"unknown flag 0x80", header(0xE7, 1, 0x80, 1, []byte("x"))},
		{"known and unknown flags", header(0xE7, 1, 0x03, 1, nil)},
		{"expiry out of range", header(0xE7, 1, 0, 1<<62+1, []byte("x"))},
		{"expiry all ones", header(0xE7, 1, 0, ^uint64(0), []byte("x"))},
		{"checksum byte flipped", flip(11)},
		{"payload byte flipped", flip(HeaderSize)},
		{"payload truncated", valid[:len(valid)-1]},
		{"payload extended", append(bytes.Clone(valid), 'x')},
		{"header of a value, payload missing", valid[:HeaderSize]},
		{"negative with a payload", header(0xE7, 1, FlagNegative, 1, []byte("x"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, err := DecodeEnvelope(tc.b)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeEnvelope(%x) = %+v, %v; want an error wrapping ErrCorrupt", tc.b, env, err)
			}
			if env.Negative || !env.Expiry.IsZero() || env.Payload != nil {
				t.Fatalf("DecodeEnvelope(%x) returned %+v with its error, want a zero Envelope", tc.b, env)
			}
		})
	}
}

// FuzzDecodeEnvelope: DecodeEnvelope never panics, fails only with
// ErrCorrupt, and whatever it accepts re-encodes to the same bytes.
// The seed corpus is in testdata/fuzz/FuzzDecodeEnvelope.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(Envelope{Expiry: time.UnixMilli(1_700_000_000_000), Payload: []byte(`{"id":1}`)}.AppendBinary(nil))
	f.Add(Envelope{Negative: true, Expiry: time.UnixMilli(1)}.AppendBinary(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		env, err := DecodeEnvelope(b)
		if !bytes.Equal(in, b) {
			t.Fatal("DecodeEnvelope modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if re := env.AppendBinary(nil); !bytes.Equal(re, b) {
			t.Fatalf("decoded %+v re-encodes to\n%x\nnot\n%x", env, re, b)
		}
		if env.Negative && len(env.Payload) != 0 {
			t.Fatal("accepted a negative entry with a payload")
		}
	})
}
