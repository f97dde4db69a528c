package httpcache

import (
	"bytes"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

var _ tiered.Codec = Codec{}

func sampleResponses() []*Response {
	return []*Response{
		{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "Etag": {`"abc"`}, "Vary": {"Accept", "Accept-Language"}},
			Body: []byte(`{"id":42}`), Stored: time.UnixMilli(1_700_000_000_123)},
		{Status: 204},
		{Status: 301, Header: http.Header{"Location": {"/new"}}, Stored: time.UnixMilli(1)},
		{Status: 404, Body: []byte{0, 1, 2, 0xff}},
	}
}

// TestCodecRoundTrip: Unmarshal(Marshal(r)) == r, into **Response and
// *Response, and the encoding is the body plus a few bytes.
func TestCodecRoundTrip(t *testing.T) {
	for i, r := range sampleResponses() {
		b, err := Codec{}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var p *Response
		if err := (Codec{}).Unmarshal(b, &p); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(p, r) {
			t.Fatalf("%d: %+v, want %+v", i, p, r)
		}
		var v Response
		if err := (Codec{}).Unmarshal(b, &v); err != nil || !reflect.DeepEqual(&v, r) {
			t.Fatalf("%d: into *Response: %+v, %v", i, v, err)
		}
	}
	body := bytes.Repeat([]byte("x"), 1000)
	b, _ := Codec{}.Marshal(&Response{Status: 200, Body: body, Stored: time.Now()})
	if over := len(b) - len(body); over > 12 {
		t.Fatalf("%d bytes of overhead for a response without headers", over)
	}
}

func TestCodecErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version", []byte{2, 200, 1}},
		{"truncated status", []byte{1, 0xc8}},
		{"status too large", []byte{1, 0xe8, 0x07, 0, 0}},
		{"header count over the bytes", []byte{1, 200, 1, 0, 10, 1, 'a'}},
		{"empty name", []byte{1, 200, 1, 0, 1, 0, 1, 0}},
		{"no values", []byte{1, 200, 1, 0, 1, 1, 'A', 0}},
		{"out of order", []byte{1, 200, 1, 0, 2, 1, 'B', 1, 0, 1, 'A', 1, 0}},
		{"value past the end", []byte{1, 200, 1, 0, 1, 1, 'A', 1, 5, 'x'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p *Response
			if err := (Codec{}).Unmarshal(tc.b, &p); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
		})
	}
	if _, err := (Codec{}).Marshal("text"); !errors.Is(err, ErrCodecType) {
		t.Fatalf("Marshal of a string: %v", err)
	}
	if err := (Codec{}).Unmarshal([]byte{1, 200, 1, 0, 0}, new(string)); !errors.Is(err, ErrCodecType) {
		t.Fatalf("Unmarshal into a string: %v", err)
	}
}

// FuzzDecodeResponse: decoding never panics nor allocates past its input,
// fails only with ErrCorrupt, and what decodes re-encodes to the same bytes
// (one encoding per response).
func FuzzDecodeResponse(f *testing.F) {
	for _, r := range sampleResponses() {
		b, _ := Codec{}.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 200, 1, 0, 2, 1, 'B', 1, 0, 1, 'A', 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		r, err := decodeResponse(b)
		if !bytes.Equal(in, b) {
			t.Fatal("decode modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if re := appendResponse(nil, r); !bytes.Equal(re, b) {
			t.Fatalf("decoded %+v re-encodes to\n%x\nnot\n%x", r, re, b)
		}
		if len(r.Body) > 0 && len(b) > 0 && &r.Body[0] == &b[len(b)-len(r.Body)] {
			t.Fatal("the body shares the input's memory")
		}
	})
}
