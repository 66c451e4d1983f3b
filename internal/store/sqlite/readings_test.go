package sqlite

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/readbatch"
	"github.com/devicehub/devicehub/internal/store/storetest"
)

// headRecords returns the readings of the head, by id.
func headRecords(t testing.TB, s *Store) []readbatch.Record {
	t.Helper()
	s.rh.hmu.RLock()
	defer s.rh.hmu.RUnlock()
	var out []readbatch.Record
	for _, b := range s.rh.head.batches {
		rs, err := readbatch.Decode(b.data)
		if err != nil {
			t.Fatalf("reading batch %d: %v", b.first, err)
		}
		out = append(out, rs...)
	}
	return out
}

// headAsRows writes the readings of the head as rows of the readings
// table, as a database from before migration 01000 held them.
func headAsRows(ctx context.Context, t testing.TB, s *Store) error {
	for _, r := range headRecords(t, s) {
		_, err := s.w.ExecContext(ctx, `INSERT INTO readings (id, dev, stream, ts, received_at, message_id, data)
			VALUES (?, (SELECT key FROM devices WHERE id = ?), ?, ?, ?, ?, ?)`,
			r.ID, r.DeviceID, r.Stream, r.Time, r.ReceivedAt, r.MessageID, string(r.Values))
		if err != nil {
			return fmt.Errorf("head as rows: %w", err)
		}
	}
	return nil
}

func TestLatestBackfill(t *testing.T) {
	s := openTest(t)
	mig, err := migrations.ReadFile("migrations/00700_latest_values.sql")
	if err != nil {
		t.Fatal(err)
	}
	create, _, _ := strings.Cut(storetest.MigrationUp(t, string(mig), ""), "-- The readings stored before this migration.")
	fill := storetest.MigrationUp(t, string(mig), "-- The readings stored before this migration.")
	perDevice, err := migrations.ReadFile("migrations/00702_latest_per_device.sql")
	if err != nil {
		t.Fatal(err)
	}
	convert := storetest.MigrationUp(t, string(perDevice), "-- From latest_values.")
	// The readings of the fixture go through 00700's backfill into
	// latest_values and 00702's conversion into latest_fields, as rows
	// of the readings table (as an older database held them; this store
	// wrote them into reading_batches).
	storetest.LatestBackfill(t, s, func(ctx context.Context) error {
		if err := headAsRows(ctx, t, s); err != nil {
			return err
		}
		for _, stmt := range []string{`DELETE FROM latest_fields`, create, fill, convert} {
			if _, err := s.w.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%.60s: %w", stmt, err)
			}
		}
		// The tables changed behind Commit: the snapshot is built again
		// from them, as at Open.
		s.wmu.Lock()
		defer s.wmu.Unlock()
		return s.loadLatest(ctx, s.w)
	})
}
