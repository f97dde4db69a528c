package redistest

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestMain silences go-redis, whose clients see the servers the tests kill,
// and fails the run if a test leaves a goroutine behind (a failover
// client's sentinel watcher, say).
func TestMain(m *testing.M) { Main(m) }

// waitTimeout bounds every wait in these tests for something Redis does
// asynchronously: generous, for a loaded 2-core machine; a correct run
// never waits for it.
const waitTimeout = 60 * time.Second

// procs are the processes of servers, as a test records them to check,
// after the test that started them, that they are gone.
type procs struct {
	pids  []int
	addrs []string
}

// add records servers.
func (p *procs) add(servers ...*Server) {
	for _, s := range servers {
		p.pids = append(p.pids, s.cmd.Process.Pid)
		p.addrs = append(p.addrs, s.Addr)
	}
}

// checkGone fails t for every recorded process that still runs or address
// that still accepts connections.
func (p *procs) checkGone(t *testing.T) {
	t.Helper()
	if len(p.pids) == 0 {
		t.Fatal("no process recorded")
	}
	for _, pid := range p.pids {
		// On Unix FindProcess always succeeds; signal 0 then tells whether
		// the process exists. Stop reaped it, so it is no zombie.
		if proc, err := os.FindProcess(pid); err == nil && proc.Signal(syscall.Signal(0)) == nil {
			t.Errorf("process %d still runs after its test ended", pid)
		}
	}
	for _, addr := range p.addrs {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after its test ended", addr)
		}
	}
}
