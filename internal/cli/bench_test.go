package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/bench"
	"github.com/devicehub/devicehub/internal/config"
)

// benchResults writes the results.json of a small run into a new
// directory and returns the directory.
func benchResults(t *testing.T) string {
	t.Helper()
	start := time.Date(2026, 12, 4, 13, 11, 0, 0, time.UTC)
	res := &bench.Results{FormatVersion: bench.ResultsFormat, Started: start, Finished: start.Add(time.Minute), Command: []string{"devicehub", "bench", "ingest"}}
	closed := &bench.Scenario{Name: "ingest_closed_5", Title: "closed", Headline: "rate", Figures: []string{"rate"}}
	open := &bench.Scenario{Name: "ingest_open_5_50", Title: "open", Headline: "puback_p99_ms", Figures: []string{"achieved_rate", "puback_p99_ms"}, OfferedPct: 50}
	for _, sys := range []string{bench.SysDevicehub, bench.SysMochi} {
		closed.Runs = append(closed.Runs, bench.Measurement{System: sys, Round: 1, Figures: map[string]float64{"rate": 1000}})
		open.Runs = append(open.Runs, bench.Measurement{System: sys, Round: 1, Figures: map[string]float64{"achieved_rate": 500, "puback_p99_ms": 3}})
	}
	closed.Finish()
	open.Finish()
	res.Scenarios = []*bench.Scenario{closed, open}
	dir := t.TempDir()
	if err := res.WriteJSON(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBenchReport(t *testing.T) {
	run := benchResults(t)
	want := t.TempDir()
	res, err := bench.ReadResults(filepath.Join(run, bench.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := bench.Render(res, want); err != nil {
		t.Fatal(err)
	}
	same := func(t *testing.T, dir string) {
		t.Helper()
		for _, f := range []string{bench.ReportFile, bench.ChartFile} {
			got, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			w, _ := os.ReadFile(filepath.Join(want, f))
			if !bytes.Equal(got, w) {
				t.Errorf("%s differs from what bench.Render writes", f)
			}
		}
	}

	t.Run("into another directory", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "new")
		r := runCLI(t, context.Background(), noServe, "bench", "report", "--from", filepath.Join(run, bench.ResultsFile), "--out", out)
		if r.code != 0 || r.out != "wrote "+filepath.Join(out, bench.ReportFile)+"\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.out, r.err)
		}
		same(t, out)
		if _, err := os.Stat(filepath.Join(run, bench.ReportFile)); err == nil {
			t.Error("the run's directory got a report")
		}
	})
	t.Run("beside the results, from the directory", func(t *testing.T) {
		r := runCLI(t, context.Background(), noServe, "bench", "report", "--from", run)
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.err)
		}
		same(t, run)
	})

	bad := filepath.Join(t.TempDir(), bench.ResultsFile)
	if err := os.WriteFile(bad, []byte(`{"format_version": 7}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		contains []string
	}{
		{"no --from", []string{"bench", "report"}, ExitUsage, []string{"--from is required", "devicehub bench report --help"}},
		{"an argument", []string{"bench", "report", "x", "--from", run}, ExitUsage, []string{`unexpected argument "x"`}},
		{"missing file", []string{"bench", "report", "--from", filepath.Join(run, "nope.json")}, ExitError, []string{filepath.Join(run, "nope.json"), "no such file"}},
		{"another format", []string{"bench", "report", "--from", bad}, ExitError, []string{bad, "format_version 7: this devicehub reads format 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, context.Background(), noServe, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tt.code, r.err)
			}
			for _, s := range tt.contains {
				if !strings.Contains(r.err, s) {
					t.Errorf("stderr %q lacks %q", r.err, s)
				}
			}
		})
	}
}

// TestBenchFlagsRefused: bad flags fail before anything runs, naming the
// flag.
func TestBenchFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no out", []string{}, "--out is required"},
		{"inflight zero", []string{"--out", "x", "--inflight", "0"}, "--inflight 0"},
		{"hub env without =", []string{"--out", "x", "--hub-env", "GOGC"}, `--hub-env "GOGC": must be KEY=VALUE`},
		{"hub env without key", []string{"--out", "x", "--hub-env", "=off"}, `--hub-env "=off": must be KEY=VALUE`},
		{"rate pair without =", []string{"--out", "x", "--open-loop-rate", "100"}, `invalid argument "100" for "--open-loop-rate" flag: "100": want DEVICES=RATE (e.g. 100=10000)`},
		{"rate not a number", []string{"--out", "x", "--open-loop-rate", "100=10000,1000=lots"}, `"--open-loop-rate" flag: "1000=lots": rate "lots" is not a number of messages per second`},
		{"rate zero", []string{"--out", "x", "--open-loop-rate", "100=0"}, `"--open-loop-rate" flag: "100=0": rate 0 must be above 0 messages per second`},
		{"rate negative", []string{"--out", "x", "--open-loop-rate", "100=-5"}, `"100=-5": rate -5 must be above 0`},
		{"count not a number", []string{"--out", "x", "--open-loop-rate", "many=5"}, `"many=5": device count "many" is not a positive integer`},
		{"count twice in a flag", []string{"--out", "x", "--open-loop-rate", "100=5,100=6"}, `"100=6": a second rate for 100 devices`},
		{"count twice in two flags", []string{"--out", "x", "--open-loop-rate", "100=5", "--open-loop-rate", "100=6"}, `"--open-loop-rate" flag: a second rate for 100 devices`},
		{"rate for a count not measured", []string{"--out", "x", "--devices", "100,1000", "--open-loop-rate", "100=5,500=6"},
			"--open-loop-rate 500=6: 500 devices is not one of the ingest device counts (--devices 100,1000)"},
		{"rate for the default count only", []string{"--out", "x", "--open-loop-rate", "1000=6"}, "1000 devices is not one of the ingest device counts (--devices 100)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newBenchCmd(nil)
			cmd.SetArgs(tc.args)
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			err := cmd.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one that says %q", err, tc.want)
			}
		})
	}
}

// TestBenchOpenLoopRateFlag: --open-loop-rate reads DEVICES=RATE pairs,
// with spaces, exponents and repeated flags, into the rate of each count.
func TestBenchOpenLoopRateFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // the flag's value, as bench.FormatOpenLoopRates writes it
	}{
		{"none", nil, ""},
		{"one", []string{"--open-loop-rate", "100=10000"}, "100=10000"},
		{"two", []string{"--open-loop-rate", "100=10000,1000=14000"}, "100=10000,1000=14000"},
		{"any order, spaces, an exponent, a fraction", []string{"--open-loop-rate", " 1000 = 1.4e4 , 100=9999.5"}, "100=9999.5,1000=14000"},
		{"repeated", []string{"--open-loop-rate", "1000=14000", "--open-loop-rate=100=10000"}, "100=10000,1000=14000"},
		{"empty", []string{"--open-loop-rate", ""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newBenchCmd(nil)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			if got := cmd.Flags().Lookup("open-loop-rate").Value.String(); got != tc.want {
				t.Errorf("--open-loop-rate = %q, want %q", got, tc.want)
			}
		})
	}
	// A rate for a count the run does not measure is a usage error.
	r := runCLI(t, context.Background(), noServe, "bench", "ingest", "--out", t.TempDir(), "--devices", "5", "--open-loop-rate", "6=100")
	if r.code != ExitUsage || !strings.Contains(r.err, "6 devices is not one of the ingest device counts (--devices 5)") || !strings.Contains(r.err, "devicehub bench --help") {
		t.Errorf("exit %d, stderr %q", r.code, r.err)
	}
}

// TestProfiledServeTrace: `bench profiled-serve --trace` writes an
// execution trace of the whole serve beside the CPU and allocation
// profiles, and stops both when serve returns, also when it fails to
// start the trace.
func TestProfiledServeTrace(t *testing.T) {
	dir := t.TempDir()
	cpu, allocs, tr := filepath.Join(dir, "h.cpu.pprof"), filepath.Join(dir, "h.allocs.pprof"), filepath.Join(dir, "h.trace")
	served := false
	serve := func(ctx context.Context, _ string, _ config.Overrides) error {
		served = true
		done := make(chan int)
		go func() { done <- len(make([]byte, 1<<20)) }()
		<-done
		return nil
	}
	r := runCLI(t, context.Background(), serve, "bench", bench.ProfiledServeCmd, "--cpuprofile", cpu, "--allocprofile", allocs, "--trace", tr, "--config", "unused.yaml")
	if r.code != 0 || !served {
		t.Fatalf("exit %d (served %v): %s", r.code, served, r.err)
	}
	b, err := os.ReadFile(tr)
	if err != nil || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Errorf("trace %q…, %v; want a Go execution trace", b[:min(len(b), 16)], err)
	}
	for _, p := range []string{cpu, allocs} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}

	// A trace that cannot be written: the hub does not start, and the
	// CPU profile is stopped (the next run can start its own).
	r = runCLI(t, context.Background(), serve, "bench", bench.ProfiledServeCmd, "--cpuprofile", cpu, "--trace", filepath.Join(dir, "no", "such", "dir", "h.trace"), "--config", "unused.yaml")
	if r.code == 0 || !strings.Contains(r.err, "trace: open") {
		t.Errorf("exit %d, stderr %q; want a trace error", r.code, r.err)
	}
	served = false
	if r := runCLI(t, context.Background(), serve, "bench", bench.ProfiledServeCmd, "--cpuprofile", cpu, "--trace", tr, "--config", "unused.yaml"); r.code != 0 || !served {
		t.Errorf("after a failed trace: exit %d (served %v): %s", r.code, served, r.err)
	}
}
