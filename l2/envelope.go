package l2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Envelope format, version 1. All integers are big-endian.
//
//	offset size field
//	0      1    magic 0xE7
//	1      1    format version (1)
//	2      1    flags (bit 0: negative result; other bits must be 0)
//	3      8    logical expiry, Unix milliseconds
//	11     4    CRC-32C of the payload
//	15     n    payload (the Codec's bytes; empty for a negative result)
const (
	envelopeMagic   = 0xE7
	envelopeVersion = 1
	// HeaderSize is the size of an envelope without its payload.
	HeaderSize = 15
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
	// Expiry is the logical expiry: when the Redis TTL set with the value
	// runs out. The L1 TTL is never longer than what is left of it.
	Expiry time.Time
	// Payload is the codec's encoding of the value. After Decode it aliases
	// the input.
	Payload []byte
}

// AppendBinary appends the encoding of e to b.
func (e Envelope) AppendBinary(b []byte) []byte {
	var flags byte
	if e.Negative {
		flags |= FlagNegative
	}
	b = append(b, envelopeMagic, envelopeVersion, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Expiry.UnixMilli()))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(e.Payload, crcTable))
	return append(b, e.Payload...)
}

// DecodeEnvelope parses b. Its errors wrap [ErrCorrupt]. The returned
// payload aliases b.
func DecodeEnvelope(b []byte) (Envelope, error) {
	if len(b) < HeaderSize {
		return Envelope{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorrupt, len(b), HeaderSize)
	}
	if b[0] != envelopeMagic {
		return Envelope{}, fmt.Errorf("%w: bad magic byte 0x%02x", ErrCorrupt, b[0])
	}
	if b[1] != envelopeVersion {
		return Envelope{}, fmt.Errorf("%w: unknown format version %d", ErrCorrupt, b[1])
	}
	flags := b[2]
	if flags&^knownFlags != 0 {
		return Envelope{}, fmt.Errorf("%w: unknown flags 0x%02x", ErrCorrupt, flags)
	}
	ms := binary.BigEndian.Uint64(b[3:11])
	if ms > 1<<62 {
		return Envelope{}, fmt.Errorf("%w: expiry out of range", ErrCorrupt)
	}
	sum := binary.BigEndian.Uint32(b[11:15])
	payload := b[HeaderSize:]
	if crc32.Checksum(payload, crcTable) != sum {
		return Envelope{}, fmt.Errorf("%w: payload checksum mismatch", ErrCorrupt)
	}
	e := Envelope{
		Negative: flags&FlagNegative != 0,
		Expiry:   time.UnixMilli(int64(ms)),
		Payload:  payload,
	}
	if e.Negative && len(payload) != 0 {
		return Envelope{}, fmt.Errorf("%w: negative entry with a payload", ErrCorrupt)
	}
	return e, nil
}
