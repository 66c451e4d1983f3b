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
		// sorts: the plan may sort the rows its index search found.
		sorts bool
	}{
		{"newest readings of a device", `SELECT id, stream, ts, received_at, message_id, data FROM readings
			WHERE dev = (SELECT key FROM devices WHERE id = ?) ORDER BY ts DESC, id DESC LIMIT ?`, []any{"d", 100}, false},
		{"readings page", `SELECT id FROM readings WHERE dev = (SELECT key FROM devices WHERE id = ?)
			AND ts >= ? AND ts < ? AND (ts < ? OR (ts = ? AND id < ?)) ORDER BY ts DESC, id DESC LIMIT ?`, []any{"d", 1, 2, 3, 3, 4, 100}, false},
		{"message blocks of a device", `SELECT last_id, data FROM message_blocks WHERE first_id < ? AND device_id = ? ORDER BY last_id DESC`,
			[]any{5, "d"}, false},
		{"message blocks of a device, rejected", `SELECT last_id, data FROM message_blocks WHERE first_id < ? AND device_id = ? AND rejected > 0 ORDER BY last_id DESC`,
			[]any{5, "d"}, false},
		{"message blocks", `SELECT last_id, data FROM message_blocks WHERE first_id < ? ORDER BY last_id DESC`, []any{5}, false},
		{"message blocks, rejected", `SELECT last_id, data FROM message_blocks WHERE first_id < ? AND rejected > 0 ORDER BY last_id DESC`, []any{5}, false},
		{"message blocks to expire", `SELECT id FROM message_blocks WHERE max_received < ? AND last_id < ? LIMIT ?`, []any{1, 2, 3}, false},
		{"message blocks with payloads to strip", `SELECT id, data FROM message_blocks WHERE payload_from < ? LIMIT ?`, []any{1, 2}, false},
		{"blocks of a device, newest end first", `SELECT stream, t0, t1, data FROM reading_blocks WHERE dev = (SELECT key FROM devices WHERE id = ?) AND t1 >= ?
			AND t0 < ? AND t0 <= ? AND stream = ? ORDER BY t1 DESC`, []any{"d", 1, 2, 3, "s"}, false},
		{"aggregate of a device's field", `SELECT ts, id, json_extract(data, ?1) FROM readings
			WHERE dev = (SELECT key FROM devices WHERE id = ?2) AND ts >= ?3 AND ts < ?4
			AND json_type(data, ?1) IN ('integer', 'real') AND stream = ?5 ORDER BY ts, id`, []any{`$."t"`, "d", 1, 2, "s"}, false},
		{"latest values of one type", `SELECT d.id, l.vals FROM devices d JOIN latest_fields l ON l.dev = d.key
			WHERE d.id > ? AND d.type = ? ORDER BY d.id`, []any{"", "t"}, false},
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
			// it holds only those.
			for _, step := range plan {
				if step == "SCAN readings" || step == "SCAN message_blocks" || step == "SCAN reading_blocks" || (strings.Contains(step, "TEMP B-TREE") && !tt.sorts) {
					t.Errorf("plan scans a table or sorts: %s", p)
				}
			}
		})
	}
}
