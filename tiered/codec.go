package tiered

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// A Codec turns values into the bytes stored in Redis and back. It must be
// safe for concurrent use. Unmarshal receives a pointer to the destination
// value.
//
// To plug in another encoding, implement the two methods; for example, with
// github.com/vmihailenco/msgpack/v5:
//
//	type Msgpack struct{}
//
//	func (Msgpack) Marshal(v any) ([]byte, error)   { return msgpack.Marshal(v) }
//	func (Msgpack) Unmarshal(b []byte, v any) error { return msgpack.Unmarshal(b, v) }
//
// A codec may be lossy: JSON turns invalid UTF-8 into U+FFFD and drops
// unexported fields. So that every node returns the same value for a key,
// a cache returns and keeps in L1 what the codec gives back from the bytes
// it stored, not what the loader or Set was given. That costs one
// Unmarshal per load and per Set. A codec for which Unmarshal(Marshal(v))
// always equals v may say so with a method
//
//	Lossless() bool
//
// returning true; the cache then keeps the value as given. Raw does.
//
// Changing the codec of a namespace makes the values already in Redis fail
// to decode; they are then counted as corrupt, deleted and reloaded. Change
// the namespace at the same time to avoid that burst.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the [Codec] of encoding/json, the default of every cache whose
// values are not []byte or string.
type JSON struct{}

// Marshal implements [Codec].
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements [Codec].
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Raw is the [Codec] of byte slices and strings: their bytes as they are,
// with no encoding. It is the default codec of a cache of []byte or string,
// which JSON would store as a base64 or quoted string (85 bytes in Redis
// for 64 raw). It accepts exactly []byte and string values (and pointers to
// them for Unmarshal); anything else is an error. It is lossless, so a
// cache that uses it keeps the caller's value in L1 as it is.
type Raw struct{}

// Lossless reports true: Raw gives back the bytes it was given.
func (Raw) Lossless() bool { return true }

// Marshal implements [Codec].
func (Raw) Marshal(v any) ([]byte, error) {
	switch x := v.(type) {
	case []byte:
		return x, nil
	case string:
		return []byte(x), nil
	}
	return nil, fmt.Errorf("the Raw codec takes []byte or string, not %T", v)
}

// Unmarshal implements [Codec]. It copies data: the caller may keep the
// result after data is reused.
func (Raw) Unmarshal(data []byte, v any) error {
	switch p := v.(type) {
	case *[]byte:
		*p = bytes.Clone(data)
		if *p == nil {
			*p = []byte{}
		}
		return nil
	case *string:
		*p = string(data)
		return nil
	}
	return fmt.Errorf("the Raw codec decodes into *[]byte or *string, not %T", v)
}
