package main

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/childproc"
	"github.com/devicehub/devicehub/internal/eventually"
)

// simulateFleet runs `devicehub simulate` with firmware updates in a child
// process until the test ends.
func (h *e2eHub) simulateFleet(t *testing.T, prefix string, n int, failures string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "simulate", "--devices", strconv.Itoa(n), "--rate", "0.2", "--type", "WeatherStation",
		"--id-prefix", prefix, "--mqtt", "mqtt://"+h.mqtt, "--state-dir", filepath.Join(t.TempDir(), "sim"),
		"--firmware-failures", failures, "--summary-every", "1s", "--server", h.url(), "--token", h.admin)
	cmd.Env = append(os.Environ(), "DEVICEHUB_TEST_CHILD=1")
	childproc.DieWithParent(cmd)
	if testing.Verbose() {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}

// TestE2EFirmware runs firmware updates with the real binary: an artifact
// uploaded with the CLI, simulated SDK devices (`devicehub simulate
// --firmware-failures`), rollouts started and watched with the CLI. A
// healthy fleet is updated in phases; a fleet whose installs all fail is
// stopped by the abort rule after its minimum.
func TestE2EFirmware(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	h := startE2E(t, "firmware: {tick: 20ms, connect_delay: 50ms, notice_resend: 1s, settle: 100ms}\n")
	fw := filepath.Join(t.TempDir(), "weather-2.0.0.bin")
	b := make([]byte, 256<<10)
	rand.Read(b)
	if err := os.WriteFile(fw, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var art client.Artifact
	h.cliJSON(t, &art, "firmware", "upload", fw, "--version", "2.0.0", "--type", "WeatherStation")
	if art.Size != int64(len(b)) || art.SignedBy != "hub" {
		t.Fatalf("artifact %+v", art)
	}
	out, _, code := h.cli(t, "", "firmware", "key")
	if code != 0 || strings.TrimSpace(out) != art.PublicKey {
		t.Fatalf("firmware key (exit %d) %q, artifact signed by %q", code, out, art.PublicKey)
	}

	good := make([]string, 10)
	for i := range good {
		good[i] = "good-" + strconv.Itoa(i)
	}
	h.simulateFleet(t, "good-", len(good), "0%")
	bad := []string{"bad-0", "bad-1", "bad-2", "bad-3", "bad-4", "bad-5"}
	h.simulateFleet(t, "bad-", len(bad), "100%")
	// The fleets provision themselves; wait until every device exists
	// and connected once.
	waitDevices(t, h, append(append([]string{}, good...), bad...))

	args := []string{"rollout", "start", "--artifact", art.ID, "--phases", "20,100", "--max-per-minute", "600"}
	for _, id := range good {
		args = append(args, "--device", id)
	}
	var r client.Rollout
	h.cliJSON(t, &r, args...)
	out, errs, code := h.cli(t, "", "rollout", "status", r.ID, "--watch", "--interval", "50ms")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if code != 0 || !strings.Contains(last, "completed") || !strings.Contains(last, "updated=10") || !strings.Contains(last, "[####") {
		t.Fatalf("rollout status --watch (exit %d, %s):\n%s", code, errs, out)
	}

	args = []string{"rollout", "start", "--artifact", art.ID, "--abort-failures", "50%", "--abort-min", "2", "--max-per-minute", "2"}
	for _, id := range bad {
		args = append(args, "--device", id)
	}
	h.cliJSON(t, &r, args...)
	out, _, code = h.cli(t, "", "rollout", "status", r.ID, "--watch", "--interval", "50ms")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	last = lines[len(lines)-1]
	if code != 0 || !strings.Contains(last, "aborted") || !strings.Contains(last, "failed=2") || !strings.Contains(last, "queued=4") {
		t.Fatalf("failing fleet: rollout status --watch (exit %d):\n%s", code, out)
	}
	var hist []client.UpdateHistoryEntry
	h.cliJSON(t, &hist, "rollout", "history", "bad-0")
	if len(hist) == 0 || hist[len(hist)-1].State != "failed" || !strings.Contains(hist[len(hist)-1].Message, "simulated install failure") {
		t.Fatalf("history of bad-0: %+v", hist)
	}
}

func waitDevices(t *testing.T, h *e2eHub, ids []string) {
	t.Helper()
	eventually.True(t, 60*time.Second, "the simulated devices report version 1.0.0", func() bool {
		for _, id := range ids {
			d, err := h.api.GetDevice(t.Context(), id)
			if err != nil || d.FirmwareVersion != "1.0.0" {
				return false
			}
		}
		return true
	})
}
