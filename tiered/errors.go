package tiered

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tieredcache/tiered/l2"
)

// Errors returned by a [Cache]; check them with errors.Is.
var (
	// ErrNotFound is returned by Get on a miss, and by GetOrLoad when the
	// loader returned it (or a cached negative result says so). A loader
	// returns ErrNotFound (or an error wrapping it) to have "not found"
	// cached for Options.NegativeTTL.
	ErrNotFound = errors.New("tiered: not found")

	// ErrUnavailable wraps a Redis failure: a network error, a timeout, an
	// error reply. GetOrLoad never returns it for a read (it falls through
	// to the loader); Get, Set and Delete do.
	ErrUnavailable = errors.New("tiered: redis unavailable")

	// ErrQueued is wrapped, with ErrUnavailable and the cause, by the
	// error of a Set or Delete that could not finish within its context
	// and Options.WriteTimeout: the write may or may not have reached
	// Redis, and the invalidation of its keys is queued in the bus's
	// outbox, which delivers it as soon as Redis answers. Until then this
	// node serves those keys from neither L1 nor Redis. See docs/consistency.md.
	ErrQueued = errors.New("tiered: invalidation queued")

	// ErrKeyEmpty rejects an empty key. Nothing is read or written.
	ErrKeyEmpty = errors.New("tiered: empty key")

	// ErrKeyTooLong rejects a key over Options.MaxKeyBytes. Nothing is read
	// or written.
	ErrKeyTooLong = errors.New("tiered: key too long")

	// ErrKeyReserved rejects a key that starts with the byte 0x00, which
	// marks the keys of a Scope: a shared key can never be mistaken for a
	// scoped one. Nothing is read or written.
	ErrKeyReserved = errors.New("tiered: key starts with 0x00, reserved for scoped keys")

	// ErrValueTooLarge rejects a value whose encoding is over
	// Options.MaxValueBytes. Nothing is written.
	ErrValueTooLarge = errors.New("tiered: value too large")

	// ErrInvalidTTL rejects a per-entry TTL that is not > 0 and at most
	// Options.MaxTTL. Nothing is written.
	ErrInvalidTTL = errors.New("tiered: invalid TTL")

	// ErrEncode wraps a Codec failure to encode a value. Nothing is written.
	ErrEncode = errors.New("tiered: cannot encode value")

	// ErrLoaderPanic is wrapped by the *PanicError every waiter of a load
	// gets when the loader panicked.
	ErrLoaderPanic = errors.New("tiered: loader panicked")

	// ErrLoadTimeout is wrapped by the error of a load that did not finish
	// within Options.LoadTimeout, beside the loader's own error (often
	// context.DeadlineExceeded). It tells the cache's deadline from the
	// caller's own. A loader that ignores its context is not waited for
	// past LoadTimeout: its callers get this error at the deadline.
	ErrLoadTimeout = errors.New("tiered: load timed out")

	// ErrNilLoader is returned by GetOrLoad and GetMany called with a nil
	// loader, whether or not L1 holds the key.
	ErrNilLoader = errors.New("tiered: nil loader")

	// ErrSoftTimeout is wrapped by ReadInfo.StaleCause when an expired
	// value was served because its load ran past Options.SoftTimeout. It
	// is never returned by a read.
	ErrSoftTimeout = errors.New("tiered: load ran past the soft timeout")

	// ErrPassThrough, returned by a loader (or wrapped in its error), hands
	// every caller of the flight that error at once, as a message rather
	// than a failure: it is not counted in Stats.LoadErrors, fail-safe does
	// not answer it with an expired value, and nothing is cached. A loader
	// returns it when what it produced must not be shared with the other
	// callers of the key (an HTTP response with Set-Cookie): each caller
	// then does its own work. Package httpcache uses it.
	ErrPassThrough = errors.New("tiered: result not shared")

	// ErrInvalidOptions is wrapped by the errors of New.
	ErrInvalidOptions = errors.New("tiered: invalid options")

	// ErrClosed is returned by every method of a closed Cache (and by
	// Bus.WaitHealthy on a closed Bus).
	ErrClosed = errors.New("tiered: closed")

	// ErrBusInUse is returned by Bus.Close while a cache uses the bus.
	ErrBusInUse = errors.New("tiered: bus in use")
)

// chain is an error of this package around a cause from a building block
// (l2, pubsub, l1) or from tiered itself. errors.Is matches each of its
// kinds and everything the cause wraps, and its message names the package
// once: "tiered: invalidation queued: redis unavailable: set script: i/o
// timeout", not "tiered: invalidation queued: tiered: redis unavailable:
// l2: redis unavailable: set script: i/o timeout".
type chain struct {
	kinds []error // tiered sentinels, outermost first
	cause error
}

// wrap returns cause wrapped in kinds, the sentinels of this package that
// say what failed, outermost first.
func wrap(cause error, kinds ...error) error { return &chain{kinds: kinds, cause: cause} }

func (e *chain) Error() string {
	var b strings.Builder
	for i, k := range e.kinds {
		if i > 0 {
			b.WriteString(": ")
		}
		b.WriteString(unprefixed(k.Error(), i > 0))
	}
	b.WriteString(": ")
	b.WriteString(unprefixed(e.cause.Error(), true))
	return b.String()
}

// Unwrap returns the kinds and the cause.
func (e *chain) Unwrap() []error { return append(e.kinds[:len(e.kinds):len(e.kinds)], e.cause) }

// prefixes are what unprefixed strips, longest first: the message of the
// l2 sentinel that tiered's ErrUnavailable says again, then the packages'.
var prefixes = []string{l2.ErrUnavailable.Error() + ": ", "tiered: ", "l2: ", "pubsub: ", "l1: "}

// unprefixed returns msg without its leading package prefixes, when strip.
func unprefixed(msg string, strip bool) string {
	for strip {
		strip = false
		for _, p := range prefixes {
			if s, ok := strings.CutPrefix(msg, p); ok {
				msg, strip = s, true
				break
			}
		}
	}
	return msg
}

// PanicError is the error of a load whose loader panicked. It wraps
// ErrLoaderPanic and, when the panic value is an error, that error too.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the loader goroutine's stack at the panic
}

func (p *PanicError) Error() string {
	return fmt.Sprintf("%v: %v\n\n%s", ErrLoaderPanic, p.Value, p.Stack)
}

// Unwrap returns ErrLoaderPanic and the panic value if it is an error.
func (p *PanicError) Unwrap() []error {
	if err, ok := p.Value.(error); ok {
		return []error{ErrLoaderPanic, err}
	}
	return []error{ErrLoaderPanic}
}
