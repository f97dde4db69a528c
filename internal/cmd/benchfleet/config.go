package main

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"
)

// config holds the command-line flags.
type config struct {
	nodes   int
	trials  int
	keys    int
	callers int           // per node
	warmup  int           // stampede warm-up keys, not counted
	setupGC bool          // collect the garbage of building the nodes before measuring
	verbose bool          // print one line per stampede key
	loader  time.Duration // stampede loader duration
	poll    time.Duration // longest pause between an invalidate reader's reads
	spin    bool          // invalidate readers spin instead of pausing

	workloads     map[string]bool // the workloads to run
	faultDur      time.Duration   // length of each fault run
	faultReaders  []string        // reader modes of the fault runs, one run each
	pace          time.Duration   // pause before each read of a paced fault reader
	silenceResume bool            // end the silent subscriber's silence with Resume, not a cut
	cluster       bool            // stampede and invalidate on a local Cluster, each bus mode (cluster.go)
}

// workloadNames are the workloads, in the order they run.
var workloadNames = []string{"stampede", "invalidate", "faults", "multiget", "hotexpiry", "dbdown", "http"}

// readerModes are the fault runs' reader modes.
var readerModes = []string{"paced", "flat"}

// parseConfig defines the flags on flag.CommandLine, parses the command
// line and checks the values. flag.Parse exits on a malformed flag; the
// error is for a value out of range.
func parseConfig() (config, error) {
	var cfg config
	flag.IntVar(&cfg.nodes, "nodes", 3, "number of independent nodes (≥ 2)")
	flag.IntVar(&cfg.trials, "trials", 200, "invalidation trials")
	flag.IntVar(&cfg.keys, "keys", 20, "cold keys in the stampede workload")
	flag.IntVar(&cfg.warmup, "warmup", 1, "stampede warm-up keys, run first and not counted (their figures go to stderr)")
	flag.BoolVar(&cfg.setupGC, "setupgc", true, "collect the garbage of building the nodes before the stampede, as testing.B does before a benchmark")
	flag.BoolVar(&cfg.verbose, "v", false, "print a line per stampede key on stderr")
	flag.IntVar(&cfg.callers, "callers", 100, "concurrent callers per node and key in the stampede workload")
	flag.DurationVar(&cfg.loader, "loader", 50*time.Millisecond, "duration of the stampede loader")
	flag.DurationVar(&cfg.poll, "poll", time.Millisecond, "longest pause between an invalidate reader's reads; it ends early when the reader's bus delivers the invalidation")
	flag.BoolVar(&cfg.spin, "spin", false, "invalidate readers spin (yielding with runtime.Gosched) instead of pausing; on few cores this starves redis-server and the buses")
	workloads := flag.String("workloads", strings.Join(workloadNames, ","), "comma-separated workloads to run, out of "+strings.Join(workloadNames, ","))
	flag.DurationVar(&cfg.faultDur, "faultdur", 20*time.Second, "length of each fault run (at least 12s: the faults are placed at fractions of it)")
	faultReaders := flag.String("faultreaders", strings.Join(readerModes, ","), "comma-separated reader modes of the faults workload, one run and one line each: paced (a -pace pause before each read), flat (no pause)")
	flag.DurationVar(&cfg.pace, "pace", 100*time.Microsecond, "pause before each read of a paced fault reader")
	flag.BoolVar(&cfg.silenceResume, "silenceresume", false, "end the silence of the faults workload's silent subscriber by forwarding its connections again, with the bytes dropped meanwhile missing (a stream TCP never delivers), instead of cutting them")
	flag.BoolVar(&cfg.cluster, "cluster", false, "run stampede and invalidate on a local Redis Cluster (3 masters, 3 replicas; needs redis-cli), once with the classic and once with the sharded bus, each followed by a busfanout line")
	flag.Parse()
	if err := cfg.parseLists(*workloads, *faultReaders); err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

// listFlag parses a comma-separated list of names out of allowed.
func listFlag(s string, allowed []string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(allowed, f) {
			return nil, fmt.Errorf("unknown %q (want some of %s)", f, strings.Join(allowed, ","))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list (want some of %s)", strings.Join(allowed, ","))
	}
	return out, nil
}

// parseLists sets c.workloads and c.faultReaders from the flags' lists.
func (c *config) parseLists(workloads, faultReaders string) error {
	ws, err := listFlag(workloads, workloadNames)
	if err != nil {
		return fmt.Errorf("-workloads: %w", err)
	}
	c.workloads = map[string]bool{}
	for _, w := range ws {
		c.workloads[w] = true
	}
	if c.faultReaders, err = listFlag(faultReaders, readerModes); err != nil {
		return fmt.Errorf("-faultreaders: %w", err)
	}
	return nil
}

// validate checks the values that parse but make no run.
func (c config) validate() error {
	switch {
	case c.faultDur < minFaultDur:
		return fmt.Errorf("-faultdur must be at least %v", minFaultDur)
	case c.pace <= 0:
		return errors.New("-pace must be positive")
	case c.nodes < 2:
		return errors.New("-nodes must be at least 2: the invalidate workload needs a writer and a reader")
	case c.trials < 1 || c.keys < 1 || c.callers < 1:
		return errors.New("-trials, -keys and -callers must be positive")
	case c.warmup < 0:
		return errors.New("-warmup must not be negative")
	case c.loader <= 0:
		return errors.New("-loader must be positive")
	case c.poll <= 0:
		return errors.New("-poll must be positive")
	}
	return nil
}
