package monitors

import (
	"context"
	"encoding/json"
	"fmt"
)

// Store keeps monitors and their cursors (both storage backends implement
// it, with their own migrations 00200-00299).
type Store interface {
	// InsertMonitor stores a new monitor with its cursor.
	InsertMonitor(ctx context.Context, m *Monitor) error
	// UpdateMonitor replaces a monitor's definition and state (not its
	// cursor); ErrNotFound if it does not exist.
	UpdateMonitor(ctx context.Context, m *Monitor) error
	// DeleteMonitor removes a monitor and its cursor; ErrNotFound if it
	// does not exist.
	DeleteMonitor(ctx context.Context, id string) error
	// ListMonitors returns every monitor with its cursor, by id.
	ListMonitors(ctx context.Context) ([]Monitor, error)
	// SaveCursor moves a monitor's cursor; a deleted monitor is ignored.
	SaveCursor(ctx context.Context, id string, seq int64) error
	// SaveCursors moves several monitors' cursors in one transaction;
	// deleted monitors are ignored.
	SaveCursors(ctx context.Context, cursors map[string]int64) error
}

// EncodeSpec and DecodeSpec are the stored form of a Spec (the column
// spec), shared by the backends.
func EncodeSpec(s *Spec) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode monitor spec: %w", err)
	}
	return b, nil
}

// DecodeSpec: see EncodeSpec.
func DecodeSpec(b []byte, s *Spec) error {
	if err := json.Unmarshal(b, s); err != nil {
		return fmt.Errorf("decode monitor spec: %w", err)
	}
	return nil
}
