package l2

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
		{"fresh", Envelope{Expiry: time.UnixMilli(1_700_000_060_000), Fresh: time.UnixMilli(1_700_000_030_000), Payload: []byte("x")}},
		{"fresh after expiry", Envelope{Expiry: time.UnixMilli(1_700_000_000_000), Fresh: time.UnixMilli(1_700_000_000_001), Payload: []byte("x")}},
		{"fresh, negative", Envelope{Negative: true, Expiry: time.UnixMilli(1_700_000_000_000), Fresh: time.UnixMilli(1_699_999_999_000)}},
		{"latest fresh", Envelope{Expiry: time.UnixMilli(1 << 62), Fresh: time.UnixMilli(1 << 62), Payload: []byte("x")}},
		{"sub-millisecond fresh is truncated", Envelope{Expiry: time.UnixMilli(42), Fresh: time.Unix(1_700_000_000, 999_999), Payload: []byte("x")}},
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
			if tc.env.Fresh.IsZero() != got.Fresh.IsZero() {
				t.Fatalf("Fresh = %v, want %v", got.Fresh, tc.env.Fresh)
			}
			if want := time.UnixMilli(tc.env.Fresh.UnixMilli()); !tc.env.Fresh.IsZero() && !got.Fresh.Equal(want) {
				t.Fatalf("Fresh = %v, want %v", got.Fresh, want)
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

// TestEnvelopeLayout pins the version 2 format byte by byte; the CRC is the
// standard CRC-32C check value of "123456789".
func TestEnvelopeLayout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  Envelope
		want string // hex
	}{
		{"value", Envelope{Expiry: time.UnixMilli(0x0102030405060708), Payload: []byte("123456789")},
			"e7" + "02" + "00" + "0102030405060708" + "0000000000000000" + "e3069283" + hex.EncodeToString([]byte("123456789"))},
		{"negative", Envelope{Negative: true, Expiry: time.UnixMilli(1000)},
			"e7" + "02" + "01" + "00000000000003e8" + "0000000000000000" + "00000000"},
		{"fresh", Envelope{Expiry: time.UnixMilli(2000), Fresh: time.UnixMilli(0x1112131415161718), Payload: []byte("123456789")},
			"e7" + "02" + "00" + "00000000000007d0" + "1112131415161718" + "e3069283" + hex.EncodeToString([]byte("123456789"))},
		// The epoch is 0, which means "none": it is stored 1ms later.
		{"fresh at the epoch", Envelope{Expiry: time.UnixMilli(2000), Fresh: time.UnixMilli(0)},
			"e7" + "02" + "00" + "00000000000007d0" + "0000000000000001" + "00000000"},
		{"fresh before the epoch", Envelope{Expiry: time.UnixMilli(2000), Fresh: time.UnixMilli(-5000)},
			"e7" + "02" + "00" + "00000000000007d0" + "0000000000000001" + "00000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := hex.EncodeToString(tc.env.AppendBinary(nil)); got != tc.want {
				t.Fatalf("AppendBinary =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestDecodeEnvelopeV1: values written in version 1, before the fresh field
// existed, still decode, with no refresh-ahead point.
func TestDecodeEnvelopeV1(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		hex  string
		want Envelope
	}{
		{"value", "e7" + "01" + "00" + "0102030405060708" + "e3069283" + hex.EncodeToString([]byte("123456789")),
			Envelope{Expiry: time.UnixMilli(0x0102030405060708), Payload: []byte("123456789")}},
		{"negative", "e7" + "01" + "01" + "00000000000003e8" + "00000000",
			Envelope{Negative: true, Expiry: time.UnixMilli(1000), Payload: []byte{}}},
		{"empty payload", "e7" + "01" + "00" + "0000000000000000" + "00000000",
			Envelope{Expiry: time.UnixMilli(0), Payload: []byte{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := hex.DecodeString(tc.hex)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeEnvelope(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Negative != tc.want.Negative || !got.Expiry.Equal(tc.want.Expiry) || !got.Fresh.IsZero() ||
				!bytes.Equal(got.Payload, tc.want.Payload) {
				t.Fatalf("DecodeEnvelope = %+v, want %+v", got, tc.want)
			}
			// Re-encoding upgrades it: the same fields in version 2.
			again, err := DecodeEnvelope(got.AppendBinary(nil))
			if err != nil || again.Negative != got.Negative || !again.Expiry.Equal(got.Expiry) ||
				!again.Fresh.IsZero() || !bytes.Equal(again.Payload, got.Payload) {
				t.Fatalf("re-encoded as version 2 and decoded: %+v, %v; want %+v", again, err, got)
			}
		})
	}
}

func TestEnvelopeExpiredRefreshDue(t *testing.T) {
	t.Parallel()
	at := func(ms int64) time.Time { return time.UnixMilli(1_700_000_000_000 + ms) }
	for _, tc := range []struct {
		name                 string
		env                  Envelope
		now                  time.Time
		wantExpired, wantDue bool
	}{
		{"fresh, no refresh point", Envelope{Expiry: at(1000)}, at(0), false, false},
		{"at expiry", Envelope{Expiry: at(1000)}, at(1000), true, false},
		{"after expiry", Envelope{Expiry: at(1000)}, at(5000), true, false},
		{"a nanosecond before expiry", Envelope{Expiry: at(1000)}, at(1000).Add(-1), false, false},
		{"before the refresh point", Envelope{Expiry: at(1000), Fresh: at(500)}, at(499), false, false},
		{"at the refresh point", Envelope{Expiry: at(1000), Fresh: at(500)}, at(500), false, true},
		{"between refresh point and expiry", Envelope{Expiry: at(1000), Fresh: at(500)}, at(800), false, true},
		{"past both", Envelope{Expiry: at(1000), Fresh: at(500)}, at(1000), true, true},
		{"negative entry expires too", Envelope{Negative: true, Expiry: at(1000)}, at(1000), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.env.Expired(tc.now); got != tc.wantExpired {
				t.Errorf("Expired = %v, want %v", got, tc.wantExpired)
			}
			if got := tc.env.RefreshDue(tc.now); got != tc.wantDue {
				t.Errorf("RefreshDue = %v, want %v", got, tc.wantDue)
			}
		})
	}
}

// header returns an envelope of the given format version (1 or 2: the
// fresh field is written only for 2) with the given fields and payload.
func header(magic, version, flags byte, expiry, fresh uint64, payload []byte) []byte {
	b := []byte{magic, version, flags}
	b = binary.BigEndian.AppendUint64(b, expiry)
	if version == 2 {
		b = binary.BigEndian.AppendUint64(b, fresh)
	}
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, crcTable))
	return append(b, payload...)
}

func TestDecodeEnvelopeCorrupt(t *testing.T) {
	t.Parallel()
	valid := Envelope{Expiry: time.UnixMilli(1_700_000_000_000), Fresh: time.UnixMilli(1_699_999_999_000), Payload: []byte("payload")}.AppendBinary(nil)
	validV1 := header(0xE7, 1, 0, 1_700_000_000_000, 0, []byte("payload"))
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	relabel := func(b []byte, version byte) []byte {
		b = bytes.Clone(b)
		b[1] = version
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"magic only", []byte{0xE7}},
		{"magic and version only", []byte{0xE7, 2}},
		{"truncated header", valid[:HeaderSize-1]},
		{"truncated v1 header", validV1[:headerSizeV1-1]},
		{"bad magic", flip(valid, 0)},
		{"zero magic", header(0x00, 2, 0, 1, 0, nil)},
		{"version 0", header(0xE7, 0, 0, 1, 0, nil)},
		{"version 3", header(0xE7, 3, 0, 1, 0, nil)},
		{"version 255", header(0xE7, 255, 0, 1, 0, []byte("x"))},
		// A version 1 envelope relabelled 2 is 8 bytes short of a v2 header.
		{"v1 layout labelled version 2", relabel(header(0xE7, 1, 0, 1, 0, []byte("x")), 2)},
		{"v1 layout labelled version 2, long enough", relabel(header(0xE7, 1, 0, 1, 0, []byte("a payload of 16B")), 2)},
		{"v2 layout labelled version 1", relabel(valid, 1)},
		{"unknown flag 0x02", header(0xE7, 2, 0x02, 1, 0, nil)},
		{"unknown flag 0x80", header(0xE7, 2, 0x80, 1, 0, []byte("x"))},
		{"known and unknown flags", header(0xE7, 2, 0x03, 1, 0, nil)},
		{"v1, unknown flag", header(0xE7, 1, 0x02, 1, 0, nil)},
		{"expiry out of range", header(0xE7, 2, 0, 1<<62+1, 0, []byte("x"))},
		{"expiry all ones", header(0xE7, 2, 0, ^uint64(0), 0, []byte("x"))},
		{"v1, expiry out of range", header(0xE7, 1, 0, 1<<62+1, 0, []byte("x"))},
		{"fresh out of range", header(0xE7, 2, 0, 1, 1<<62+1, []byte("x"))},
		{"fresh all ones", header(0xE7, 2, 0, 1, ^uint64(0), []byte("x"))},
		{"checksum byte flipped", flip(valid, HeaderSize-4)},
		{"v1 checksum byte flipped", flip(validV1, headerSizeV1-4)},
		{"payload byte flipped", flip(valid, HeaderSize)},
		{"payload truncated", valid[:len(valid)-1]},
		{"payload extended", append(bytes.Clone(valid), 'x')},
		{"header of a value, payload missing", valid[:HeaderSize]},
		{"v1 header of a value, payload missing", validV1[:headerSizeV1]},
		{"negative with a payload", header(0xE7, 2, FlagNegative, 1, 0, []byte("x"))},
		{"v1, negative with a payload", header(0xE7, 1, FlagNegative, 1, 0, []byte("x"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, err := DecodeEnvelope(tc.b)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeEnvelope(%x) = %+v, %v; want an error wrapping ErrCorrupt", tc.b, env, err)
			}
			if env.Negative || !env.Expiry.IsZero() || !env.Fresh.IsZero() || env.Payload != nil {
				t.Fatalf("DecodeEnvelope(%x) returned %+v with its error, want a zero Envelope", tc.b, env)
			}
		})
	}
}

// FuzzDecodeEnvelope: DecodeEnvelope never panics, fails only with
// ErrCorrupt, and whatever it accepts re-encodes to the same bytes, but in
// version 2: a version 1 envelope gains a zero fresh field.
// The seed corpus is in testdata/fuzz/FuzzDecodeEnvelope.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(Envelope{Expiry: time.UnixMilli(1_700_000_000_000), Payload: []byte(`{"id":1}`)}.AppendBinary(nil))
	f.Add(Envelope{Negative: true, Expiry: time.UnixMilli(1)}.AppendBinary(nil))
	f.Add(Envelope{Expiry: time.UnixMilli(1_700_000_000_000), Fresh: time.UnixMilli(1_699_999_000_000), Payload: []byte("x")}.AppendBinary(nil))
	f.Add(header(0xE7, 1, 0, 1_700_000_000_000, 0, []byte(`{"id":1}`)))
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
		want := b
		if b[1] == 1 {
			want = slices.Concat([]byte{b[0], 2}, b[2:11], make([]byte, 8), b[11:])
			if !env.Fresh.IsZero() {
				t.Fatalf("version 1 decoded with Fresh %v", env.Fresh)
			}
		}
		if re := env.AppendBinary(nil); !bytes.Equal(re, want) {
			t.Fatalf("decoded %+v re-encodes to\n%x\nnot\n%x", env, re, want)
		}
		if env.Negative && len(env.Payload) != 0 {
			t.Fatal("accepted a negative entry with a payload")
		}
	})
}

// TestFuzzCorpusNames holds the seed corpus to its names: a seed named
// valid_* decodes, one named corrupt_* fails with ErrCorrupt, and the
// version its name gives (v1_, v2_) is the one in its bytes.
func TestFuzzCorpusNames(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeEnvelope")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatalf("no seeds in %s", dir)
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			t.Parallel()
			raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			// go test fuzz v1, then one line: []byte("...").
			header, body, ok := strings.Cut(strings.TrimSpace(string(raw)), "\n")
			lit, ok2 := strings.CutPrefix(body, "[]byte(")
			lit, ok3 := strings.CutSuffix(lit, ")")
			s, qerr := strconv.Unquote(lit)
			if header != "go test fuzz v1" || !ok || !ok2 || !ok3 || qerr != nil {
				t.Fatalf("not a one-[]byte corpus file: %q", raw)
			}
			b := []byte(s)
			_, err = DecodeEnvelope(b)
			switch {
			case strings.HasPrefix(e.Name(), "valid_"):
				if err != nil {
					t.Fatalf("a valid seed fails: %v", err)
				}
			case strings.HasPrefix(e.Name(), "corrupt_"):
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("a corrupt seed decodes: %v", err)
				}
			default:
				t.Fatal("seed name starts with neither valid_ nor corrupt_")
			}
			for prefix, version := range map[string]byte{"valid_v1_": 1, "valid_v2_": 2, "corrupt_v1_": 1, "corrupt_v2_": 2} {
				if strings.HasPrefix(e.Name(), prefix) && (len(b) < 2 || b[1] != version) {
					t.Fatalf("named version %d, has %x", version, b[:min(len(b), 2)])
				}
			}
		})
	}
}
