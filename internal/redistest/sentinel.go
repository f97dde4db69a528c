package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of [SentinelOptions].
const (
	// DefaultMasterName is the default name the sentinels monitor the
	// master under.
	DefaultMasterName = "mymaster"
	// DefaultDownAfter is the default down-after-milliseconds: short, so
	// that a failover takes seconds, yet long enough that a busy test
	// machine does not fail over a master that is merely slow.
	DefaultDownAfter = time.Second
	// DefaultFailoverTimeout is the default failover-timeout. A sentinel
	// abandons a failover that has not finished in this time, and waits
	// twice as long before it tries the same master again.
	DefaultFailoverTimeout = 3 * time.Second
)

// Shape of the group LaunchSentinel starts.
const (
	sentinelCount  = 3 // sentinels
	sentinelQuorum = 2 // sentinels that must agree the master is down
)

// sentinelFormTimeout bounds StartSentinel's wait for the sentinels to find
// each other and the replica: sentinels announce themselves every two
// seconds on the master, and the replica first syncs.
const sentinelFormTimeout = 60 * time.Second

// SentinelOptions configure [LaunchSentinel] and [StartSentinel]. A nil
// *SentinelOptions means every default.
type SentinelOptions struct {
	// MasterName is the name the sentinels monitor the master under. The
	// default is DefaultMasterName.
	MasterName string
	// DownAfter is down-after-milliseconds: how long the master may not
	// answer a sentinel before the sentinel deems it down. The default is
	// DefaultDownAfter. Redis works in whole milliseconds.
	DownAfter time.Duration
	// FailoverTimeout is the sentinels' failover-timeout. The default is
	// DefaultFailoverTimeout.
	FailoverTimeout time.Duration
}

// withDefaults returns a copy of o (nil for defaults) with its defaults
// filled in, or an error for a value out of range.
func (o *SentinelOptions) withDefaults() (SentinelOptions, error) {
	var r SentinelOptions
	if o != nil {
		r = *o
	}
	if r.MasterName == "" {
		r.MasterName = DefaultMasterName
	}
	if r.DownAfter == 0 {
		r.DownAfter = DefaultDownAfter
	}
	if r.FailoverTimeout == 0 {
		r.FailoverTimeout = DefaultFailoverTimeout
	}
	if r.DownAfter < time.Millisecond || r.FailoverTimeout < time.Millisecond {
		return r, fmt.Errorf("redistest: DownAfter %v and FailoverTimeout %v must be at least 1ms", r.DownAfter, r.FailoverTimeout)
	}
	return r, nil
}

// Sentinel is a running Redis Sentinel setup: a master, its replica and
// three sentinels (quorum 2) that monitor it, each a redis-server on a free
// loopback port. Its methods are safe for concurrent use.
type Sentinel struct {
	// MasterName is the name the sentinels monitor the master under.
	MasterName string
	// SentinelAddrs are host:port of the sentinels, on 127.0.0.1.
	SentinelAddrs []string

	opts    SentinelOptions // with defaults filled in
	dir     string          // holds the servers' directories
	ownsDir bool            // Stop removes dir

	mu        sync.Mutex
	data      []*Server // the master and the replica as started; guarded by mu
	sentinels []*Server // guarded by mu
	master    *Server   // the master as of the start or the last WaitFailover; guarded by mu
	killed    *Server   // the master KillMaster killed last, or nil; guarded by mu
	stopped   bool      // guarded by mu
}

// StartSentinel starts a Sentinel setup for tb as [LaunchSentinel] does,
// with its files under tb's temporary directory, and stops it when tb
// ends. o nil means defaults. It skips tb when redis-server is missing, or
// fails it under REQUIRE_REDIS=1.
func StartSentinel(tb testing.TB, o *SentinelOptions) *Sentinel {
	tb.Helper()
	requireTools(tb, serverTool)
	ctx, cancel := context.WithTimeout(context.Background(), sentinelFormTimeout)
	defer cancel()
	s, err := LaunchSentinel(ctx, tb.TempDir(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// LaunchSentinel is StartSentinel for code without a testing.TB: it starts
// a master, a replica of it and three sentinels (redis-server --sentinel,
// each with the config file it rewrites in its own directory) with their
// files under dir (a new temporary directory, removed by Stop, when dir is
// ""), and returns once every sentinel sees the master up, its replica
// with its link up, and the two other sentinels. The caller must call
// Stop, also after an error. ctx bounds the whole start.
//
// The servers are killed if this process dies (on Linux; see
// [DieWithParent]).
func LaunchSentinel(ctx context.Context, dir string, o *SentinelOptions) (*Sentinel, error) {
	opts, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := errMissing(serverTool); err != nil {
		return nil, err
	}
	s := &Sentinel{MasterName: opts.MasterName, opts: opts, dir: dir}
	if dir == "" {
		if s.dir, err = os.MkdirTemp("", "redistest-sentinel-"); err != nil {
			return nil, err
		}
		s.ownsDir = true
	}
	if err := s.launch(ctx); err != nil {
		s.Stop()
		return nil, fmt.Errorf("redistest: cannot start a Sentinel setup: %w", err)
	}
	return s, nil
}

// launch starts the servers of s and waits until the sentinels see them.
func (s *Sentinel) launch(ctx context.Context) error {
	// A replica's first sync starts at once, not after the default 5s wait
	// for more replicas; the replica may become a master.
	noDelay := []string{"--repl-diskless-sync-delay", "0"}
	master, err := s.startData("master", noDelay...)
	if err != nil {
		return fmt.Errorf("master: %w", err)
	}
	host, port, _ := net.SplitHostPort(master.Addr)
	replica, err := s.startData("replica", append(noDelay, "--replicaof", host, port)...)
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	s.mu.Lock()
	s.master = master
	s.mu.Unlock()
	for i := range sentinelCount {
		sn, err := s.startSentinel(master.Addr)
		if err != nil {
			return fmt.Errorf("sentinel %d: %w", i, err)
		}
		s.SentinelAddrs = append(s.SentinelAddrs, sn.Addr)
	}
	return wait(ctx, func() error { return s.ready(ctx, master.Addr, replica.Addr) })
}

// startData starts a data server (master or replica) with extra arguments,
// in a new directory under s.dir, and records it for Stop.
func (s *Sentinel) startData(name string, extra ...string) (*Server, error) {
	dir, err := os.MkdirTemp(s.dir, name+"-")
	if err != nil {
		return nil, err
	}
	var srv *Server
	for range 5 { // as startRetrying: a free port may be taken first
		if srv, err = start(dir, extra...); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = append(s.data, srv)
	return srv, nil
}

// startSentinel starts a sentinel of the master at masterAddr, in a new
// directory under s.dir, and records it for Stop.
func (s *Sentinel) startSentinel(masterAddr string) (*Server, error) {
	dir, err := os.MkdirTemp(s.dir, "sentinel-")
	if err != nil {
		return nil, err
	}
	host, mport, _ := net.SplitHostPort(masterAddr)
	name := s.opts.MasterName
	var srv *Server
	for range 5 { // as startRetrying: a free port may be taken first
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		conf := strings.Join([]string{
			"port " + strconv.Itoa(port),
			"bind 127.0.0.1",
			"dir " + dir,
			fmt.Sprintf("sentinel monitor %s %s %s %d", name, host, mport, sentinelQuorum),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", name, s.opts.DownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", name, s.opts.FailoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", name),
		}, "\n") + "\n"
		// The sentinel rewrites this file (its ID, what it learns), so each
		// has its own, in its own directory.
		path := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		if srv, err = spawn(strconv.Itoa(port), path, "--sentinel"); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	srv.dir = dir
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sentinels = append(s.sentinels, srv)
	return srv, nil
}

// ready returns nil when every sentinel sees the master at masterAddr up,
// the replica at replicaAddr as its only replica with its link up, and the
// other sentinels.
func (s *Sentinel) ready(ctx context.Context, masterAddr, replicaAddr string) error {
	for _, addr := range s.SentinelAddrs {
		sc := redis.NewSentinelClient(failFast(addr))
		err := func() error {
			m, err := sc.Master(ctx, s.MasterName).Result()
			if err != nil {
				return fmt.Errorf("SENTINEL MASTER: %w", err)
			}
			want := map[string]string{
				"ip": hostOf(masterAddr), "port": portOf(masterAddr), "flags": "master",
				"num-slaves": "1", "num-other-sentinels": strconv.Itoa(sentinelCount - 1),
			}
			for k, v := range want {
				if m[k] != v {
					return fmt.Errorf("SENTINEL MASTER: %s is %q, want %q", k, m[k], v)
				}
			}
			rs, err := sc.Replicas(ctx, s.MasterName).Result()
			if err != nil {
				return fmt.Errorf("SENTINEL REPLICAS: %w", err)
			}
			if len(rs) != 1 || rs[0]["name"] != replicaAddr || rs[0]["flags"] != "slave" || rs[0]["master-link-status"] != "ok" {
				return fmt.Errorf("SENTINEL REPLICAS: %v, want %s flagged slave with its link ok", rs, replicaAddr)
			}
			return nil
		}()
		sc.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", addr, err)
		}
	}
	return nil
}

// Stop kills every server and sentinel and waits for them to exit. It is
// idempotent.
func (s *Sentinel) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	for _, srv := range s.sentinels {
		srv.Stop()
	}
	for _, srv := range s.data {
		srv.Stop()
	}
	if s.ownsDir {
		_ = os.RemoveAll(s.dir)
	}
}

// FailoverClient returns a client of the master that finds it through the
// sentinels, closed when tb ends. With o nil it fails fast like [Client]
// (no retries, short dial timeout); otherwise it uses o, with s's master
// name and sentinels where o leaves them empty.
func (s *Sentinel) FailoverClient(tb testing.TB, o *redis.FailoverOptions) *redis.Client {
	tb.Helper()
	if o == nil {
		ff := failFast("") // the settings of Client
		o = &redis.FailoverOptions{MaxRetries: ff.MaxRetries, DialTimeout: ff.DialTimeout}
	} else {
		cp := *o // leave the caller's alone
		o = &cp
	}
	if o.MasterName == "" {
		o.MasterName = s.MasterName
	}
	if len(o.SentinelAddrs) == 0 {
		o.SentinelAddrs = s.SentinelAddrs
	}
	rdb := redis.NewFailoverClient(o)
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// hostOf returns the host of addr.
func hostOf(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}

// portOf returns the port of addr.
func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
