package cli

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestSimulateUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"no type", []string{"simulate", "--devices", "1"}},
		{"bad compression", []string{"simulate", "--type", "T", "--compression", "lz4"}},
		{"no devices", []string{"simulate", "--type", "T", "--devices", "0", "--credentials-file", os.DevNull, "--mqtt", "mqtt://127.0.0.1:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, context.Background(), noServe, tt.args...)
			if r.code != ExitUsage {
				t.Errorf("exit %d, stderr %q", r.code, r.err)
			}
		})
	}
}

// TestSimulateOffline runs two devices from a credentials file against a
// hub that is not there: they start, store readings and the summary says
// so.
func TestSimulateOffline(t *testing.T) {
	for _, k := range []string{"DEVICEHUB_TOKEN", "DEVICEHUB_SERVER", "DEVICEHUB_DATA_DIR"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds.jsonl")
	os.WriteFile(creds, []byte(`{"device_id":"sim-0","mqtt_username":"sim-0","mqtt_password":"a"}

{"device_id":"sim-1","mqtt_username":"sim-1","mqtt_password":"b"}
`), 0o600)
	r := runCLI(t, context.Background(), noServe, "simulate", "--type", "T", "--devices", "2", "--rate", "50",
		"--credentials-file", creds, "--mqtt", "mqtt://127.0.0.1:1", "--state-dir", filepath.Join(dir, "state"),
		"--duration", "500ms", "--summary-every", "100ms", "--data-dir", dir)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.err)
	}
	if !regexp.MustCompile(`devices \d/2  failed 0  enqueued [1-9]\d*  acked 0`).MatchString(r.out) {
		t.Fatalf("summary %q", r.out)
	}
	for _, id := range []string{"sim-0", "sim-1"} {
		if _, err := os.Stat(filepath.Join(dir, "state", id+".db")); err != nil {
			t.Error(err)
		}
	}
	if _, err := readCredentialsFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing credentials file accepted")
	}
	os.WriteFile(creds, []byte("{not json\n"), 0o600)
	if _, err := readCredentialsFile(creds); err == nil {
		t.Error("bad credentials file accepted")
	}
}
