package faultproxy

import "fmt"

// Mode is what a connection does with the bytes it reads. See the package
// comment.
type Mode int

const (
	// Forward delivers bytes, client→server after the added latency. It is
	// the mode of a new Proxy.
	Forward Mode = iota
	// Silent drops the bytes read from either side, and any held ones.
	Silent
	// Frozen holds the bytes read from either side, up to MaxHeld per
	// direction, for delivery in order once the connection forwards again.
	Frozen
)

func (m Mode) String() string {
	switch m {
	case Forward:
		return "forward"
	case Silent:
		return "silent"
	case Frozen:
		return "frozen"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Scope says which connections [Proxy.Set] changes.
type Scope int

const (
	// AllConns is the connections open now and those accepted from now on.
	AllConns Scope = iota
	// OpenConns is the connections open now only; connections accepted
	// later start in the mode the last Set for new connections chose.
	OpenConns
	// NewConns is the connections accepted from now on only; open ones keep
	// their modes.
	NewConns
)

func (s Scope) String() string {
	switch s {
	case AllConns:
		return "all"
	case OpenConns:
		return "open"
	case NewConns:
		return "new"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}
