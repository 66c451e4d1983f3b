package hub

import (
	"log/slog"
	"math"
	"runtime/debug"
	rtmetrics "runtime/metrics"

	"github.com/devicehub/devicehub/internal/config"
)

// gcPlan is what the devicehub binary does to the garbage collector's two
// settings at start: each comes from the environment (GOGC, GOMEMLIMIT),
// which the Go runtime has already applied, or from the configuration's
// runtime section, which the binary applies. Only the binary does this
// (Serve): an embedded hub leaves its host program's settings alone.
type gcPlan struct {
	// SetPercent and SetLimit say whether the configuration's value is to
	// be applied; when false, the environment variable named by
	// PercentFrom or LimitFrom is in force.
	SetPercent  bool
	Percent     int
	PercentFrom string
	SetLimit    bool
	LimitBytes  int64
	LimitFrom   string
}

// planGC decides where each GC setting comes from: an environment
// variable that is set and not empty wins over the configuration (it is
// the operator's word for this one process, as for every Go program).
func planGC(rc config.RuntimeConfig, env func(string) (string, bool)) gcPlan {
	p := gcPlan{SetPercent: true, Percent: rc.GCPercent, PercentFrom: "runtime.gc_percent",
		SetLimit: true, LimitBytes: math.MaxInt64, LimitFrom: "runtime.memory_limit_mb"}
	if rc.MemoryLimitMB > 0 {
		p.LimitBytes = int64(rc.MemoryLimitMB) << 20
	}
	if v, ok := env("GOGC"); ok && v != "" {
		p.SetPercent, p.Percent, p.PercentFrom = false, 0, "GOGC"
	}
	if v, ok := env("GOMEMLIMIT"); ok && v != "" {
		p.SetLimit, p.LimitBytes, p.LimitFrom = false, 0, "GOMEMLIMIT"
	}
	return p
}

// applyGC applies the plan and logs the settings in force, read back from
// the runtime (so that an environment value is told as the runtime
// understood it).
func applyGC(p gcPlan, log *slog.Logger) {
	if p.SetPercent {
		debug.SetGCPercent(p.Percent)
	}
	if p.SetLimit {
		debug.SetMemoryLimit(p.LimitBytes)
	}
	s := []rtmetrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	rtmetrics.Read(s)
	limit := slog.StringValue("none")
	if b := s[1].Value.Uint64(); b < math.MaxInt64 {
		limit = slog.Uint64Value(b >> 20)
	}
	// GOGC=off reads back as the uint64 of -1.
	log.Info("garbage collector", "gc_percent", int64(s[0].Value.Uint64()), "gc_percent_from", p.PercentFrom,
		"memory_limit_mb", limit, "memory_limit_from", p.LimitFrom)
}
