package l2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Envelope format, version 2. All integers are big-endian.
//
//	offset size field
//	0      1    magic 0xE7
//	1      1    format version (2)
//	2      1    flags (bit 0: negative result; other bits must be 0)
//	3      8    logical expiry, Unix milliseconds
//	11     8    fresh until (the refresh-ahead point), Unix milliseconds; 0: none
//	19     4    CRC-32C of the payload
//	23     n    payload (the Codec's bytes; empty for a negative result)
//
// Version 1, still decoded so that values written before the upgrade stay
// readable until they expire, had no fresh field: its CRC is at 11 and its
// payload at 15. Both versions keep the logical expiry at bytes 3..10,
// because the lease scripts read it there (scripts.go) without knowing the
// version.
const (
	envelopeMagic = 0xE7
	// envelopeVersion is the version AppendBinary writes.
	envelopeVersion = 2
	// HeaderSize is the size of an envelope, as AppendBinary writes it,
	// without its payload.
	HeaderSize = 23
	// headerSizeV1 is the header size of a version 1 envelope.
	headerSizeV1 = 15
	// maxMillis bounds both timestamps: larger ones are corrupt, not
	// dates (1<<62 ms is some 146 million years after 1970).
	maxMillis = 1 << 62
)

// Flag bits of an envelope.
const (
	// FlagNegative marks a cached "not found" result; its payload is empty.
	FlagNegative byte = 1 << 0
	knownFlags        = FlagNegative
)

// ErrCorrupt is wrapped by every decoding failure: bytes in Redis that are not
// a well-formed envelope of a known version, or whose payload the codec
// rejects.
var ErrCorrupt = errors.New("l2: corrupt value")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Envelope is a value as stored in Redis.
type Envelope struct {
	// Negative marks a cached "not found".
	Negative bool
	// Expiry is the logical expiry: from then on the value is expired for
	// every reader (see [Envelope.Expired]). Redis may keep the bytes
	// longer: the cache adds its MaxStale to the Redis TTL so that an
	// expired value can still be served when its loader fails (fail-safe).
	// The L1 TTL is never longer than what is left of Expiry. Stored at
	// millisecond precision.
	Expiry time.Time
	// Fresh is the refresh-ahead point: from then on, until Expiry, the
	// value is still served but due for a background reload (see
	// [Envelope.RefreshDue]). The zero time means no refresh-ahead. Stored
	// at millisecond precision; a non-zero Fresh at or before the Unix
	// epoch is stored as 1ms after it, which is as much in the past and
	// cannot be mistaken for "none".
	Fresh time.Time
	// Payload is the codec's encoding of the value. After Decode it aliases
	// the input.
	Payload []byte
}

// Expired reports whether e is past its logical expiry at now (now is at or
// after Expiry). An expired value must not be served as a hit; it may only
// stand in for a load that failed.
func (e Envelope) Expired(now time.Time) bool { return !now.Before(e.Expiry) }

// RefreshDue reports whether e has a refresh-ahead point and now is at or
// after it. It says nothing of expiry: a value can be due for a refresh and
// expired at once, and callers check [Envelope.Expired] first.
func (e Envelope) RefreshDue(now time.Time) bool {
	return !e.Fresh.IsZero() && !now.Before(e.Fresh)
}

// AppendBinary appends the encoding of e to b, always in the latest format
// version.
func (e Envelope) AppendBinary(b []byte) []byte {
	var flags byte
	if e.Negative {
		flags |= FlagNegative
	}
	var fresh uint64
	if !e.Fresh.IsZero() {
		fresh = uint64(max(e.Fresh.UnixMilli(), 1))
	}
	b = append(b, envelopeMagic, envelopeVersion, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Expiry.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, fresh)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(e.Payload, crcTable))
	return append(b, e.Payload...)
}

// DecodeEnvelope parses b, in format version 1 or 2. Its errors wrap
// [ErrCorrupt]. The returned payload aliases b.
func DecodeEnvelope(b []byte) (Envelope, error) {
	if len(b) < 2 {
		return Envelope{}, fmt.Errorf("%w: %d bytes, shorter than any header", ErrCorrupt, len(b))
	}
	if b[0] != envelopeMagic {
		return Envelope{}, fmt.Errorf("%w: bad magic byte 0x%02x", ErrCorrupt, b[0])
	}
	var size int
	switch b[1] {
	case 1:
		size = headerSizeV1
	case 2:
		size = HeaderSize
	default:
		return Envelope{}, fmt.Errorf("%w: unknown format version %d", ErrCorrupt, b[1])
	}
	if len(b) < size {
		return Envelope{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header of version %d", ErrCorrupt, len(b), size, b[1])
	}
	flags := b[2]
	if flags&^knownFlags != 0 {
		return Envelope{}, fmt.Errorf("%w: unknown flags 0x%02x", ErrCorrupt, flags)
	}
	expiry := binary.BigEndian.Uint64(b[3:11])
	if expiry > maxMillis {
		return Envelope{}, fmt.Errorf("%w: expiry out of range", ErrCorrupt)
	}
	var fresh uint64
	if b[1] >= 2 {
		fresh = binary.BigEndian.Uint64(b[11:19])
		if fresh > maxMillis {
			return Envelope{}, fmt.Errorf("%w: fresh time out of range", ErrCorrupt)
		}
	}
	sum := binary.BigEndian.Uint32(b[size-4 : size])
	payload := b[size:]
	if crc32.Checksum(payload, crcTable) != sum {
		return Envelope{}, fmt.Errorf("%w: payload checksum mismatch", ErrCorrupt)
	}
	e := Envelope{
		Negative: flags&FlagNegative != 0,
		Expiry:   time.UnixMilli(int64(expiry)),
		Payload:  payload,
	}
	if fresh != 0 {
		e.Fresh = time.UnixMilli(int64(fresh))
	}
	if e.Negative && len(payload) != 0 {
		return Envelope{}, fmt.Errorf("%w: negative entry with a payload", ErrCorrupt)
	}
	return e, nil
}
