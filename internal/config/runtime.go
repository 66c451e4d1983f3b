package config

// RuntimeConfig sets the Go runtime's garbage collector for the devicehub
// binary (`devicehub serve`). The environment variables GOGC and
// GOMEMLIMIT, when set, take precedence over it. A hub embedded in another
// Go program (package devicehub) leaves the host's runtime settings alone
// and ignores this section.
type RuntimeConfig struct {
	// GCPercent is the heap growth, in percent of the live heap, that
	// triggers a collection (GOGC). The default of 400 collects about a quarter
	// as often as Go's 100 under ingest load, for a larger heap; -1 turns
	// the proportional trigger off and leaves MemoryLimitMB as the only
	// bound (it must then be set).
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimitMB is the soft memory limit of the runtime in MiB
	// (GOMEMLIMIT): the collector runs as often as it must to stay under
	// it, whatever GCPercent says. 0: no limit.
	MemoryLimitMB int `yaml:"memory_limit_mb"`
}

func defaultRuntime() RuntimeConfig {
	return RuntimeConfig{GCPercent: 400, MemoryLimitMB: 1024}
}

// Bounds of the runtime section.
const (
	maxGCPercent     = 100000
	minMemoryLimitMB = 32
	maxMemoryLimitMB = 1 << 30 // 1 PiB, far from overflowing the limit in bytes
)

func (c *Config) checkRuntime() error {
	r := c.Runtime
	switch {
	case r.GCPercent == -1:
		if r.MemoryLimitMB == 0 {
			return invalid("runtime.gc_percent", "-1 (collect only at the memory limit) needs runtime.memory_limit_mb, which is 0 (no limit): the heap would grow without bound")
		}
	case r.GCPercent < 1 || r.GCPercent > maxGCPercent:
		return invalid("runtime.gc_percent", "must be from 1 to %d, or -1 to collect only at runtime.memory_limit_mb, got %d", maxGCPercent, r.GCPercent)
	}
	if r.MemoryLimitMB != 0 && (r.MemoryLimitMB < minMemoryLimitMB || r.MemoryLimitMB > maxMemoryLimitMB) {
		return invalid("runtime.memory_limit_mb", "must be 0 (no limit) or from %d to %d, got %d", minMemoryLimitMB, maxMemoryLimitMB, r.MemoryLimitMB)
	}
	return nil
}
