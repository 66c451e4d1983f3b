package sqlite

import (
	"context"
	"fmt"
	"slices"

	"github.com/devicehub/devicehub/internal/readings"
)

// InsertReadings implements readings.TxStore.
func (t *txn) InsertReadings(ctx context.Context, rows []readings.ReadingRow) error {
	type keyed struct {
		dev int64
		r   *readings.ReadingRow
	}
	rds := make([]keyed, len(rows))
	for i := range rows {
		k, ok := t.key(rows[i].DeviceID)
		if !ok {
			return fmt.Errorf("device %s of a reading is not known", rows[i].DeviceID)
		}
		rds[i] = keyed{k, &rows[i]}
	}
	// Rows of one device next to each other touch each leaf of the
	// (dev, ts) index once per batch instead of once per row.
	slices.SortStableFunc(rds, func(a, b keyed) int { return int(a.dev - b.dev) })
	args := t.s.args.take(len(rds) * 6)
	for _, r := range rds {
		args = append(args, r.dev, r.r.Stream, r.r.Time.UnixMicro(), r.r.ReceivedAt.UnixMicro(), r.r.MessageID, jsonObject(r.r.Values))
	}
	return t.s.inserts["readings"].exec(ctx, t, args)
}
