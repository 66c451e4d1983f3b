package sqlite

import (
	"context"
	"strings"
	"testing"
)

// TestQueryPlans checks that the per-device queries are index searches,
// not scans of the big tables.
func TestQueryPlans(t *testing.T) {
	s := openTest(t)
	tests := []struct {
		name  string
		query string
		args  []any
	}{
		{"newest readings of a device", `SELECT id FROM (SELECT * FROM (SELECT id, ts FROM readings
			WHERE dev = (SELECT key FROM devices WHERE id = ?) ORDER BY ts DESC, id DESC LIMIT ?)
			UNION ALL SELECT id, ts FROM readings_recent WHERE dev = (SELECT key FROM devices WHERE id = ?)) ORDER BY ts DESC, id DESC LIMIT ?`,
			[]any{"d", 100, "d", 100}},
		{"readings page", `SELECT id FROM readings WHERE dev = (SELECT key FROM devices WHERE id = ?)
			AND ts >= ? AND ts < ? AND (ts < ? OR (ts = ? AND id < ?)) ORDER BY ts DESC, id DESC LIMIT ?`, []any{"d", 1, 2, 3, 3, 4, 100}},
		{"messages of a device", `SELECT id FROM (SELECT * FROM (SELECT id FROM messages WHERE 1=1 AND device_id = ? AND id < ? ORDER BY id DESC LIMIT ?)
			UNION ALL SELECT id FROM messages_recent WHERE 1=1 AND device_id = ? AND id < ?) ORDER BY id DESC LIMIT ?`,
			[]any{"d", 5, 100, "d", 5, 100}},
		{"rejected messages", `SELECT id FROM messages WHERE 1=1 AND accepted = 0 ORDER BY id DESC LIMIT ?`, []any{100}},
		{"msg_id dedupe", `SELECT m.device_id, m.msg_id FROM (VALUES (?,?),(?,?)) AS v JOIN messages AS m ON m.device_id = v.column1 AND m.msg_id = v.column2`,
			[]any{"d", "a", "e", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := s.r.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+tt.query, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			p := strings.Join(plan, "; ")
			t.Log(p)
			// A scan of the partial index of rejected messages is fine:
			// it holds only those; so are scans of the small staging
			// tables (recent.go) and the one sort that merges their rows
			// with the first page from the indexed table.
			sorts := 0
			for _, step := range plan {
				if step == "SCAN readings" || step == "SCAN messages" || step == "SCAN m" {
					t.Errorf("plan scans a table: %s", p)
				}
				if strings.Contains(step, "TEMP B-TREE") {
					sorts++
				}
			}
			if sorts > 1 {
				t.Errorf("plan sorts the indexed rows: %s", p)
			}
		})
	}
}
