package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// redisAuto is the -redis value that makes the run start a redis-server of
// its own.
const redisAuto = "auto"

// redisServer is the Redis the nodes share: an embedded miniredis on a free
// loopback port, a redis-server the run started (-redis auto), a server
// named by -redis host:port, which the run only connects to, or a Redis
// Cluster the run started (-cluster, rediscluster.go).
type redisServer struct {
	addr    string
	mr      *miniredis.Miniredis // nil for a real server
	own     *ownedServer         // nil unless the run started the server
	cluster *clusterServer       // nil unless -cluster; addr is then one of its nodes

	stopClock func() // stops the goroutine that runs miniredis's clock
}

// clockTick is how often miniredis's TTLs are advanced.
const clockTick = 50 * time.Millisecond

// startRedis starts a miniredis (addr ""), starts a redis-server with its
// files in dir (addr "auto"), or checks that the server at addr answers.
func startRedis(ctx context.Context, addr, dir string) (*redisServer, error) {
	switch addr {
	case "":
	case redisAuto:
		own, err := startOwnedServer(ctx, dir)
		if err != nil {
			return nil, err
		}
		return &redisServer{addr: own.addr, own: own}, nil
	default:
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("redis at %s: %w", addr, err)
		}
		return &redisServer{addr: addr}, nil
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, err
	}
	clockCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runClock(clockCtx, mr)
	}()
	return &redisServer{addr: mr.Addr(), mr: mr, stopClock: func() { cancel(); <-done }}, nil
}

// runClock makes mr's TTLs, values' and leases' alike, run down with the
// wall clock until ctx is done. miniredis only expires keys when told to,
// by FastForward. (Its ClockTTL option does the same on every command, but
// each tick sorts every key: too slow for thousands of keys.)
func runClock(ctx context.Context, mr *miniredis.Miniredis) {
	tick := time.NewTicker(clockTick)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			mr.FastForward(now.Sub(last))
			last = now
		}
	}
}

// String describes the server for the output.
func (s *redisServer) String() string {
	switch {
	case s.mr != nil:
		return "miniredis " + s.addr
	case s.own != nil:
		return fmt.Sprintf("redis-server %s (started for the run, pid %d, no persistence)", s.addr, s.own.pid())
	case s.cluster != nil:
		return s.cluster.String()
	}
	return "redis " + s.addr
}

// pause makes the server hold clients' commands for d, as CLIENT PAUSE d
// mode does (mode "ALL" or "WRITE"), and returns once the pause is over
// (earlier if ctx ends). A real server gets the command itself. miniredis
// has no CLIENT PAUSE: a command hook blocks the matching commands of every
// connection until the pause is over, and they run in order then, except
// those of clients that have disconnected meanwhile.
func (s *redisServer) pause(ctx context.Context, mode string, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	if s.mr == nil {
		rdb := redis.NewClient(&redis.Options{Addr: s.addr})
		defer rdb.Close()
		if err := rdb.Do(ctx, "CLIENT", "PAUSE", d.Milliseconds(), mode).Err(); err != nil {
			return fmt.Errorf("CLIENT PAUSE %d %s: %w", d.Milliseconds(), mode, err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			// The server ends the pause itself; we stop waiting for it.
		}
		return nil
	}
	release, err := s.hold(mode)
	if err != nil {
		return err
	}
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	release()
	return nil
}

// hold makes miniredis hold the commands a CLIENT PAUSE of mode would hold
// until release is called.
func (s *redisServer) hold(mode string) (release func(), err error) {
	srv := s.mr.Server()
	if srv == nil {
		return nil, errors.New("miniredis is not running")
	}
	done := make(chan struct{})
	srv.SetPreHook(func(peer *server.Peer, cmd string, _ ...string) bool {
		if nestedCall(peer) || mode != "ALL" && !writeCommands[cmd] {
			return false
		}
		<-done
		// Redis drops the held command of a client that disconnected (one
		// that gave up waiting); miniredis would run it after the pause,
		// and, say, take a lease for a flight that is gone.
		return peer.Closed()
	})
	return func() {
		srv.SetPreHook(nil)
		close(done)
	}, nil
}

// nestedCall reports whether peer is the one miniredis makes for a
// redis.call inside a script. The script has passed the hook already and
// runs under miniredis's lock: holding its calls would hold every client.
// The flag is miniredis's own, unexported; if it ever goes, no call is
// taken for nested, which is only wrong for a script caught mid-run.
func nestedCall(peer *server.Peer) bool {
	v := reflect.ValueOf(peer.Ctx)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return false
	}
	f := v.Elem().FieldByName("nested")
	return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
}

// writeCommands are the commands a WRITE pause holds on miniredis: those
// Redis 7 holds that a client of this example may send (every script, as
// Redis does for scripts not flagged no-writes; PUBLISH) and the common
// write commands.
var writeCommands = map[string]bool{
	"EVAL": true, "EVALSHA": true, "FCALL": true, "PUBLISH": true, "SPUBLISH": true, "PFCOUNT": true,
	"SET": true, "SETNX": true, "SETEX": true, "PSETEX": true, "GETSET": true, "GETDEL": true, "GETEX": true,
	"MSET": true, "MSETNX": true, "APPEND": true, "INCR": true, "INCRBY": true, "INCRBYFLOAT": true,
	"DECR": true, "DECRBY": true, "DEL": true, "UNLINK": true, "EXPIRE": true, "PEXPIRE": true,
	"EXPIREAT": true, "PEXPIREAT": true, "PERSIST": true, "RENAME": true, "RENAMENX": true, "COPY": true,
	"HSET": true, "HSETNX": true, "HMSET": true, "HDEL": true, "HINCRBY": true, "LPUSH": true, "RPUSH": true,
	"LPOP": true, "RPOP": true, "SADD": true, "SREM": true, "ZADD": true, "ZREM": true, "XADD": true,
	"FLUSHDB": true, "FLUSHALL": true, "PFADD": true, "PFMERGE": true, "RESTORE": true, "MOVE": true,
}

// kill makes the server die and come back empty after outage (less if ctx
// ends first), on the same port, and describes what it did. A redis-server
// the run started gets SIGKILL and is started again (it has no
// persistence, so it comes back empty, with a new run_id). A miniredis is
// closed and restarted with its data, which is what clients see of a
// network partition that heals: the writes that failed meanwhile left old
// values in Redis, and only the writers' outboxes can repair them.
// A server the run did not start is left alone, and what says so.
func (s *redisServer) kill(ctx context.Context, outage time.Duration) (what string, err error) {
	wait := func() {
		t := time.NewTimer(outage)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	switch {
	case s.mr != nil:
		down := time.Now()
		s.mr.Close()
		wait()
		if err := s.mr.Restart(); err != nil {
			return "", fmt.Errorf("restarting miniredis: %w", err)
		}
		return fmt.Sprintf("miniredis was down for %v; restarted with its data on the same port",
			time.Since(down).Round(100*time.Millisecond)), nil
	case s.own != nil:
		old := s.own.pid()
		down := time.Now()
		s.own.kill()
		wait()
		if err := s.own.restart(ctx); err != nil {
			return "", fmt.Errorf("restarting redis-server: %w", err)
		}
		return fmt.Sprintf("redis-server pid %d was SIGKILLed and down for %v; restarted empty on %s as pid %d",
			old, time.Since(down).Round(100*time.Millisecond), s.addr, s.own.pid()), nil
	}
	return fmt.Sprintf("skipped: %s was not started by this run (use -redis auto to include it)", s.addr), nil
}

// Close stops a miniredis, or a redis-server or Redis Cluster the run
// started; a server named by -redis host:port is left alone.
func (s *redisServer) Close() {
	switch {
	case s.mr != nil:
		s.stopClock()
		s.mr.Close()
	case s.own != nil:
		s.own.kill()
	case s.cluster != nil:
		s.cluster.Close()
	}
}

// ownedServer is a redis-server process the run started: on a free loopback
// port, persistence off, its log and working directory in the run's
// temporary directory, killed if the parent dies (see nodeSysProcAttr).
type ownedServer struct {
	addr string
	port int
	dir  string

	mu     sync.Mutex // guards cmd and exited
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has exited
}

const ownedStartTimeout = 10 * time.Second

func startOwnedServer(ctx context.Context, dir string) (*ownedServer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("-redis %s: %w", redisAuto, err)
	}
	dir = filepath.Join(dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 { // the free port may be taken before the server binds it
		port, err := redistest.FreePort()
		if err != nil {
			return nil, err
		}
		s := &ownedServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port: port, dir: dir}
		if lastErr = s.start(ctx); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// start starts the server on s.port and waits until it answers PING.
func (s *ownedServer) start(ctx context.Context) error {
	logFile := filepath.Join(s.dir, "redis.log")
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", logFile,
	)
	cmd.SysProcAttr = nodeSysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	rdb := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	deadline := time.Now().Add(ownedStartTimeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited at once: %s", s.port, logTail(logFile))
		case <-ctx.Done():
			s.kill()
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on %s did not answer within %v: %v", s.addr, ownedStartTimeout, err)
		}
	}
}

// restart starts the server again on its port, trying a few times: the
// port may still be held for a moment after the kill.
func (s *ownedServer) restart(ctx context.Context) error {
	var err error
	for range 10 {
		if err = s.start(ctx); err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// pid returns the process ID of the running server.
func (s *ownedServer) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// kill SIGKILLs the server and waits for it to exit. It is idempotent.
func (s *ownedServer) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	_ = cmd.Process.Kill()
	<-exited
}

// logTail returns the last lines of the server's log, for an error.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(len(lines)-5, 0):], "\n")
}
