package httpcache

import (
	"net/http"
	"time"
)

// recorder is the ResponseWriter of a handler run inside a loader. It
// decides at WriteHeader whether the response may be stored. If it may, it
// buffers the body up to Options.MaxBodyBytes; if the body grows past
// that, or the response may not be stored, it streams: it sends the status,
// the headers and what it buffered to out (the leading request's client)
// and passes the rest of the body through as it comes, so a body is never
// buffered whole twice. With no out (a background refresh, or a request
// that left), streaming discards the body.
type recorder struct {
	m      *Middleware
	out    http.ResponseWriter // the leading request's writer, or nil
	header http.Header         // what the handler sees as Header()

	wroteHeader bool
	status      int
	sent        http.Header   // header as it was at WriteHeader
	ttl         time.Duration // TTL of a storable response; 0: the cache's
	streaming   bool          // not stored: passing through to out
	buf         []byte
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if w.wroteHeader || code < 200 { // 1xx are informational: not recorded
		return
	}
	w.wroteHeader, w.status = true, code
	w.sent = w.header.Clone()
	var ok bool
	if w.ttl, ok = w.m.storable(code, w.sent); !ok {
		w.stream()
	}
}

func (w *recorder) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		// As net/http does: sniff the type of a body that has none.
		if _, set := w.header["Content-Type"]; !set && len(p) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(p))
		}
		w.WriteHeader(http.StatusOK)
	}
	if !w.streaming && len(w.buf)+len(p) > w.m.o.MaxBodyBytes {
		w.stream()
	}
	if w.streaming {
		if w.out == nil {
			return len(p), nil
		}
		return w.out.Write(p)
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// Flush flushes a streaming response; a buffered one is not sent yet.
func (w *recorder) Flush() {
	if w.streaming && w.out != nil {
		if f, ok := w.out.(http.Flusher); ok {
			f.Flush()
		}
	}
}

// stream switches to passing the response through to out.
func (w *recorder) stream() {
	w.streaming = true
	buf := w.buf
	w.buf = nil
	if w.out == nil {
		return
	}
	h := w.out.Header()
	for k, vs := range w.sent {
		h[k] = vs
	}
	if !w.m.o.DisableXCache {
		h.Set(XCacheHeader, Bypass)
	}
	w.out.WriteHeader(w.status)
	if len(buf) > 0 {
		_, _ = w.out.Write(buf)
	}
}

// finish ends the handler's run: it returns the response to store, or
// nil if it may not be stored (it was streamed).
func (w *recorder) finish() *Response {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.streaming {
		return nil
	}
	h := storedHeader(w.sent)
	if h.Get("ETag") == "" && (w.status == http.StatusOK || w.status == http.StatusNonAuthoritativeInfo) {
		h.Set("ETag", strongETag(w.buf))
	}
	now := w.m.o.Now()
	if h.Get("Date") == "" {
		h.Set("Date", now.UTC().Format(http.TimeFormat))
	}
	return &Response{Status: w.status, Header: h, Body: w.buf, Stored: now}
}
