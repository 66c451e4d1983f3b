package bench

import (
	"fmt"
	"os"
	"path/filepath"
)

// Files of the traced open-loop run (Options.HubTrace) in OutDir.
const (
	HubTraceFile    = "devicehub-open.trace"
	HubTraceCPUFile = "devicehub-open.cpu.pprof"
)

// HubTrace is results.json's record of the devicehub run that ran under
// an execution trace (Options.HubTrace). Paths are those the run wrote
// (the report names their base names: they are in the run's directory).
type HubTrace struct {
	Scenario   string `json:"scenario"`
	Round      int    `json:"round"`
	Path       string `json:"path"`
	CPUPath    string `json:"cpu_path"`
	AllocsPath string `json:"allocs_path"`
}

// hubTrace returns the profiling of the traced run of sc and records it
// in the results; hubTraced completes the record once the run is done.
func (r *runner) hubTrace(sc *Scenario) profiling {
	prof := profiling{cpu: filepath.Join(r.o.OutDir, HubTraceCPUFile), trace: filepath.Join(r.o.OutDir, HubTraceFile)}
	r.res.HubTrace = &HubTrace{Scenario: sc.Name, Round: 1, Path: prof.trace, CPUPath: prof.cpu, AllocsPath: allocsPath(prof.cpu)}
	sc.Notes = append(sc.Notes, fmt.Sprintf("devicehub's round 1 ran under `devicehub bench %s` with an execution trace (`%s`) and a CPU profile (`%s`) over the hub's life (--hub-trace): its figures include their cost.",
		ProfiledServeCmd, HubTraceFile, HubTraceCPUFile))
	r.logf("%s: devicehub's round 1 runs traced: %s", sc.Name, prof.trace)
	return prof
}

// hubTraced notes a traced run that left no trace: a failed hub, or one
// killed before it stopped tracing.
func (r *runner) hubTraced(run Measurement) {
	t := r.res.HubTrace
	if fi, err := os.Stat(t.Path); err != nil || fi.Size() == 0 {
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("--hub-trace: %s round 1 left no execution trace (%s)", t.Scenario, firstLine(run.Error)))
		r.res.HubTrace = nil
	}
}
