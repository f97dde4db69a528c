package redistest

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MasterAddr returns host:port of the master as of the start or the last
// WaitFailover.
func (s *Sentinel) MasterAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.master.Addr
}

// KillMaster sends the master (that of MasterAddr) SIGKILL, waits for it
// to exit, and returns its address. It stays down: [Sentinel.WaitFailover]
// waits for the sentinels to promote the replica.
func (s *Sentinel) KillMaster() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.master.Kill()
	s.killed = s.master
	return s.master.Addr
}

// WaitFailover returns the address of the new master once every sentinel
// reports the same master, not the one KillMaster killed last, and that
// server answers ROLE as a master. It returns ctx's error, with what it
// still waited for and the sentinels' last log lines, if ctx ends first.
func (s *Sentinel) WaitFailover(ctx context.Context) (string, error) {
	s.mu.Lock()
	var killed string
	if s.killed != nil {
		killed = s.killed.Addr
	}
	s.mu.Unlock()
	var master string
	err := wait(ctx, func() error {
		var err error
		master, err = s.promoted(ctx, killed)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("redistest: no failover from %s: %w\n%s", killed, err, s.sentinelLogs())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, srv := range s.data {
		if srv.Addr == master {
			s.master = srv
		}
	}
	return master, nil
}

// promoted returns the master every sentinel reports if it is not killed
// and answers ROLE as a master.
func (s *Sentinel) promoted(ctx context.Context, killed string) (string, error) {
	var master string
	for _, addr := range s.SentinelAddrs {
		sc := redis.NewSentinelClient(failFast(addr))
		hp, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		sc.Close()
		if err == nil && len(hp) != 2 {
			err = fmt.Errorf("reply %q, want host and port", hp)
		}
		if err != nil {
			return "", fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME: %w", addr, err)
		}
		got := net.JoinHostPort(hp[0], hp[1])
		switch {
		case got == killed:
			return "", fmt.Errorf("sentinel %s still reports the killed master %s", addr, killed)
		case master == "":
			master = got
		case got != master:
			return "", fmt.Errorf("sentinel %s reports master %s, another %s", addr, got, master)
		}
	}
	rdb := redis.NewClient(failFast(master))
	defer rdb.Close()
	role, err := rdb.Do(ctx, "ROLE").Slice()
	if err != nil {
		return "", fmt.Errorf("%s: ROLE: %w", master, err)
	}
	if len(role) == 0 || role[0] != "master" {
		return "", fmt.Errorf("%s: ROLE is %v, want master", master, role)
	}
	return master, nil
}

// sentinelLogs returns the last log lines of every sentinel.
func (s *Sentinel) sentinelLogs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, srv := range s.sentinels {
		fmt.Fprintf(&b, "sentinel %s:\n%s\n", srv.Addr, srv.log)
	}
	return b.String()
}
