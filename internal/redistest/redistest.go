// Package redistest starts a private redis-server for tests.
//
// Each [Start] launches a new redis-server on a free loopback port with
// persistence off, waits until it answers PING, and registers a cleanup that
// stops it. Tests never reach a server they did not start and never use a
// fixed port.
//
// When redis-server is not on PATH the test is skipped, unless the
// environment variable REQUIRE_REDIS=1 is set, in which case it fails: CI sets
// it so that a missing install step cannot hide behind green skips.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server owned by one test.
type Server struct {
	// Addr is host:port of the server, on 127.0.0.1.
	Addr     string
	cmd      *exec.Cmd
	dir      string
	waitExit chan error
	stopped  bool
	ownsDir  bool // Stop removes dir
}

// Client returns a new go-redis client for the server; the caller closes it.
func (s *Server) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr})
}

// Stop kills the server and waits for it to exit. It is idempotent.
func (s *Server) Stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Kill()
	<-s.waitExit
	if s.ownsDir {
		_ = os.RemoveAll(s.dir)
	}
}

// Available reports whether redis-server is on PATH.
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// Require skips t when redis-server is missing, or fails it when
// REQUIRE_REDIS=1.
func Require(tb testing.TB) {
	tb.Helper()
	if Available() {
		return
	}
	if os.Getenv("REQUIRE_REDIS") == "1" {
		tb.Fatal("redistest: REQUIRE_REDIS=1 but redis-server is not on PATH")
	}
	tb.Skip("skipped: no redis-server on PATH (set REQUIRE_REDIS=1 to make this a failure)")
}

// Start starts a redis-server for tb and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	Require(tb)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s, err := start(tb.TempDir())
		if err == nil {
			tb.Cleanup(s.Stop)
			return s
		}
		lastErr = err
	}
	tb.Fatalf("redistest: cannot start redis-server: %v", lastErr)
	return nil
}

// StartProcess is Start for code without a testing.TB (a benchmark driver).
// The caller must call Stop.
func StartProcess() (*Server, error) {
	if !Available() {
		return nil, fmt.Errorf("redistest: redis-server is not on PATH")
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s, err := start(dir)
		if err == nil {
			s.ownsDir = true
			return s, nil
		}
		lastErr = err
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--protected-mode", "yes",
	)
	cmd.SysProcAttr = dieWithParent()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, dir: dir}
	// Keep the pipe drained; remember the log tail for error reports.
	logTail := make(chan string, 1)
	go func() {
		var lines []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if len(lines) > 20 {
				lines = lines[1:]
			}
		}
		logTail <- strings.Join(lines, "\n")
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.waitExit = exited

	deadline := time.Now().Add(10 * time.Second)
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err = c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("redis-server exited early (%v): %s", werr, <-logTail)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redis-server on %s did not answer: %v", s.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
