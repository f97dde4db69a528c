package httpcache

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// Response is a stored response: what the middleware keeps in the cache for
// a key. Values read from the cache are shared between requests and with
// L1: the middleware never mutates one, and copies Header before it serves
// it.
type Response struct {
	// Status is the status code, one of Options.Statuses.
	Status int
	// Header holds the stored headers: the handler's, less the hop-by-hop
	// ones, Set-Cookie (a response with one is never stored), Age and
	// X-Cache; with an ETag and a Date added when the handler set none.
	Header http.Header
	// Body is the whole body.
	Body []byte
	// Stored is when the handler produced the response; Age on a hit is
	// counted from it.
	Stored time.Time
}

// codecVersion is the first byte of every encoded Response.
const codecVersion = 1

// Codec is the [tiered.Codec] of a cache of *[Response]: a compact binary
// encoding (the body is stored as it is, not in base64 as JSON would).
// Pass it as tiered.Options.Codec, or use [NewCache], which does.
//
// Layout, after a version byte (1): the status and the Stored time in Unix
// milliseconds as uvarints, the number of header names, then for each name
// its length and bytes, its number of values, and each value's length and
// bytes; the rest is the body. Names are written in sorted order, so equal
// responses encode to equal bytes.
//
// [tiered.Codec]: https://pkg.go.dev/github.com/tieredcache/tiered/tiered#Codec
type Codec struct{}

// Marshal implements tiered.Codec for a *Response (or a Response).
func (Codec) Marshal(v any) ([]byte, error) {
	var r *Response
	switch x := v.(type) {
	case *Response:
		r = x
	case Response:
		r = &x
	default:
		return nil, fmt.Errorf("%w: %T", ErrCodecType, v)
	}
	if r == nil {
		return nil, fmt.Errorf("%w: nil *Response", ErrCodecType)
	}
	return appendResponse(nil, r), nil
}

// Unmarshal implements tiered.Codec into a **Response (or a *Response). The
// result does not share memory with data.
func (Codec) Unmarshal(data []byte, v any) error {
	r, err := decodeResponse(data)
	if err != nil {
		return err
	}
	switch p := v.(type) {
	case **Response:
		*p = r
	case *Response:
		*p = *r
	default:
		return fmt.Errorf("%w: %T", ErrCodecType, v)
	}
	return nil
}

func appendResponse(b []byte, r *Response) []byte {
	names := make([]string, 0, len(r.Header))
	size := 1 + 3*binary.MaxVarintLen64 + len(r.Body)
	for k, vs := range r.Header {
		names = append(names, k)
		size += len(k) + 2*binary.MaxVarintLen32
		for _, v := range vs {
			size += len(v) + binary.MaxVarintLen32
		}
	}
	slices.Sort(names)
	b = slices.Grow(b, size)
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(r.Status))
	var ms uint64
	if !r.Stored.IsZero() && r.Stored.UnixMilli() > 0 {
		ms = uint64(r.Stored.UnixMilli())
	}
	b = binary.AppendUvarint(b, ms)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, k := range names {
		b = appendString(b, k)
		vs := r.Header[k]
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return append(b, r.Body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// maxStatus bounds a decoded status: net/http accepts three digits.
const maxStatus = 999

// decoder reads an encoded Response; err is the first failure.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(max uint64, what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) { // overlong: one encoding per value
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
		return 0
	}
	if v > max {
		d.err = fmt.Errorf("%w: %s %d over %d", ErrCorrupt, what, v, max)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(what string) string {
	n := d.uvarint(uint64(len(d.b)), what+" length")
	if d.err == nil && n > uint64(len(d.b)) { // the length's own bytes are gone
		d.err = fmt.Errorf("%w: %s past the end", ErrCorrupt, what)
	}
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func decodeResponse(data []byte) (*Response, error) {
	if len(data) == 0 || data[0] != codecVersion {
		return nil, fmt.Errorf("%w: unknown version", ErrCorrupt)
	}
	d := decoder{b: data[1:]}
	r := &Response{Status: int(d.uvarint(maxStatus, "status"))}
	if ms := d.uvarint(1<<53, "stored time"); ms > 0 {
		r.Stored = time.UnixMilli(int64(ms))
	}
	// Every name takes at least two bytes (its length and its count of
	// values): a count over that cannot be honest, and must not allocate.
	n := d.uvarint(uint64(len(d.b)/2), "header count")
	if n > 0 {
		r.Header = make(http.Header, n)
	}
	prev := ""
	for i := range n {
		k := d.string("header name")
		if d.err == nil && (k == "" || (i > 0 && k <= prev)) {
			// Marshal writes names sorted: one encoding per response.
			d.err = fmt.Errorf("%w: header name %q empty or out of order", ErrCorrupt, k)
		}
		prev = k
		nv := d.uvarint(uint64(len(d.b)), "value count")
		if d.err == nil && nv == 0 {
			d.err = fmt.Errorf("%w: header %q without values", ErrCorrupt, k)
		}
		if d.err != nil {
			return nil, d.err
		}
		vs := make([]string, nv)
		for i := range vs {
			vs[i] = d.string("header value")
		}
		r.Header[k] = vs
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) > 0 {
		r.Body = slices.Clone(d.b)
	}
	return r, nil
}
