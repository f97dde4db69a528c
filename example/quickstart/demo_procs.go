package main

// The demo's processes: the embedded Redis and the service instances it
// starts, part of the launcher in demo.go.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// startRedis starts a miniredis on a free loopback port, with a goroutine
// that makes its TTLs run down with the wall clock (miniredis only expires
// keys when told to, by FastForward), and returns it with its stop function.
func startRedis() (*miniredis.Miniredis, func(), error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, nil, err
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return mr, func() { close(done); <-stopped; mr.Close() }, nil
}

// instance is one running service process.
type instance struct {
	name, url string
	cmd       *exec.Cmd
	exited    chan struct{} // closed when cmd has exited; err is then its Wait error
	err       error
}

// startInstance runs the service with -addr 127.0.0.1:0 and waits for its
// "listening on" log line, which tells the port it got.
func startInstance(ctx context.Context, cfg demoConfig, name, redisAddr, dbPath string) (*instance, error) {
	cmd := cfg.Command("-addr", "127.0.0.1:0", "-redis", redisAddr, "-db", dbPath, "-name", name)
	w := &logWatcher{prefix: "[" + name + "] ", logs: cfg.Logs, ready: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	in := &instance{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		in.err = cmd.Wait()
		close(in.exited)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case in.url = <-w.ready:
		return in, nil
	case <-in.exited:
		return nil, fmt.Errorf("instance %s exited at start (%v):\n%s", name, in.err, w.early())
	case <-t.C:
		err := fmt.Errorf("instance %s not listening after 30s:\n%s", name, w.early())
		in.stop()
		return nil, err
	case <-ctx.Done():
		in.stop()
		return nil, ctx.Err()
	}
}

// stop asks the instance to shut down (SIGINT), kills it if it has not
// exited 10 seconds later, and returns its exit state.
func (in *instance) stop() *os.ProcessState {
	_ = in.cmd.Process.Signal(os.Interrupt)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-in.exited:
	case <-t.C:
		_ = in.cmd.Process.Kill()
		<-in.exited
	}
	return in.cmd.ProcessState
}

// logWatcher receives an instance's output: it finds the "listening on"
// line, keeps the lines before it for an error, and passes the later ones
// to logs.
type logWatcher struct {
	prefix string
	logs   io.Writer
	ready  chan string

	mu      sync.Mutex
	partial []byte
	before  bytes.Buffer
	found   bool
}

func (w *logWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.partial[:i+1])
		w.partial = w.partial[i+1:]
		switch _, url, ok := strings.Cut(line, "listening on "); {
		case !w.found && ok:
			w.found = true
			w.ready <- strings.TrimSpace(url)
		case !w.found:
			w.before.WriteString(line)
		case w.logs != nil:
			_, _ = io.WriteString(w.logs, w.prefix+line)
		}
	}
}

func (w *logWatcher) early() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.before.String() + string(w.partial)
}
