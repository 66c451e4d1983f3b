package hub_test

import (
	"os"
	"path/filepath"
	"testing"
)

// Finding 13 of issue 9: the data directory is 0700 and its files 0600,
// whatever the umask and whatever modes an earlier start or a copy left:
// checked and tightened at every start, and the WAL and shared-memory
// files the database creates while running are private too.
func TestDataDirModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // past the umask
		t.Fatal(err)
	}
	for _, f := range []string{"devicehub.db", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	th := startHubIn(t, dir, "", "")
	// A write, so that the WAL and its index exist.
	th.provision(t, "modes-1", "WeatherStation")

	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode %v, %v; want 0700", st.Mode().Perm(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		seen[e.Name()] = true
		if info.Mode().IsRegular() && info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	for _, f := range []string{"devicehub.db", "devicehub.db-wal", "devicehub.db-shm", "admin.token", "registration.secret", "notes.txt"} {
		if !seen[f] {
			t.Errorf("%s not in the data directory (%v)", f, seen)
		}
	}
}
