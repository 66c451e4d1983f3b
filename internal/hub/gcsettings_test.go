package hub

import (
	"math"
	"testing"

	"github.com/devicehub/devicehub/internal/config"
)

func TestPlanGC(t *testing.T) {
	def := config.RuntimeConfig{GCPercent: 400, MemoryLimitMB: 1024}
	tests := []struct {
		name string
		rc   config.RuntimeConfig
		env  map[string]string
		want gcPlan
	}{
		{"configuration only", def, nil,
			gcPlan{SetPercent: true, Percent: 400, PercentFrom: "runtime.gc_percent", SetLimit: true, LimitBytes: 1 << 30, LimitFrom: "runtime.memory_limit_mb"}},
		{"no memory limit", config.RuntimeConfig{GCPercent: 100}, nil,
			gcPlan{SetPercent: true, Percent: 100, PercentFrom: "runtime.gc_percent", SetLimit: true, LimitBytes: math.MaxInt64, LimitFrom: "runtime.memory_limit_mb"}},
		{"GOGC wins", def, map[string]string{"GOGC": "100"},
			gcPlan{PercentFrom: "GOGC", SetLimit: true, LimitBytes: 1 << 30, LimitFrom: "runtime.memory_limit_mb"}},
		{"GOGC=off wins", def, map[string]string{"GOGC": "off"},
			gcPlan{PercentFrom: "GOGC", SetLimit: true, LimitBytes: 1 << 30, LimitFrom: "runtime.memory_limit_mb"}},
		{"GOMEMLIMIT wins", def, map[string]string{"GOMEMLIMIT": "512MiB"},
			gcPlan{SetPercent: true, Percent: 400, PercentFrom: "runtime.gc_percent", LimitFrom: "GOMEMLIMIT"}},
		{"both from the environment", def, map[string]string{"GOGC": "50", "GOMEMLIMIT": "off"},
			gcPlan{PercentFrom: "GOGC", LimitFrom: "GOMEMLIMIT"}},
		{"empty variables are unset", def, map[string]string{"GOGC": "", "GOMEMLIMIT": ""},
			gcPlan{SetPercent: true, Percent: 400, PercentFrom: "runtime.gc_percent", SetLimit: true, LimitBytes: 1 << 30, LimitFrom: "runtime.memory_limit_mb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			if got := planGC(tt.rc, env); got != tt.want {
				t.Errorf("planGC = %+v, want %+v", got, tt.want)
			}
		})
	}
}
