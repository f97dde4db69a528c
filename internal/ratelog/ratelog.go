// Package ratelog logs at most one record per interval for each kind of
// event, and reports how many were suppressed in between.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter rate-limits records to one logger. It is safe for concurrent use.
type Limiter struct {
	logger   *slog.Logger
	interval time.Duration

	mu    sync.Mutex           // guards state
	state map[string]*eventLog // by event name
}

type eventLog struct {
	last       time.Time
	suppressed int
}

// New returns a Limiter writing to logger (discarded when nil) at most once
// per interval for each event name.
func New(logger *slog.Logger, interval time.Duration) *Limiter {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Limiter{logger: logger, interval: interval, state: make(map[string]*eventLog)}
}

// Log writes a record for event unless one was written less than the
// interval ago. The record carries the number of suppressed records.
func (l *Limiter) Log(level slog.Level, event string, err error, attrs ...slog.Attr) {
	if !l.logger.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	s := l.state[event]
	if s == nil {
		s = &eventLog{}
		l.state[event] = s
	}
	if !s.last.IsZero() && now.Sub(s.last) < l.interval {
		s.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := s.suppressed
	s.last, s.suppressed = now, 0
	l.mu.Unlock()
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	l.logger.LogAttrs(context.Background(), level, event, attrs...)
}
