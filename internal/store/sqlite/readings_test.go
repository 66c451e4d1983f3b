package sqlite

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/store/storetest"
)

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
	// latest_values and 00702's conversion into latest_fields.
	storetest.LatestBackfill(t, s, func(ctx context.Context) error {
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
