package bench_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/internal/bench"
	"github.com/devicehub/devicehub/internal/cli"
	"github.com/devicehub/devicehub/internal/hub"
)

// TestMain lets the test binary act as the devicehub binary: the bench
// starts it as the hub, the load generator and mochi alone.
func TestMain(m *testing.M) {
	if os.Getenv("DEVICEHUB_BENCH_CHILD") == "1" {
		if err := cli.NewRoot(hub.Serve).Execute(); err != nil {
			os.Exit(cli.ExitCode(err))
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		// Only the test client's idle keep-alive connections may remain
		// (see internal/hub's TestMain).
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	)
}

// TestSmoke runs every scenario at a tiny size against real child
// processes, so that the command never rots. Without mosquitto it still
// runs and the report says so.
func TestSmoke(t *testing.T) {
	out := t.TempDir()
	var log strings.Builder
	o := bench.Options{
		OutDir:      out,
		Exe:         os.Args[0],
		Env:         []string{"DEVICEHUB_BENCH_CHILD=1"},
		Rounds:      1,
		Duration:    300 * time.Millisecond,
		Devices:     []int{3},
		Inflight:    2, // the windowed path; every scenario below must still lose nothing
		OpenLoop:    []float64{0.5},
		Warmup:      200 * time.Millisecond, // counted apart: the open-loop runs must still lose nothing
		Connections: []int{10},
		Hold:        200 * time.Millisecond,
		Presence:    4,
		Heartbeat:   500 * time.Millisecond,
		// The query scenario: 10 devices, 20 readings each, 5 queries of
		// each kind.
		QueryReadings: 200,
		QueryDevices:  10,
		Queries:       5,
		CommandLine:   []string{"go", "test", "-short"},
		Log:           &log,
		WorkDir:       t.TempDir(),
	}
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
			t.Log("mosquitto is not installed: the smoke run leaves it out")
		}
	}
	res, err := bench.Run(t.Context(), o)
	if testing.Verbose() {
		t.Log(log.String())
	}
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, log.String())
	}
	for _, s := range res.Scenarios {
		for _, r := range s.Runs {
			if r.Error != "" {
				t.Errorf("%s %s round %d: %s", s.Name, r.System, r.Round, r.Error)
			}
		}
	}
	for _, name := range []string{"ingest_closed_3", "ingest_open_3_50", "limits_sqlite_append", "limits_loadgen_qos0", "connections_10", "presence_4", "query_200"} {
		s := res.Scenario(name)
		if s == nil {
			t.Errorf("no scenario %s", name)
			continue
		}
		if s.Summary[s.Runs[0].System] == nil {
			t.Errorf("%s: no summary", name)
		}
	}
	if s := res.Scenario("ingest_closed_3"); s != nil {
		if s.Summary[bench.SysDevicehub]["rate"].Median <= 0 {
			t.Errorf("devicehub stored nothing: %+v", s.Summary[bench.SysDevicehub])
		}
		if s.Ratios.VsMochi == nil {
			t.Error("no devicehub/mochi ratio")
		}
	}
	if s := res.Scenario("ingest_open_3_50"); s != nil {
		for _, r := range s.Runs {
			if r.Figures["warmup_p99_ms"] <= 0 {
				t.Errorf("ingest_open_3_50 %s: no warm-up latency: %v", r.System, r.Figures)
			}
		}
	}
	if s := res.Scenario("query_200"); s != nil {
		sum := s.Summary[bench.SysDevicehub]
		if sum["stored"].Median != 200 || sum["bytes_per_reading"].Median <= 0 || sum["latest_all_s"].Median <= 0 {
			t.Errorf("query: %+v", sum)
		}
		// 20 readings per device over 10 days: the newest 1000 are all
		// 20 of them, and one day holds 2.
		if got := sum["newest_1000_rows"].Median; got != 20 {
			t.Errorf("newest_1000_rows = %v, want 20", got)
		}
		if got := sum["day_field_rows"].Median; got < 1 || got > 3 {
			t.Errorf("day_field_rows = %v, want about 2", got)
		}
		// Every device in one request; a week holds 14 of a device's
		// readings, each in its own of the 500 buckets.
		if got := sum["latest_values_devices"].Median; got != 10 {
			t.Errorf("latest_values_devices = %v, want 10", got)
		}
		if got := sum["week_buckets_rows"].Median; got < 13 || got > 15 {
			t.Errorf("week_buckets_rows = %v, want about 14", got)
		}
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if !strings.Contains(string(b), `"vs_mosquitto"`) || !strings.Contains(string(b), `"vs_mochi"`) {
		t.Error("results.json lacks the ratios")
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# devicehub bench", "## Goals", "## Ratios", "ingest_closed_3", "up to 2 messages in flight", "< 20 ms", "≤ 16 KiB",
		"a week of one field in 500 buckets, p99 (200 readings)", "≤ 8 bytes"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(out, bench.ChartFile)); err != nil {
		t.Errorf("no chart: %v", err)
	}

	// `devicehub bench report` renders this run's results.json into
	// another directory: the run's report and chart, byte for byte.
	again := t.TempDir()
	var stdout, stderr strings.Builder
	if code := cli.Run(t.Context(), hub.Serve, []string{"bench", "report", "--from", filepath.Join(out, bench.ResultsFile), "--out", again}, &stdout, &stderr); code != 0 {
		t.Fatalf("bench report: exit %d: %s", code, stderr.String())
	}
	for _, f := range []string{bench.ReportFile, bench.ChartFile} {
		run, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(again, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, run) {
			t.Errorf("%s rendered again from results.json differs from the run's", f)
		}
	}
}

// TestSmokeOpenLoopRate: a device count with an absolute open-loop rate
// runs its closed loop and then one open-loop scenario at that rate for
// every system, named apart from the fractions, recorded in the settings
// and rendered again byte for byte. With --hub-trace, devicehub's round
// of that scenario runs under an execution trace and a CPU profile that
// the report names.
func TestSmokeOpenLoopRate(t *testing.T) {
	out := t.TempDir()
	var log strings.Builder
	o := bench.Options{
		Scenarios:    []string{bench.ScenarioIngest},
		OutDir:       out,
		Exe:          os.Args[0],
		Env:          []string{"DEVICEHUB_BENCH_CHILD=1"},
		Mosquitto:    "-",
		Rounds:       1,
		Duration:     300 * time.Millisecond,
		Devices:      []int{3},
		OpenLoop:     []float64{0.5},
		OpenLoopRate: map[int]float64{3: 150},
		HubTrace:     true,
		Warmup:       100 * time.Millisecond,
		CommandLine:  []string{"go", "test"},
		Log:          &log,
		WorkDir:      t.TempDir(),
	}
	res, err := bench.Run(t.Context(), o)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, log.String())
	}
	var names []string
	for _, s := range res.Scenarios {
		names = append(names, s.Name)
		for _, r := range s.Runs {
			if r.Error != "" {
				t.Errorf("%s %s round %d: %s", s.Name, r.System, r.Round, r.Error)
			}
		}
	}
	if want := []string{"ingest_closed_3", "ingest_open_3_rate_150"}; !slices.Equal(names, want) {
		t.Fatalf("scenarios %v, want %v", names, want)
	}
	s := res.Scenario("ingest_open_3_rate_150")
	peak := res.Scenario("ingest_closed_3").Summary[bench.SysDevicehub]["rate"].Median
	if !s.Absolute || s.OfferedLoad != 150 || peak <= 0 || math.Abs(s.OfferedPct-100*150/peak) > 1e-9 {
		t.Errorf("absolute %v, offered %v msgs/s = %v %% of the peak %v", s.Absolute, s.OfferedLoad, s.OfferedPct, peak)
	}
	if !strings.Contains(s.Title, "absolute 150 msgs/s") || !strings.Contains(strings.Join(s.Notes, " "), "--open-loop-rate 3=150") {
		t.Errorf("title %q, notes %q: the rate is not said to be absolute", s.Title, s.Notes)
	}
	for _, sys := range []string{bench.SysDevicehub, bench.SysMochi} {
		if got := s.Summary[sys]["offered_rate"].Median; got != 150 {
			t.Errorf("%s offered %v msgs/s, want 150", sys, got)
		}
	}
	b, err := os.ReadFile(filepath.Join(out, bench.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"open_loop_rate": {
      "3": 150
    }`) {
		t.Errorf("results.json's settings lack the rate:\n%s", b[:min(len(b), 1500)])
	}
	md, err := os.ReadFile(filepath.Join(out, bench.ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "Scenario `ingest_open_3_rate_150`, offered load 150 msgs/s, absolute (--open-loop-rate;") {
		t.Errorf("report.md does not say the load is absolute:\n%s", md)
	}

	if tr := res.HubTrace; tr == nil || tr.Scenario != "ingest_open_3_rate_150" || tr.Round != 1 {
		t.Errorf("hub trace %+v, want round 1 of ingest_open_3_rate_150", tr)
	}
	trace, err := os.ReadFile(filepath.Join(out, bench.HubTraceFile))
	if err != nil || !bytes.HasPrefix(trace, []byte("go 1.")) {
		t.Errorf("%s: %q…, %v; want a Go execution trace", bench.HubTraceFile, trace[:min(len(trace), 16)], err)
	}
	if fi, err := os.Stat(filepath.Join(out, bench.HubTraceCPUFile)); err != nil || fi.Size() == 0 {
		t.Errorf("%s: %v", bench.HubTraceCPUFile, err)
	}
	for _, want := range []string{"## Execution trace of devicehub under open-loop ingest", "round 1 of `ingest_open_3_rate_150`",
		"go tool trace " + bench.HubTraceFile, "`" + bench.HubTraceCPUFile + "`", "devicehub's round 1 ran under `devicehub bench profiled-serve`"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if strings.Contains(string(b), `"hub_trace": false`) {
		t.Error("results.json's settings say hub_trace false")
	}
	again := t.TempDir()
	var stdout, stderr strings.Builder
	if code := cli.Run(t.Context(), hub.Serve, []string{"bench", "report", "--from", out, "--out", again}, &stdout, &stderr); code != 0 {
		t.Fatalf("bench report: exit %d: %s", code, stderr.String())
	}
	for _, f := range []string{bench.ReportFile, bench.ChartFile} {
		run, _ := os.ReadFile(filepath.Join(out, f))
		got, err := os.ReadFile(filepath.Join(again, f))
		if err != nil || !bytes.Equal(got, run) {
			t.Errorf("%s rendered again from results.json differs from the run's (%v)", f, err)
		}
	}
}

// TestInflightRange: a window the brokers would not grant is refused
// before anything runs, naming the setting.
func TestInflightRange(t *testing.T) {
	for _, n := range []int{-1, bench.MaxInflight + 1} {
		_, err := bench.Run(t.Context(), bench.Options{Scenarios: []string{"ingest"}, OutDir: t.TempDir(), Exe: os.Args[0], Inflight: n})
		if err == nil || !strings.Contains(err.Error(), "inflight") {
			t.Errorf("inflight %d: err = %v, want an inflight range error", n, err)
		}
	}
}

// TestUnknownScenario: a misspelt scenario is refused before anything runs.
func TestUnknownScenario(t *testing.T) {
	_, err := bench.Run(t.Context(), bench.Options{Scenarios: []string{"ingset"}, OutDir: t.TempDir(), Exe: os.Args[0]})
	if err == nil || !strings.Contains(err.Error(), "ingset") {
		t.Fatalf("err = %v, want unknown scenario", err)
	}
}
