package l2

import "encoding/json"

// A Codec turns values into bytes and back. It must be safe for concurrent
// use. Unmarshal receives a pointer to the destination value.
//
// To plug in another encoding, implement the two methods; for example, with
// github.com/vmihailenco/msgpack/v5:
//
//	type Msgpack struct{}
//
//	func (Msgpack) Marshal(v any) ([]byte, error)      { return msgpack.Marshal(v) }
//	func (Msgpack) Unmarshal(b []byte, v any) error    { return msgpack.Unmarshal(b, v) }
//
// Changing the codec of a namespace makes the values already in Redis fail to
// decode; they are then counted as corrupt, deleted and reloaded. Change the
// namespace at the same time to avoid that burst.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default [Codec], encoding/json.
type JSON struct{}

// Marshal implements [Codec].
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements [Codec].
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
