package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRecordKeepsFailedHubLog(t *testing.T) {
	out := t.TempDir()
	r := &runner{o: Options{OutDir: out}}
	log := strings.Join([]string{
		`time=1 level=INFO msg=serving`,
		`time=2 level=WARN msg="slow commit" ms=40`,
		`{"time":"3","level":"ERROR","msg":"json form"}`,
		`time=4 level=INFO msg=other`,
		`time=5 level=ERROR msg="device heartbeat timeout" device=` + "`d1`",
		``,
	}, "\n")
	tests := []struct {
		name     string
		run      Measurement
		wantLog  bool
		wantTail []string
	}{
		{"failed devicehub run", Measurement{System: SysDevicehub, Round: 1, Error: "lost 3 of 10 acknowledged messages"}, true,
			[]string{`time=2 level=WARN msg="slow commit" ms=40`, `{"time":"3","level":"ERROR","msg":"json form"}`, "time=5 level=ERROR msg=\"device heartbeat timeout\" device=`d1`"}},
		{"devicehub run that passed", Measurement{System: SysDevicehub, Round: 2}, false, nil},
		{"failed reference run", Measurement{System: SysMosquitto, Round: 3, Error: "boom"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := r.procLog("devicehub")
			if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
				t.Fatal(err)
			}
			sc := &Scenario{Name: "s"}
			r.record(sc, tt.run)
			got := sc.Runs[0]
			if wantLog := filepath.Join("logs", filepath.Base(path)); (got.Log == wantLog) != tt.wantLog || (!tt.wantLog && got.Log != "") {
				t.Errorf("Log = %q, want %q: %v", got.Log, wantLog, tt.wantLog)
			}
			if !slices.Equal(got.LogTail, tt.wantTail) {
				t.Errorf("LogTail = %q, want %q", got.LogTail, tt.wantTail)
			}
			if r.lastLog != "" {
				t.Errorf("the hub log %q is still held for the next run", r.lastLog)
			}
		})
	}
	// A run recorded without a hub started for it gets no log.
	sc := &Scenario{Name: "s"}
	r.record(sc, Measurement{System: SysDevicehub, Error: "generation failed"})
	if sc.Runs[0].Log != "" || sc.Runs[0].LogTail != nil {
		t.Errorf("a run without its own hub got log %q %q", sc.Runs[0].Log, sc.Runs[0].LogTail)
	}
}

func TestMarkdownFailedRunLog(t *testing.T) {
	res := sampleResults()
	res.Scenarios[0].Runs = append(res.Scenarios[0].Runs, Measurement{System: SysDevicehub, Round: 5, Error: "lost 1 of 2 acknowledged messages",
		Log: "logs/devicehub-9.log", LogTail: []string{"time=5 level=ERROR msg=`x`"}})
	var buf bytes.Buffer
	if err := res.Markdown(&buf, ChartFile); err != nil {
		t.Fatal(err)
	}
	want := "- devicehub round 5: lost 1 of 2 acknowledged messages (hub log `logs/devicehub-9.log`); its last warnings and errors:\n  - `time=5 level=ERROR msg='x'`\n"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, buf.String())
	}
}
