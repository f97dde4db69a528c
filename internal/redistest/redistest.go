// Package redistest starts a private redis-server for tests.
//
// Each [Start] launches a new redis-server on a free loopback port with
// persistence off, waits until it answers PING, and registers a cleanup that
// stops it. [StartCluster] starts several in cluster mode and forms a Redis
// Cluster of them. Tests never reach a server they did not start and never
// use a fixed port.
//
// When redis-server is not on PATH the test is skipped, unless the
// environment variable REQUIRE_REDIS=1 is set, in which case it fails: CI sets
// it so that a missing install step cannot hide behind green skips.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	extra    []string   // arguments after the defaults; Restart passes them again
	waitExit chan error // receives cmd.Wait's result once; see killed
	killed   bool       // Kill received it: the process is gone until Restart
	stopped  bool
	ownsDir  bool // Stop removes dir
}

// Kill sends the server SIGKILL and waits for it to exit, leaving its
// directory (and any RDB file in it) for Restart. Not safe for concurrent
// use with Stop or Restart.
func (s *Server) Kill() {
	if s.killed || s.stopped {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.waitExit
	s.killed = true
}

// Restart starts a new server on the same port, directory and arguments,
// after Kill: a server restarted from whatever it persisted there. The
// port may have been taken meanwhile, in which case it fails.
func (s *Server) Restart() error {
	_, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return err
	}
	n, err := startOn(s.dir, port, s.extra...)
	if err != nil {
		return err
	}
	s.cmd, s.waitExit, s.killed = n.cmd, n.waitExit, false
	return nil
}

// Files returns the contents of every file in the server's directory (and
// its subdirectories, such as Redis 7's appendonlydir), concatenated.
func (s *Server) Files(tb testing.TB) []byte {
	tb.Helper()
	var all []byte
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		all = append(all, b...)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return all
}

// StartPersistent is Start for a server that loads the RDB file in its
// directory at start-up: SAVE writes one, and Kill then Restart brings
// back what it holds. extra is passed to redis-server after the defaults
// (for example "--appendonly", "yes").
func StartPersistent(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	Require(tb)
	var s *Server
	var err error
	for range 5 {
		if s, err = start(tb.TempDir(), append([]string{"--dbfilename", "dump.rdb"}, extra...)...); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: cannot start redis-server: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Stop kills the server and waits for it to exit. It is idempotent.
func (s *Server) Stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	if !s.killed {
		_ = s.cmd.Process.Kill()
		<-s.waitExit
	}
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
	if required() {
		tb.Fatal("redistest: REQUIRE_REDIS=1 but redis-server is not on PATH")
	}
	tb.Skip("skipped: no redis-server on PATH (set REQUIRE_REDIS=1 to make this a failure)")
}

// required reports whether REQUIRE_REDIS=1 makes a missing redis-server a
// failure.
func required() bool { return os.Getenv("REQUIRE_REDIS") == "1" }

// Start starts a redis-server for tb and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	Require(tb)
	s, err := startRetrying(tb.TempDir())
	if err != nil {
		tb.Fatalf("redistest: cannot start redis-server: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
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
	s, err := startRetrying(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.ownsDir = true
	return s, nil
}

// startRetrying starts a server in dir, trying again a few times: the free
// port start picks may be taken by someone else before the server binds it.
func startRetrying(dir string) (*Server, error) {
	var lastErr error
	for range 5 {
		s, err := start(dir)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
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

// start starts a redis-server in dir on a free port, with extra appended
// to its command line.
func start(dir string, extra ...string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return startOn(dir, strconv.Itoa(port), extra...)
}

func startOn(dir, port string, extra ...string) (*Server, error) {
	args := append([]string{
		"--port", port,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--protected-mode", "yes",
	}, extra...)
	cmd := exec.Command("redis-server", args...)
	cmd.SysProcAttr = DieWithParent()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", port), cmd: cmd, dir: dir, extra: extra}
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
	c := redis.NewClient(failFast(s.Addr))
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
