package hub

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// secureDataDir creates the data directory if missing and makes it
// private: the directory 0700 and every file in it 0600. It holds the
// database and its WAL, the admin token and the registration key secret;
// the hub checks at every start, so that a directory made or copied with
// looser modes is tightened (and the change logged) before anything is
// written to it.
func secureDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data dir %s: %w", dir, err)
		}
		log.Warn("data directory was open to others; now 0700", "dir", dir, "was", st.Mode().Perm().String())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("data dir %s: %w", dir, err)
		}
		if info.Mode().Perm()&0o077 != 0 {
			p := filepath.Join(dir, e.Name())
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			log.Warn("data file was readable by others; now 0600", "file", p, "was", info.Mode().Perm().String())
		}
	}
	return nil
}
