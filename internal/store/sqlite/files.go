package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// restrictFiles makes the database file, its WAL and its shared-memory
// file readable by their owner only (0600), creating the database file
// so if it is missing: SQLite creates the WAL and shared-memory files with
// the database file's mode, so a database created 0600 stays private
// whatever the umask. A looser mode found is tightened; changed lists
// the files that were.
func restrictFiles(path string) (changed []string, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return nil, err
		}
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return changed, err
		}
		if st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, 0o600); err != nil {
				return changed, fmt.Errorf("restrict %s: %w", p, err)
			}
			changed = append(changed, p)
		}
	}
	return changed, nil
}
