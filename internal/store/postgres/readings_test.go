package postgres

import (
	"context"
	"testing"

	"github.com/devicehub/devicehub/internal/store/storetest"
)

func TestLatestBackfill(t *testing.T) {
	s := openTest(t)
	mig, err := migrations.ReadFile("migrations/00700_latest_values.sql")
	if err != nil {
		t.Fatal(err)
	}
	stmt := storetest.MigrationUp(t, string(mig), "-- The readings stored before this migration.")
	storetest.LatestBackfill(t, s, func(ctx context.Context) error {
		if _, err := s.pool.Exec(ctx, `DELETE FROM latest_values`); err != nil {
			return err
		}
		_, err := s.pool.Exec(ctx, stmt)
		return err
	})
}
