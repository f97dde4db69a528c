// Package redistest starts private Redis servers for tests: a single
// redis-server, a Redis Cluster with replicas, or a master and replica
// watched by Redis Sentinel.
//
// Each [Start] launches a new redis-server on a free loopback port with
// persistence off, waits until it answers PING, and registers a cleanup that
// stops it. [StartCluster] starts masters and replicas in cluster mode,
// forms a cluster of them with redis-cli --cluster create and waits until
// every node agrees on the slot map; [Cluster.Kill] and
// [Cluster.WaitFailover] take a master down and wait for its replica to
// take over. [StartSentinel] starts a master, a replica and three
// sentinels; [Sentinel.KillMaster] and [Sentinel.WaitFailover] do the same
// through the sentinels. Tests never reach a server they did not start and
// never use a fixed port, and the servers die with the test binary (on
// Linux, see [DieWithParent]). [StartProcess], [LaunchCluster] and
// [LaunchSentinel] do the same for programs without a testing.TB.
//
// When redis-server (or, for a cluster, redis-cli) is not on PATH the test
// is skipped, unless the environment variable REQUIRE_REDIS=1 is set, in
// which case it fails: CI sets it so that a missing install step cannot
// hide behind green skips.
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
	"sync"
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
	log      *logRing   // the last lines the process wrote
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
	s.cmd, s.waitExit, s.log, s.killed = n.cmd, n.waitExit, n.log, false
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

// Tools of a Redis install that the helpers run.
const (
	serverTool = "redis-server" // every server, and the sentinels (--sentinel)
	cliTool    = "redis-cli"    // forms a cluster: redis-cli --cluster create
)

// Available reports whether redis-server is on PATH.
func Available() bool { return len(missingTools(serverTool)) == 0 }

// Require skips t when redis-server is missing, or fails it when
// REQUIRE_REDIS=1.
func Require(tb testing.TB) {
	tb.Helper()
	requireTools(tb, serverTool)
}

// requireTools skips tb when one of tools is not on PATH, or fails it when
// REQUIRE_REDIS=1, naming what is missing and where it comes from.
func requireTools(tb testing.TB, tools ...string) {
	tb.Helper()
	missing := missingTools(tools...)
	if len(missing) == 0 {
		return
	}
	list := strings.Join(missing, " and ")
	if required() {
		tb.Fatalf("redistest: REQUIRE_REDIS=1 but %s not on PATH "+
			"(Debian/Ubuntu: apt-get install redis-server, or redis-tools for redis-cli alone)", list)
	}
	tb.Skipf("skipped: no %s on PATH (set REQUIRE_REDIS=1 to make this a failure)", list)
}

// missingTools returns those of tools that are not on PATH.
func missingTools(tools ...string) []string {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	return missing
}

// errMissing returns an error naming those of tools that are not on PATH,
// or nil: what the helpers without a testing.TB return.
func errMissing(tools ...string) error {
	if missing := missingTools(tools...); len(missing) > 0 {
		return fmt.Errorf("redistest: %s not on PATH", strings.Join(missing, " and "))
	}
	return nil
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
	if err := errMissing(serverTool); err != nil {
		return nil, err
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

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago: the
// system picked it for a listener that is closed again. Someone else may
// take it before the caller binds it, so a caller tries again with another.
func FreePort() (int, error) {
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
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	return startOn(dir, strconv.Itoa(port), extra...)
}

// startOn starts a redis-server in dir on port, with the defaults of every
// server (loopback only, persistence off) and extra appended to its command
// line.
func startOn(dir, port string, extra ...string) (*Server, error) {
	args := append([]string{
		"--port", port,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--protected-mode", "yes",
	}, extra...)
	s, err := spawn(port, args...)
	if err != nil {
		return nil, err
	}
	s.dir, s.extra = dir, extra
	return s, nil
}

// spawn runs redis-server with args, which make it listen on 127.0.0.1:port,
// and returns once it answers PING. The process is killed if this one dies.
func spawn(port string, args ...string) (*Server, error) {
	cmd := exec.Command(serverTool, args...)
	cmd.SysProcAttr = DieWithParent()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", port), cmd: cmd, log: &logRing{}}
	// Keep the pipe drained; remember the log tail for error reports.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.log.add(sc.Text())
		}
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
			<-drained
			return nil, fmt.Errorf("redis-server exited early (%v): %s", werr, s.log)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redis-server on %s did not answer: %v", s.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logLines is how many of a server's last log lines a logRing keeps.
const logLines = 20

// logRing keeps the last logLines lines a server wrote, for error reports.
// It is safe for concurrent use.
type logRing struct {
	mu    sync.Mutex
	lines []string // guarded by mu
}

// add appends line, dropping the oldest beyond logLines.
func (r *logRing) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	if len(r.lines) > logLines {
		r.lines = r.lines[1:]
	}
}

// String returns the lines kept, one per line.
func (r *logRing) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// pollInterval is how often the helpers ask the servers whether what they
// wait for has happened.
const pollInterval = 50 * time.Millisecond

// wait calls check until it returns nil, and returns ctx's error with
// check's last error if ctx ends first.
func wait(ctx context.Context, check func() error) error {
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %w", ctx.Err(), err)
		case <-time.After(pollInterval):
		}
	}
}
