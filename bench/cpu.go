package main

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// cpuMeter reads the CPU time this process and redis-server have used, so
// that a workload can report the CPU a read cost: on a machine whose cores
// are all busy, throughput follows it.
type cpuMeter struct {
	admin *redis.Client
}

// cpuTimes is a reading of a cpuMeter; procOK is false where the
// process's CPU time is not measured (processCPU).
type cpuTimes struct {
	proc, redis time.Duration
	procOK      bool
}

func (m cpuMeter) read(ctx context.Context) cpuTimes {
	var t cpuTimes
	t.proc, t.procOK = processCPU()
	info, err := m.admin.Info(ctx, "cpu").Result()
	if err != nil {
		return t
	}
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				t.redis += time.Duration(f * float64(time.Second))
			}
		}
	}
	return t
}

func (t cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{proc: t.proc - o.proc, redis: t.redis - o.redis, procOK: t.procOK && o.procOK}
}
