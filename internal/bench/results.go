package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Results is DIR/results.json: every run's raw figures and what they were
// measured on.
type Results struct {
	// FormatVersion is the layout of the file (ResultsFormat; absent in
	// the files written before it was added, which have the layout of
	// version 1).
	FormatVersion int               `json:"format_version,omitempty"`
	Started       time.Time         `json:"started"`
	Finished      time.Time         `json:"finished"`
	Command       []string          `json:"command"`
	Machine       Machine           `json:"machine"`
	Versions      map[string]string `json:"versions"`
	Settings      map[string]any    `json:"settings"`
	Scenarios     []*Scenario       `json:"scenarios"`
	Goals         []Goal            `json:"goals"`
	Profile       *Profile          `json:"cpu_profile,omitempty"`
	HubTrace      *HubTrace         `json:"hub_trace,omitempty"`
	Notes         []string          `json:"notes,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	CPUs          int    `json:"cpus"`
	CPUModel      string `json:"cpu_model"`
	Kernel        string `json:"kernel"`
	MemTotal      string `json:"mem_total"`
	GoVersion     string `json:"go_version"`
	OpenFileLimit string `json:"open_file_limit"`
	LoadBefore    string `json:"loadavg_before"`
	LoadAfter     string `json:"loadavg_after"`
}

// Goal is one of the targets and whether this run met it.
type Goal struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	// Met is "yes", "no" or "not measured".
	Met string `json:"met"`
}

// Profile is the CPU profile of devicehub under the ingest scenario.
type Profile struct {
	Devices int      `json:"devices"` // of the closed-loop ingest run profiled
	Path    string   `json:"path"`
	Top     []string `json:"top"`
	// AllocsPath is the same run's allocation profile, AllocsTop its top
	// functions by bytes allocated (empty in results of earlier versions).
	AllocsPath string   `json:"allocs_path,omitempty"`
	AllocsTop  []string `json:"allocs_top,omitempty"`
	// Figures are the profiled run's own (acked: the readings the
	// profiles' bytes and CPU are divided by).
	Figures map[string]float64 `json:"figures,omitempty"`
}

// Scenario is one measured scenario: its runs (every system, every
// round) and devicehub's ratios to the references.
type Scenario struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	// Headline is the figure the ratios compare.
	Headline string `json:"headline"`
	// Figures lists the figures the report shows, in order.
	Figures []string `json:"figures"`
	// OfferedLoad is the offered rate of an open-loop scenario (msgs/s).
	OfferedLoad float64 `json:"offered_load,omitempty"`
	// OfferedPct is OfferedLoad as a percentage of devicehub's peak.
	OfferedPct float64 `json:"offered_pct,omitempty"`
	// Absolute: OfferedLoad was given as a rate (--open-loop-rate), and
	// OfferedPct computed from it; otherwise OfferedPct was given (a
	// fraction of --open-loop) and OfferedLoad computed from it.
	Absolute bool                         `json:"offered_absolute,omitempty"`
	Ratios   Ratios                       `json:"ratios"`
	Summary  map[string]map[string]Spread `json:"summary"` // system → figure → spread over rounds
	Runs     []Measurement                `json:"runs"`
	Notes    []string                     `json:"notes,omitempty"`
}

// Ratios are devicehub's ratios to the references on the headline
// figure (nil when a side has no value), and on the other figures.
type Ratios struct {
	VsMosquitto *Ratio            `json:"vs_mosquitto"`
	VsMochi     *Ratio            `json:"vs_mochi"`
	Figures     map[string]Ratios `json:"by_figure,omitempty"`
}

// Measurement is one run of one system in one round.
type Measurement struct {
	System  string             `json:"system"`
	Round   int                `json:"round"`
	Started time.Time          `json:"started"`
	Seconds float64            `json:"seconds"`
	Figures map[string]float64 `json:"figures"`
	Error   string             `json:"error,omitempty"`
	// FirstDialFailure: the connections scenario's first failed TCP dial
	// with what the kernel said of its socket, kept even when the dial
	// was made again and the round has no error.
	FirstDialFailure string `json:"first_dial_failure,omitempty"`
	// Log and LogTail: a failed devicehub run's hub log (relative to the
	// output directory) and its last warnings and errors.
	Log     string   `json:"log,omitempty"`
	LogTail []string `json:"log_tail,omitempty"`
}

// noRatio lists figures that are counts of failures and retries, or the
// load generator's own: a ratio of them between systems means nothing
// (and a round without any reports 0, which ratios leave out).
var noRatio = map[string]bool{
	"connect_failed": true, "dial_retried": true, "dial_unanswered": true, "dial_answered_late": true,
	"kernel_listen_overflows": true, "kernel_syn_retrans": true, "kernel_tcp_timeouts": true, "loadgen_sched_max_ms": true,
}

// higherIsBetter tells the direction of a figure by its name.
func higherIsBetter(fig string) bool {
	for _, s := range []string{"_ms", "_kb", "_mb", "_pct", "_per_10k", "per_reading", "lost", "errors"} {
		if strings.Contains(fig, s) {
			return false
		}
	}
	return true
}

// values returns the figure's value of each round of system, in round
// order (0 for a round without it).
func (s *Scenario) values(system, fig string) []float64 {
	var out []float64
	for _, r := range s.Runs {
		if r.System == system {
			out = append(out, r.Figures[fig])
		}
	}
	return out
}

// Finish computes the summary and the ratios from the runs.
func (s *Scenario) Finish() {
	s.Summary = map[string]map[string]Spread{}
	for _, r := range s.Runs {
		if s.Summary[r.System] == nil {
			s.Summary[r.System] = map[string]Spread{}
		}
	}
	for sys := range s.Summary {
		figs := map[string]bool{}
		for _, r := range s.Runs {
			if r.System == sys {
				for f := range r.Figures {
					figs[f] = true
				}
			}
		}
		for f := range figs {
			var xs []float64
			for _, r := range s.Runs {
				if v, ok := r.Figures[f]; ok && r.System == sys {
					xs = append(xs, v)
				}
			}
			s.Summary[sys][f] = SpreadOf(xs)
		}
	}
	ratio := func(fig, ref string) *Ratio {
		return RatioOf(fig, s.values(SysDevicehub, fig), s.values(ref, fig), higherIsBetter(fig))
	}
	if s.Headline != "" {
		s.Ratios.VsMosquitto = ratio(s.Headline, SysMosquitto)
		s.Ratios.VsMochi = ratio(s.Headline, SysMochi)
	}
	for _, f := range s.Figures {
		if f == s.Headline || noRatio[f] {
			continue
		}
		r := Ratios{VsMosquitto: ratio(f, SysMosquitto), VsMochi: ratio(f, SysMochi)}
		if r.VsMosquitto != nil || r.VsMochi != nil {
			if s.Ratios.Figures == nil {
				s.Ratios.Figures = map[string]Ratios{}
			}
			s.Ratios.Figures[f] = r
		}
	}
}

// systems returns the systems that ran, devicehub first.
func (s *Scenario) systems() []string {
	order := []string{SysDevicehub, SysMosquitto, SysMochi, SysMachine}
	var out []string
	for _, sys := range order {
		if _, ok := s.Summary[sys]; ok {
			out = append(out, sys)
		}
	}
	var rest []string
	for sys := range s.Summary {
		if !slices.Contains(order, sys) {
			rest = append(rest, sys)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// Scenario returns the scenario with the name, nil if none.
func (r *Results) Scenario(name string) *Scenario {
	for _, s := range r.Scenarios {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// WriteJSON writes ResultsFile into dir.
func (r *Results) WriteJSON(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ResultsFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// machine describes this machine from /proc.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		_, v, _ := strings.Cut(l, ":")
		m.MemTotal = strings.TrimSpace(v)
	}
	if b, err := os.ReadFile("/proc/self/limits"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Max open files") {
				f := strings.Fields(l)
				if len(f) >= 5 {
					m.OpenFileLimit = f[3] + " soft / " + f[4] + " hard"
				}
			}
		}
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
