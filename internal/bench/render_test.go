package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// runResults is what a run with two device counts and two open-loop loads
// holds at its end: Mosquitto at one size only, a failed round, a CPU
// profile, times read from the wall clock (with a monotonic reading) in a
// zone that is not the machine's.
func runResults() *Results {
	zone := time.FixedZone("CET", 3600)
	start := time.Now().In(zone)
	res := &Results{
		FormatVersion: ResultsFormat,
		Started:       start,
		Finished:      time.Now().Add(19*time.Minute + 45*time.Second).In(zone),
		Command:       []string{"devicehub", "bench", "ingest", "--devices", "100,1000", "--out", "x"},
		Machine:       Machine{CPUs: 2, CPUModel: "AMD EPYC", LoadBefore: "1.57 1.62 2.32", LoadAfter: "1.84 2.75 3.18"},
		Versions:      map[string]string{"devicehub": "(devel)", "mosquitto": "2.0.11"},
		Settings:      map[string]any{"rounds": 3, "devices": []int{100, 1000}, "open_loop": []float64{0.25, 0.5}, "duration": "3s"},
		Goals:         []Goal{{Name: "p99 at half of peak", Target: "< 20 ms", Measured: "12.6 [11.7–17.4] ms", Met: "yes"}},
		Profile: &Profile{Devices: 100, Path: "/tmp/out/devicehub.cpu.pprof", Top: []string{"flat  flat%", "1.2s 10% syscall"},
			AllocsPath: "/tmp/out/devicehub.allocs.pprof", AllocsTop: []string{"flat  flat%", "19MB 17% argon2.initBlocks"}},
		HubTrace: &HubTrace{Scenario: "ingest_open_100_25", Round: 1, Path: "/tmp/out/devicehub-open.trace", CPUPath: "/tmp/out/devicehub-open.cpu.pprof",
			AllocsPath: "/tmp/out/devicehub-open.allocs.pprof"},
		Notes: []string{"a run note"},
	}
	for _, n := range []int{100, 1000} {
		systems := []string{SysDevicehub, SysMosquitto, SysMochi}
		if n == 1000 {
			systems = []string{SysDevicehub, SysMochi}
		}
		closed := &Scenario{Name: fmt.Sprintf("ingest_closed_%d", n), Title: "Ingest closed", Headline: "rate", Figures: []string{"rate", "puback_p99_ms"}}
		for round := 1; round <= 3; round++ {
			for i, sys := range systems {
				closed.Runs = append(closed.Runs, Measurement{System: sys, Round: round, Started: start, Seconds: 3.1,
					Figures: map[string]float64{"rate": float64(n*10+i*1000) + float64(round)/3, "puback_p99_ms": 1.0 / float64(round+i)}})
			}
		}
		closed.Runs = append(closed.Runs, Measurement{System: SysDevicehub, Round: 4, Error: "lost 1 of 2 acknowledged messages\nmore",
			Log: "logs/devicehub-9.log", LogTail: []string{"time=5 level=ERROR msg=`x`"}})
		closed.Finish()
		res.Scenarios = append(res.Scenarios, closed)
		for _, frac := range []float64{0.25, 0.5, 1.0 / 3} {
			open := &Scenario{Name: fmt.Sprintf("ingest_open_%d_%.0f", n, frac*100), Title: "Ingest open", Headline: "puback_p99_ms",
				Figures: []string{"offered_rate", "achieved_rate", "puback_p99_ms"}, OfferedLoad: frac * 12345.678, OfferedPct: frac * 100,
				Notes: []string{"an open-loop note"}}
			for round := 1; round <= 3; round++ {
				for i, sys := range systems {
					open.Runs = append(open.Runs, Measurement{System: sys, Round: round,
						Figures: map[string]float64{"offered_rate": frac * 12345.678, "achieved_rate": frac*12345.678 - float64(i), "puback_p99_ms": 3.3*frac + float64(i*round)/7}})
				}
			}
			open.Finish()
			res.Scenarios = append(res.Scenarios, open)
		}
	}
	// 2,000 devices at an absolute rate (--open-loop-rate 2000=9000.5),
	// above the peak of 8,000.
	closed := &Scenario{Name: "ingest_closed_2000", Title: "Ingest closed", Headline: "rate", Figures: []string{"rate"}}
	abs := &Scenario{Name: rateScenarioName(2000, 9000.5), Title: "Ingest open at an absolute rate", Headline: "puback_p99_ms",
		Figures: []string{"offered_rate", "achieved_rate", "puback_p99_ms"}, OfferedLoad: 9000.5, OfferedPct: 100 * 9000.5 / 8000, Absolute: true,
		Notes: []string{"an absolute-rate note"}}
	for i, sys := range []string{SysDevicehub, SysMochi} {
		closed.Runs = append(closed.Runs, Measurement{System: sys, Round: 1, Figures: map[string]float64{"rate": 8000 + float64(i)}})
		abs.Runs = append(abs.Runs, Measurement{System: sys, Round: 1, Figures: map[string]float64{"offered_rate": 9000.5, "achieved_rate": 7900 - float64(i), "puback_p99_ms": 250 + float64(i)}})
	}
	closed.Finish()
	abs.Finish()
	res.Scenarios = append(res.Scenarios, closed, abs)
	res.Settings["open_loop_rate"] = map[string]float64{"2000": 9000.5}
	return res
}

// dirFiles returns the files of dir by name.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[d.Name()] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestRenderAgain: a run's end (writeAndRender, what Run calls) and a
// later render of its results.json into another directory (what `devicehub
// bench report` does) write the same report.md and charts, byte for byte.
func TestRenderAgain(t *testing.T) {
	run, again := t.TempDir(), t.TempDir()
	if err := writeAndRender(runResults(), run); err != nil {
		t.Fatal(err)
	}
	res, err := ReadResults(filepath.Join(run, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := Render(res, again); err != nil {
		t.Fatal(err)
	}
	got, want := dirFiles(t, again), dirFiles(t, run)
	delete(want, ResultsFile)
	if names := slices.Sorted(maps.Keys(want)); !slices.Equal(names, []string{"bench-ingest-1000.png", "bench-ingest-2000.png", ChartFile, ReportFile}) {
		t.Fatalf("the run wrote %v", names)
	}
	if len(got) != len(want) {
		t.Errorf("rendered %v, the run %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	for name, w := range want {
		if !bytes.Equal(got[name], w) {
			t.Errorf("%s differs from the run's:\n%s\n---- the run's:\n%s", name, clip(got[name]), clip(w))
		}
	}
	md := string(want[ReportFile])
	for _, s := range []string{"![throughput and latency by offered load](" + ChartFile + ")", "(bench-ingest-1000.png)",
		"took 19m45s", "- a run note", "hub log `logs/devicehub-9.log`", "`devicehub.cpu.pprof`",
		"`devicehub.allocs.pprof`", "19MB 17% argon2.initBlocks", "(bench-ingest-2000.png)",
		"Scenario `ingest_open_2000_rate_9000.5`, offered load 9,001 msgs/s, absolute (--open-loop-rate; 113 % of devicehub's peak in this run).",
		"- an absolute-rate note", "round 1 of `ingest_open_100_25` ran under `devicehub bench profiled-serve` (--hub-trace)",
		"\ngo tool trace devicehub-open.trace\n", "go tool pprof -http=: DEVICEHUB_BINARY devicehub-open.cpu.pprof", "`devicehub-open.allocs.pprof`"} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q", s)
		}
	}
}

// TestResultsRoundTrip: what the renderer reads survives the file: a
// decoded results value written and read again renders the same report
// and the same charts.
func TestResultsRoundTrip(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if err := runResults().WriteJSON(a); err != nil {
		t.Fatal(err)
	}
	first, err := ReadResults(filepath.Join(a, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := first.WriteJSON(b); err != nil {
		t.Fatal(err)
	}
	fa, fb := dirFiles(t, a), dirFiles(t, b)
	if !bytes.Equal(fa[ResultsFile], fb[ResultsFile]) {
		t.Errorf("results.json changed on a round trip:\n%s\n----\n%s", clip(fb[ResultsFile]), clip(fa[ResultsFile]))
	}
	second, err := ReadResults(filepath.Join(b, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	var m1, m2 bytes.Buffer
	if err := first.Markdown(&m1, ChartFile); err != nil {
		t.Fatal(err)
	}
	if err := second.Markdown(&m2, ChartFile); err != nil {
		t.Fatal(err)
	}
	if m1.String() != m2.String() {
		t.Errorf("report changed on a round trip")
	}
	for _, n := range first.chartDevices() {
		p1, p2 := first.chartPanels(n), second.chartPanels(n)
		if fmt.Sprint(p1) != fmt.Sprint(p2) || !hasSeries(p1) {
			t.Errorf("%d devices: chart panels %v, after a round trip %v", n, p1, p2)
		}
	}
}

// TestChartsFromResults: the charts are drawn from the scenarios' names
// and offered loads, in the order the run measured them, each system that
// has data in the colour of its place.
func TestChartsFromResults(t *testing.T) {
	res := runResults()
	third := 1.0 / 3 // the run's fraction, in float64 arithmetic as the run has it
	if got := res.chartDevices(); !slices.Equal(got, []int{100, 1000, 2000}) {
		t.Fatalf("chart devices = %v", got)
	}
	fractions := []float64{25, 50, third * 100}
	tests := []struct {
		n       int
		systems []string
		xs      []float64
	}{
		{100, []string{SysDevicehub, SysMosquitto, SysMochi}, fractions},
		{1000, []string{SysDevicehub, SysMochi}, fractions},
		// An absolute rate is placed at its share of the peak.
		{2000, []string{SysDevicehub, SysMochi}, []float64{100 * 9000.5 / 8000}},
		{10, nil, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			for _, p := range res.chartPanels(tt.n) {
				var names []string
				for _, s := range p.Series {
					names = append(names, s.Name)
					var xs []float64
					for _, pt := range s.Points {
						xs = append(xs, pt.X)
					}
					if !slices.Equal(xs, tt.xs) {
						t.Errorf("%s %s: x = %v, want the offered loads in the order they ran", p.Title, s.Name, xs)
					}
				}
				if !slices.Equal(names, tt.systems) {
					t.Errorf("%s: series %v, want %v", p.Title, names, tt.systems)
				}
			}
		})
	}
	if chartFile(100, 100) != ChartFile || chartFile(1000, 100) != "bench-ingest-1000.png" {
		t.Error("chart file names")
	}
}

// TestReadResultsErrors: a file that is missing, not JSON, of another
// layout or lacking what every run writes is refused, and the error names
// the file and what is wrong.
func TestReadResultsErrors(t *testing.T) {
	var good bytes.Buffer
	if err := json.NewEncoder(&good).Encode(runResults()); err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) string {
		if !strings.Contains(good.String(), old) {
			t.Fatalf("results lack %q", old)
		}
		return strings.Replace(good.String(), old, new, 1)
	}
	tests := []struct {
		name    string
		content string // "-": no file
		want    string
	}{
		{"missing", "-", "read results: open "},
		{"empty", "", "not a devicehub bench results file: unexpected end of JSON input"},
		{"not JSON", "# devicehub bench\n", "not a devicehub bench results file: line 1, column 1: invalid character '#'"},
		{"syntax error on line 3", "{\n  \"started\": \"2026-12-04T13:11:00Z\",\n  \"finished\" 1\n}", "line 3, column 14: invalid character '1' after object key"},
		{"an array", "[1, 2]", "not a devicehub bench results file: line 1, column 1: json: cannot unmarshal array into Go value"},
		{"a newer layout", edit(`"format_version":1`, `"format_version":2,"new_field":true`), "not a devicehub bench results file: format_version 2: this devicehub reads format 1 (render it with the devicehub that wrote it)"},
		{"a version that is not a number", edit(`"format_version":1`, `"format_version":"1"`), `format_version "1": this devicehub reads format 1`},
		{"unknown field", edit(`"format_version":1`, `"format_version":1,"colour":"blue"`), `not a devicehub bench results file: json: unknown field "colour"`},
		{"wrong type", edit(`"cpus":2`, `"cpus":"two"`), "cannot unmarshal string into Go struct field"},
		{"no started time", `{"format_version": 1, "scenarios": []}`, "not a devicehub bench results file: no started or finished time"},
		{"another JSON file", `{"mode": "ingest", "addr": "127.0.0.1:1883"}`, `json: unknown field "mode"`},
		{"null scenario", edit(`"scenarios":[`, `"scenarios":[null,`), "scenarios[0]: null"},
		{"scenario without a name", edit(`"name":"ingest_closed_100"`, `"name":""`), "scenarios[0]: no name"},
		{"scenario twice", edit(`"name":"ingest_closed_1000"`, `"name":"ingest_closed_100"`), `scenarios[4]: scenario "ingest_closed_100" twice`},
		{"run without a system", edit(`"system":"devicehub"`, `"system":""`), "scenario ingest_closed_100: runs[0]: no system"},
		{"data after the object", good.String() + "{}", "not a devicehub bench results file: line 2, column 1: invalid character '{' after top-level value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), ResultsFile)
			if tt.content != "-" {
				if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			res, err := ReadResults(path)
			if err == nil {
				t.Fatalf("no error; read %d scenarios", len(res.Scenarios))
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n  %s\nwant it to contain\n  %s", err, tt.want)
			}
			if tt.content != "-" && !errors.Is(err, ErrBadResults) {
				t.Errorf("error %v does not wrap ErrBadResults", err)
			}
		})
	}
}

// TestReadResultsBeforeFormatVersion: a results.json written before
// format_version existed has the layout of version 1 and renders.
func TestReadResultsBeforeFormatVersion(t *testing.T) {
	res := runResults()
	res.FormatVersion = 0 // omitted from the file, as before the field was added
	dir := t.TempDir()
	if err := res.WriteJSON(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, ResultsFile))
	if bytes.Contains(b, []byte("format_version")) {
		t.Fatal("the file has a format_version")
	}
	back, err := ReadResults(filepath.Join(dir, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := Render(back, dir); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseResults: results.json is read from outside (`devicehub bench
// report --from`). Whatever it holds, ParseResults refuses it with
// ErrBadResults or returns results that render (report and charts), and
// whose report is the same once written and read again.
func FuzzParseResults(f *testing.F) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(runResults()); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte(`{"started":"2026-12-04T13:11:00Z","finished":"2026-12-04T13:31:00+01:00","scenarios":[{"name":"ingest_closed_5"},{"name":"ingest_open_5_50","offered_pct":50,"summary":{"devicehub":{"achieved_rate":{"n":1,"median":3}}}}]}`))
	f.Add([]byte(`{"format_version":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := ParseResults(data)
		if err != nil {
			if !errors.Is(err, ErrBadResults) {
				t.Fatalf("error %v does not wrap ErrBadResults", err)
			}
			return
		}
		var md bytes.Buffer
		if err := res.Markdown(&md, ChartFile); err != nil {
			t.Fatal(err)
		}
		for _, n := range res.chartDevices() {
			if panels := res.chartPanels(n); hasSeries(panels) {
				if err := DrawChart(io.Discard, panels); err != nil {
					t.Fatal(err)
				}
			}
		}
		again, err := json.Marshal(res)
		if err != nil {
			return // a value JSON reads but does not write (a time beyond year 9999)
		}
		res2, err := ParseResults(again)
		if err != nil {
			t.Fatalf("results written again do not parse: %v\n%s", err, again)
		}
		var md2 bytes.Buffer
		if err := res2.Markdown(&md2, ChartFile); err != nil {
			t.Fatal(err)
		}
		if md.String() != md2.String() {
			t.Fatalf("report changed once written and read again:\n%s\n----\n%s", md.String(), md2.String())
		}
	})
}

// clip shortens a file's content for an error message.
func clip(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}
