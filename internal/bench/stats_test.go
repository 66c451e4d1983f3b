package bench

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		sorted []float64
		p      float64
		want   float64
	}{
		{"empty", nil, 0.5, 0},
		{"one value", []float64{7}, 0.99, 7},
		{"median of odd count", []float64{1, 2, 3, 4, 5}, 0.5, 3},
		{"median of even count is the lower middle (nearest rank)", []float64{1, 2, 3, 4}, 0.5, 2},
		{"p99 of 100 values", seq(100), 0.99, 99},
		{"p99 of 1000 values", seq(1000), 0.99, 990},
		{"p0 is the minimum", []float64{3, 4}, 0, 3},
		{"p100 is the maximum", []float64{3, 4}, 1, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func seq(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(i + 1)
	}
	return s
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		want float64
	}{
		{"empty", nil, 0},
		{"odd", []float64{5, 1, 3}, 3},
		{"even is the mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]float64(nil), tt.xs...)
			if got := Median(tt.xs); got != tt.want {
				t.Errorf("Median = %v, want %v", got, tt.want)
			}
			for i := range in {
				if in[i] != tt.xs[i] {
					t.Fatal("Median modified its input")
				}
			}
		})
	}
}

func TestLatencyOf(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Millisecond)
	}
	l := LatencyOf(ds)
	if l.N != 100 || l.P50 != 50 || l.P99 != 99 || l.Max != 100 {
		t.Errorf("LatencyOf = %+v, want n=100 p50=50 p99=99 max=100", l)
	}
	if got := LatencyOf(nil); got != (Latency{}) {
		t.Errorf("LatencyOf(nil) = %+v", got)
	}
}

func TestRatioOf(t *testing.T) {
	tests := []struct {
		name     string
		dh, ref  []float64
		higher   bool
		want     *Ratio
		wantNil  bool
		tolerant bool
	}{
		{name: "rate: devicehub twice as fast", dh: []float64{20, 22, 18}, ref: []float64{10, 11, 9}, higher: true,
			want: &Ratio{Median: 2, Min: 2, Max: 2, Rounds: 3}},
		{name: "latency: devicehub twice as slow is 0.5", dh: []float64{20, 20, 20}, ref: []float64{10, 10, 10}, higher: false,
			want: &Ratio{Median: 0.5, Min: 0.5, Max: 0.5, Rounds: 3}},
		{name: "spread comes from per-round ratios", dh: []float64{10, 12, 14}, ref: []float64{10, 10, 10}, higher: true,
			want: &Ratio{Median: 1.2, Min: 1, Max: 1.4, Rounds: 3}},
		{name: "a failed round (0) is left out", dh: []float64{10, 0, 10}, ref: []float64{5, 5, 5}, higher: true,
			want: &Ratio{Median: 2, Min: 2, Max: 2, Rounds: 2}},
		{name: "no reference value", dh: []float64{10}, ref: nil, higher: true, wantNil: true},
		{name: "only failed runs", dh: []float64{0, 0}, ref: []float64{1, 1}, higher: true, wantNil: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RatioOf("f", tt.dh, tt.ref, tt.higher)
			if tt.wantNil {
				if got != nil {
					t.Fatalf("RatioOf = %+v, want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("RatioOf = nil")
			}
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
			if !near(got.Median, tt.want.Median) || !near(got.Min, tt.want.Min) || !near(got.Max, tt.want.Max) || got.Rounds != tt.want.Rounds {
				t.Errorf("RatioOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHigherIsBetter(t *testing.T) {
	for fig, want := range map[string]bool{
		"rate": true, "connect_rate": true, "puback_p99_ms": false, "rss_per_conn_kb": false,
		"cpu_s_per_10k": false, "idle_cpu_pct": false, "peak_rss_mb": false, "lost": false,
	} {
		if got := higherIsBetter(fig); got != want {
			t.Errorf("higherIsBetter(%s) = %v, want %v", fig, got, want)
		}
	}
}

func TestFmtNum(t *testing.T) {
	for in, want := range map[float64]string{
		0: "0", 1.234: "1.23", 12.34: "12.3", 123.4: "123", 1234.5: "1,235", 1234567: "1,234,567", -2500: "-2,500",
	} {
		if got := fmtNum(in); got != want {
			t.Errorf("fmtNum(%v) = %q, want %q", in, got, want)
		}
	}
}

func sampleResults() *Results {
	sc := &Scenario{
		Name: "ingest_closed_100", Title: "Ingest", Headline: "rate",
		Figures: []string{"rate", "puback_p99_ms"},
		Notes:   []string{"a note"},
	}
	for round := 1; round <= 3; round++ {
		sc.Runs = append(sc.Runs,
			Measurement{System: SysDevicehub, Round: round, Figures: map[string]float64{"rate": 9000 + float64(round)*1000, "puback_p99_ms": 20}},
			Measurement{System: SysMosquitto, Round: round, Figures: map[string]float64{"rate": 10000, "puback_p99_ms": 10}},
			Measurement{System: SysMochi, Round: round, Figures: map[string]float64{"rate": 20000, "puback_p99_ms": 5}},
		)
	}
	sc.Runs = append(sc.Runs, Measurement{System: SysMochi, Round: 4, Error: "boom\nsecond line"})
	sc.Finish()
	return &Results{Command: []string{"devicehub", "bench", "--out", "x"}, Scenarios: []*Scenario{sc},
		Goals: []Goal{{Name: "g", Target: "t", Measured: "m", Met: "no"}}}
}

func TestFinish(t *testing.T) {
	sc := sampleResults().Scenarios[0]
	if got := sc.Summary[SysDevicehub]["rate"]; got.Median != 11000 || got.Min != 10000 || got.Max != 12000 || got.N != 3 {
		t.Errorf("devicehub rate summary = %+v", got)
	}
	if r := sc.Ratios.VsMosquitto; r == nil || math.Abs(r.Median-1.1) > 1e-9 || math.Abs(r.Min-1) > 1e-9 || math.Abs(r.Max-1.2) > 1e-9 {
		t.Errorf("vs mosquitto = %+v, want 1.1 [1.0–1.2]", r)
	}
	if r := sc.Ratios.Figures["puback_p99_ms"].VsMochi; r == nil || r.Median != 0.25 {
		t.Errorf("p99 vs mochi = %+v, want 0.25", r)
	}
}

func TestResultsJSON(t *testing.T) {
	dir := t.TempDir()
	res := sampleResults()
	if err := res.WriteJSON(dir); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Scenarios []struct {
			Name   string `json:"name"`
			Ratios struct {
				VsMosquitto *struct{ Median, Min, Max float64 } `json:"vs_mosquitto"`
				VsMochi     *struct{ Median, Min, Max float64 } `json:"vs_mochi"`
			} `json:"ratios"`
		} `json:"scenarios"`
	}
	b, err := readFile(dir + "/results.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Scenarios) != 1 || back.Scenarios[0].Name != "ingest_closed_100" || back.Scenarios[0].Ratios.VsMochi == nil ||
		back.Scenarios[0].Ratios.VsMochi.Median != 0.55 {
		t.Errorf("results.json round trip: %s", b)
	}
}

func TestMarkdown(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleResults().Markdown(&buf, ChartFile); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"Command: `devicehub bench --out x`",
		"| g | t | m | no |",
		"| ingest_closed_100 | rate | **1.10** [1.00–1.20] | **0.55** [0.50–0.60] |",
		"| rate | 11,000 [10,000–12,000] | 10,000 | 20,000 | **1.10** [1.00–1.20] | **0.55** [0.50–0.60] |",
		"| puback_p99_ms | 20.0 | 10.0 | 5.00 | **0.50** [0.50–0.50] | **0.25** [0.25–0.25] |",
		"- mochi round 4: boom\n",
		"![throughput and latency by offered load](" + ChartFile + ")",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestDrawChart(t *testing.T) {
	var buf bytes.Buffer
	panels := []Panel{
		{Title: "t", XLabel: "x", YLabel: "y", Series: []Series{{Name: "a", Points: []Point{{25, 1}, {50, 2}, {100, 4}}}, {Name: "b", Points: []Point{{25, 2}}}}},
		{Title: "empty"},
	}
	if err := DrawChart(&buf, panels); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 2*560 || b.Dy() != 420 {
		t.Errorf("chart is %v", b)
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 0, 0.7: 1, 3: 5, 12: 20, 999: 1000, 5000: 5000} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

func TestParsePprofTop(t *testing.T) {
	const top = `File: dh-bin
Type: cpu
Duration: 40.13s, Total samples = 2.50s ( 6.23%)
Showing nodes accounting for 1.82s, 68.68% of 2.65s total
      flat  flat%   sum%        cum   cum%
     0.94s 37.60% 37.60%      0.94s 37.60%  internal/runtime/syscall/linux.Syscall6
         0     0% 37.60%      120ms  4.80%  github.com/devicehub/devicehub/internal/presence.(*Tracker).Run
      10ms  0.4% 38.00%       30ms  1.20%  github.com/devicehub/devicehub/internal/presence.(*Tracker).arm (inline)
`
	tests := []struct {
		name             string
		out              string
		funcs            []string
		cum, total, secs float64
		wantErr          bool
	}{
		{name: "both functions", out: top, funcs: timeoutFuncs, cum: 0.15, total: 2.5, secs: 40.13},
		{name: "no samples in them", out: top, funcs: []string{"nothing.here"}, cum: 0, total: 2.5, secs: 40.13},
		{name: "no header", out: "garbage\n", funcs: timeoutFuncs, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cum, total, secs, err := parsePprofTop(tt.out, tt.funcs)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
			if !near(cum, tt.cum) || !near(total, tt.total) || !near(secs, tt.secs) {
				t.Errorf("got cum %v total %v secs %v, want %v %v %v", cum, total, secs, tt.cum, tt.total, tt.secs)
			}
		})
	}
}

// TestGoalsFailedRounds: a goal whose scenario had a failed devicehub
// round is not met, whatever the figures of the other rounds say.
func TestGoalsFailedRounds(t *testing.T) {
	for _, tc := range []struct {
		name         string
		errs         []string
		wantMet      string
		wantMeasured string
	}{
		{"all rounds passed", []string{"", "", ""}, "yes", "5.00 [4.00–6.00] ms"},
		{"one round failed", []string{"", "8 of 10 silent devices not reported offline", ""}, "no", "5.00 [4.00–6.00] ms; 1 of 3 rounds failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &Scenario{Name: "presence_10"}
			for i, e := range tc.errs {
				sc.Runs = append(sc.Runs, Measurement{System: SysDevicehub, Round: i + 1, Error: e,
					Figures: map[string]float64{"offline_delay_p99_ms": float64(4 + i)}})
			}
			sc.Finish()
			r := &runner{o: Options{Presence: 10}, res: &Results{Scenarios: []*Scenario{sc}}}
			r.goals()
			var got *Goal
			for i := range r.res.Goals {
				if strings.HasPrefix(r.res.Goals[i].Name, "offline deadline") {
					got = &r.res.Goals[i]
				}
			}
			if got == nil {
				t.Fatalf("no offline goal in %+v", r.res.Goals)
			}
			if got.Met != tc.wantMet || got.Measured != tc.wantMeasured {
				t.Errorf("goal = %q met %q, want %q met %q", got.Measured, got.Met, tc.wantMeasured, tc.wantMet)
			}
		})
	}
}

// TestGoalsRoundsOver: a p99 goal met by its median says so when a
// round missed the target.
func TestGoalsRoundsOver(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p99s    []float64
		other   []float64 // other_cores of each round; none when nil
		burst   []float64 // other_cores_max of each round; none when nil
		wantMet string
	}{
		{"every round under", []float64{12, 15, 19.9}, nil, nil, "yes"},
		{"one round over", []float64{17.2, 17.9, 23.8}, nil, nil, "by the median only: 1 of 3 rounds ≥ 20 ms"},
		{"one round over, the machine quiet", []float64{17.2, 17.9, 23.8}, []float64{0.9, 0.05, 0.2}, []float64{1.5, 0.2, 0.5}, "by the median only: 1 of 3 rounds ≥ 20 ms"},
		{"one round over, beside other processes", []float64{17.2, 48, 13.8}, []float64{0.05, 0.9, 0.1}, nil,
			"by the median only: 1 of 3 rounds ≥ 20 ms (1 of them while other processes used more than 0.2 cores, or 0.5 in a quarter second)"},
		{"one round over, beside a burst of another process", []float64{17.2, 48, 13.8}, []float64{0.05, 0.09, 0.1}, []float64{0.2, 0.9, 0.3},
			"by the median only: 1 of 3 rounds ≥ 20 ms (1 of them while other processes used more than 0.2 cores, or 0.5 in a quarter second)"},
		{"median over", []float64{21, 25, 12}, []float64{0.9, 0.9, 0.9}, nil, "no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &Scenario{Name: "ingest_open_100_50"}
			for i, v := range tc.p99s {
				f := map[string]float64{"puback_p99_ms": v}
				if tc.other != nil {
					f["other_cores"] = tc.other[i]
				}
				if tc.burst != nil {
					f["other_cores_max"] = tc.burst[i]
				}
				sc.Runs = append(sc.Runs, Measurement{System: SysDevicehub, Round: i + 1, Figures: f})
			}
			sc.Finish()
			r := &runner{o: Options{Devices: []int{100}}, res: &Results{Scenarios: []*Scenario{sc}}}
			r.goals()
			var got *Goal
			for i := range r.res.Goals {
				if strings.HasPrefix(r.res.Goals[i].Name, "p99 publish→PUBACK at half of peak, 100 devices") {
					got = &r.res.Goals[i]
				}
			}
			if got == nil {
				t.Fatalf("no p99 goal in %+v", r.res.Goals)
			}
			if got.Met != tc.wantMet {
				t.Errorf("goal %q met %q, want %q", got.Measured, got.Met, tc.wantMet)
			}
		})
	}
}

func TestHubTailsGCSettings(t *testing.T) {
	tests := []struct {
		name             string
		after            map[string]float64
		percent, limit   float64
		hasPct, hasLimit bool
	}{
		{"configured", map[string]float64{"go_gc_gogc_percent": 400, "go_gc_gomemlimit_bytes": 1 << 30}, 400, 1024, true, true},
		{"no limit", map[string]float64{"go_gc_gogc_percent": 100, "go_gc_gomemlimit_bytes": math.MaxInt64}, 100, 0, true, false},
		{"an older hub without the gauges", map[string]float64{"go_gc_duration_seconds_count": 3}, 0, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := map[string]float64{}
			hubTails(f, map[string]float64{}, tt.after)
			p, okP := f["hub_gc_percent"]
			l, okL := f["hub_memory_limit_mb"]
			if okP != tt.hasPct || p != tt.percent || okL != tt.hasLimit || l != tt.limit {
				t.Errorf("hub_gc_percent %v (%v), hub_memory_limit_mb %v (%v); want %v (%v), %v (%v)", p, okP, l, okL, tt.percent, tt.hasPct, tt.limit, tt.hasLimit)
			}
		})
	}
}

// TestHubTailsCheckpoint: the checkpoint's holds of the writer between two
// scrapes (bucket upper bounds) and their count; none reported for a hub
// that does not have the histogram.
func TestHubTailsCheckpoint(t *testing.T) {
	const h = "devicehub_sqlite_checkpoint_hold_seconds"
	before := map[string]float64{h + `_bucket{le="0.004"}`: 5, h + `_bucket{le="0.016"}`: 6, h + `_bucket{le="+Inf"}`: 6, h + "_count": 6}
	tests := []struct {
		name     string
		after    map[string]float64
		want     map[string]float64
		reported bool
	}{
		{"holds", map[string]float64{h + `_bucket{le="0.004"}`: 104, h + `_bucket{le="0.016"}`: 106, h + `_bucket{le="+Inf"}`: 106, h + "_count": 106},
			map[string]float64{"hub_checkpoint_hold_p99_ms": 4, "hub_checkpoint_hold_max_ms": 16, "hub_checkpoints": 100}, true},
		{"none between the scrapes", before, map[string]float64{"hub_checkpoints": 0}, true},
		{"an older hub", map[string]float64{"go_gc_duration_seconds_count": 3}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := map[string]float64{}
			hubTails(f, before, tt.after)
			for k, v := range tt.want {
				if got, ok := f[k]; !ok || got != v {
					t.Errorf("%s = %v (reported %v), want %v", k, got, ok, v)
				}
			}
			if _, ok := f["hub_checkpoints"]; ok != tt.reported {
				t.Errorf("hub_checkpoints reported %v, want %v", ok, tt.reported)
			}
			if _, ok := f["hub_checkpoint_hold_max_ms"]; ok && tt.want["hub_checkpoint_hold_max_ms"] == 0 {
				t.Errorf("hub_checkpoint_hold_max_ms reported with no hold between the scrapes")
			}
		})
	}
}
