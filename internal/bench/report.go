package bench

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ChartFile is the name of the PNG chart in the output directory.
const ChartFile = "bench-ingest.png"

// Markdown writes the report: the goals, a table of medians and spreads
// per scenario, the ratios, the CPU profile and the charts (paths of the
// images relative to the report; "" is skipped).
func (r *Results) Markdown(w io.Writer, charts ...string) error {
	p := &printer{w: w}
	p.f("# devicehub bench\n\n")
	p.f("Command: `%s`\n\n", strings.Join(r.Command, " "))
	m := r.Machine
	p.f("Machine: %d CPUs (%s), %s memory, Linux %s, %s, open files %s. Load average before %s, after %s",
		m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.GoVersion, m.OpenFileLimit, m.LoadBefore, m.LoadAfter)
	p.f(" (the machine is shared: other builds ran at the same time).\n\n")
	if len(r.Versions) > 0 {
		var vs []string
		for _, k := range sortedKeys(r.Versions) {
			vs = append(vs, k+" "+r.Versions[k])
		}
		p.f("Versions: %s.\n\n", strings.Join(vs, "; "))
	}
	p.f("Started %s, took %s. Every figure is the median over rounds, with [min–max]; the systems ran in alternation (devicehub, Mosquitto, mochi, devicehub, ...). A ratio above 1 means devicehub did better: for rates devicehub/reference, for latencies, CPU and memory reference/devicehub; its median is the ratio of the medians, its range the smallest and largest per-round ratio.\n\n",
		r.Started.Format("2006-01-02 15:04 MST"), r.Finished.Sub(r.Started).Round(1e9))

	if len(r.Goals) > 0 {
		p.f("## Goals\n\n| goal | target | measured | met |\n|---|---|---|---|\n")
		for _, g := range r.Goals {
			p.f("| %s | %s | %s | %s |\n", g.Name, g.Target, g.Measured, g.Met)
		}
		p.f("\n")
	}

	p.f("## Ratios\n\n| scenario | figure | devicehub / Mosquitto | devicehub / mochi alone |\n|---|---|---|---|\n")
	for _, s := range r.Scenarios {
		if s.Ratios.VsMosquitto == nil && s.Ratios.VsMochi == nil {
			continue
		}
		p.f("| %s | %s | %s | %s |\n", s.Name, s.Headline, fmtRatio(s.Ratios.VsMosquitto), fmtRatio(s.Ratios.VsMochi))
	}
	p.f("\n")

	for _, s := range r.Scenarios {
		p.f("## %s\n\n", s.Title)
		p.f("Scenario `%s`", s.Name)
		switch {
		case s.OfferedLoad > 0 && s.Absolute:
			p.f(", offered load %s msgs/s, absolute (--open-loop-rate; %.0f %% of devicehub's peak in this run)", fmtNum(s.OfferedLoad), s.OfferedPct)
		case s.OfferedLoad > 0:
			p.f(", offered load %s msgs/s (%.0f %% of devicehub's peak)", fmtNum(s.OfferedLoad), s.OfferedPct)
		}
		p.f(".\n\n")
		syss := s.systems()
		// Scenarios of one system (the machine's limits, presence,
		// query) have no ratio columns.
		ratios := len(syss) > 1
		p.f("| figure |")
		for _, sys := range syss {
			p.f(" %s |", sys)
		}
		if ratios {
			p.f(" devicehub / Mosquitto | devicehub / mochi |")
		}
		p.f("\n|---|")
		for range syss {
			p.f("---|")
		}
		if ratios {
			p.f("---|---|")
		}
		p.f("\n")
		for _, fig := range s.Figures {
			p.f("| %s |", fig)
			for _, sys := range syss {
				sp, ok := s.Summary[sys][fig]
				if !ok || sp.N == 0 {
					p.f(" – |")
					continue
				}
				p.f(" %s |", fmtSpread(sp))
			}
			if ratios {
				rs := s.Ratios
				if fig != s.Headline {
					rs = s.Ratios.Figures[fig]
				}
				p.f(" %s | %s |", fmtRatio(rs.VsMosquitto), fmtRatio(rs.VsMochi))
			}
			p.f("\n")
		}
		p.f("\n")
		var errs []string
		for _, run := range s.Runs {
			if run.Error != "" {
				e := fmt.Sprintf("%s round %d: %s", run.System, run.Round, firstLine(run.Error))
				if run.Log != "" {
					e += fmt.Sprintf(" (hub log `%s`)", run.Log)
					if len(run.LogTail) > 0 {
						e += "; its last warnings and errors:"
						for _, l := range run.LogTail {
							e += "\n  - `" + strings.ReplaceAll(l, "`", "'") + "`"
						}
					}
				}
				errs = append(errs, e)
			}
		}
		for _, n := range append(s.Notes, errs...) {
			p.f("- %s\n", n)
		}
		if len(s.Notes)+len(errs) > 0 {
			p.f("\n")
		}
	}

	if r.Profile != nil {
		p.f("## CPU profile of devicehub under ingest\n\n")
		p.f("One extra closed-loop ingest run of devicehub with %d devices with a CPU profile (`%s`); top functions by flat and by cumulative time:\n\n```\n%s\n```\n\n",
			r.Profile.Devices, filepath.Base(r.Profile.Path), strings.Join(r.Profile.Top, "\n"))
		if len(r.Profile.AllocsTop) > 0 {
			p.f("The same run's allocations (`%s`: every allocation of the hub process from its start to its stop, sampled, so the provisioning of the devices' credentials and the start-up are in it); top functions by bytes allocated, flat and cumulative:\n\n```\n%s\n```\n\n",
				filepath.Base(r.Profile.AllocsPath), strings.Join(r.Profile.AllocsTop, "\n"))
		}
	}
	if t := r.HubTrace; t != nil {
		p.f("## Execution trace of devicehub under open-loop ingest\n\n")
		p.f("devicehub's round %d of `%s` ran under `devicehub bench %s` (--hub-trace), with an execution trace (`%s`), a CPU profile (`%s`) and an allocation profile (`%s`) over the hub process's life, start-up and stop included, in the run's directory. That round's figures include their cost. Read them with:\n\n",
			t.Round, t.Scenario, ProfiledServeCmd, filepath.Base(t.Path), filepath.Base(t.CPUPath), filepath.Base(t.AllocsPath))
		p.f("```\ngo tool trace %s\ngo tool trace -pprof=sched %s > sched.pprof   # where goroutines waited for a CPU\ngo tool pprof -http=: DEVICEHUB_BINARY %s\n```\n\n",
			filepath.Base(t.Path), filepath.Base(t.Path), filepath.Base(t.CPUPath))
	}
	if slices.ContainsFunc(charts, func(c string) bool { return c != "" }) {
		p.f("## Throughput and latency by offered load\n\n")
		for _, c := range charts {
			if c != "" {
				p.f("![throughput and latency by offered load](%s)\n\n", c)
			}
		}
	}
	if len(r.Notes) > 0 {
		p.f("## Notes\n\n")
		for _, n := range r.Notes {
			p.f("- %s\n", n)
		}
		p.f("\n")
	}
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// fmtNum formats a figure for a table: thousands separated above 1000,
// three significant digits below.
func fmtNum(x float64) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "–"
	case math.Abs(x) >= 1000:
		s := strconv.FormatInt(int64(math.Round(x)), 10)
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		if neg {
			return "-" + b.String()
		}
		return b.String()
	case math.Abs(x) >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case math.Abs(x) >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	case x == 0:
		return "0"
	}
	return strconv.FormatFloat(x, 'f', 2, 64)
}

func fmtSpread(s Spread) string {
	if s.N <= 1 || s.Min == s.Max {
		return fmtNum(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", fmtNum(s.Median), fmtNum(s.Min), fmtNum(s.Max))
}

func fmtRatio(r *Ratio) string {
	if r == nil {
		return "–"
	}
	return fmt.Sprintf("**%.2f** [%.2f–%.2f]", r.Median, r.Min, r.Max)
}
