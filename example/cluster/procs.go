package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

const (
	nodeStartTimeout = 30 * time.Second
	nodeStopTimeout  = 5 * time.Second
)

// The parent tells a re-executed binary that it is a node, and how to set
// itself up, through these environment variables; a node takes no flags.
const (
	envNode      = "TIERED_EXAMPLE_NODE"      // the node's name; its presence makes the process a node
	envRedis     = "TIERED_EXAMPLE_REDIS"     // host:port of Redis for the cache
	envBusRedis  = "TIERED_EXAMPLE_BUS_REDIS" // host:port of Redis for the invalidation bus
	envDB        = "TIERED_EXAMPLE_DB"        // path of the SQLite file
	envNamespace = "TIERED_EXAMPLE_NAMESPACE" // cache namespace; also names the bus channel
	// With -cluster, every node of the Redis Cluster, comma-separated: the
	// node then uses Cluster clients seeded with them (rediscluster.go) and
	// ignores envRedis and envBusRedis.
	envCluster = "TIERED_EXAMPLE_CLUSTER"
)

// nodeConfig is what a node reads from its environment.
type nodeConfig struct {
	Name      string
	RedisAddr string // the cache's client
	BusAddr   string // the bus's client; the same server, maybe through another proxy
	DBPath    string
	Namespace string
	// ClusterAddrs, with -cluster, are every node of the Redis Cluster: the
	// node then uses Cluster clients seeded with them instead of RedisAddr
	// and BusAddr.
	ClusterAddrs []string
}

func nodeConfigFromEnv() nodeConfig {
	return nodeConfig{
		Name:      os.Getenv(envNode),
		RedisAddr: os.Getenv(envRedis),
		BusAddr:   os.Getenv(envBusRedis),
		DBPath:    os.Getenv(envDB),
		Namespace: os.Getenv(envNamespace),

		ClusterAddrs: clusterAddrsFromEnv(),
	}
}

func (nc nodeConfig) environ() []string {
	return []string{
		envNode + "=" + nc.Name,
		envRedis + "=" + nc.RedisAddr,
		envBusRedis + "=" + nc.BusAddr,
		envDB + "=" + nc.DBPath,
		envNamespace + "=" + nc.Namespace,
		envCluster + "=" + strings.Join(nc.ClusterAddrs, ","),
	}
}

// nodeProc is a running node process.
type nodeProc struct {
	name  string
	addr  string // host:port of its HTTP API, once listening
	cmd   *exec.Cmd
	stdin io.WriteCloser // closing it tells the node to exit
	first chan string    // the first line of its standard output; closed at EOF

	exited  chan struct{} // closed once the process has exited
	waitErr error         // the result of cmd.Wait, set before exited is closed
}

// startNodes starts a node process running exe for each of ncs and waits
// until each has reported its address. On error it stops those already
// started.
func startNodes(ctx context.Context, exe string, ncs []nodeConfig, stderr io.Writer) ([]*nodeProc, error) {
	var nodes []*nodeProc
	for _, nc := range ncs {
		p, err := startNode(exe, nc, stderr)
		if err != nil {
			stopNodes(nodes)
			return nil, err
		}
		nodes = append(nodes, p)
	}
	for _, p := range nodes {
		if err := p.waitListening(ctx); err != nil {
			stopNodes(nodes)
			return nil, err
		}
	}
	return nodes, nil
}

// startNode starts exe as the node nc, with its standard input a pipe from
// this process and its standard output read for the "listening" line.
func startNode(exe string, nc nodeConfig, stderr io.Writer) (*nodeProc, error) {
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), nc.environ()...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = nodeSysProcAttr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", nc.Name, err)
	}
	p := &nodeProc{
		name: nc.Name, cmd: cmd, stdin: stdin,
		first: make(chan string, 1), exited: make(chan struct{}),
	}
	go func() {
		// Read stdout to its end, the process's exit, before calling Wait,
		// as StdoutPipe requires.
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			p.first <- sc.Text()
		}
		close(p.first)
		_, _ = io.Copy(io.Discard, stdout)
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitListening waits for the node's "listening host:port" line.
func (p *nodeProc) waitListening(ctx context.Context) error {
	timer := time.NewTimer(nodeStartTimeout)
	defer timer.Stop()
	select {
	case line, ok := <-p.first:
		if !ok {
			<-p.exited
			return fmt.Errorf("%s exited before listening (%v); its stderr says why", p.name, p.waitErr)
		}
		addr, found := strings.CutPrefix(line, "listening ")
		if !found {
			return fmt.Errorf("%s: unexpected first line %q", p.name, line)
		}
		p.addr = addr
		return nil
	case <-timer.C:
		return fmt.Errorf("%s did not report its address within %v", p.name, nodeStartTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop asks the node to exit by closing its standard input, and kills it if
// it has not within nodeStopTimeout. It returns once the process is gone.
func (p *nodeProc) stop() {
	_ = p.stdin.Close()
	timer := time.NewTimer(nodeStopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// stopNodes stops every node, all at once.
func stopNodes(nodes []*nodeProc) {
	done := make(chan struct{})
	for _, p := range nodes {
		go func() {
			p.stop()
			done <- struct{}{}
		}()
	}
	for range nodes {
		<-done
	}
}
