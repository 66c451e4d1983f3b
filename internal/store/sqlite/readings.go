package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/devicehub/devicehub/internal/readings"
)

// latestCols are the columns of a row of the latest_values upsert.
const latestCols = 5

// UpsertLatest implements readings.TxStore: one multi-row upsert that
// keeps a stored value with a later time.
func (t *txn) UpsertLatest(ctx context.Context, rows []readings.LatestRow) error {
	args := make([]any, 0, len(rows)*latestCols)
	for i := range rows {
		r := &rows[i]
		k, ok := t.key(r.DeviceID)
		if !ok {
			return fmt.Errorf("device %s of a reading is not known", r.DeviceID)
		}
		args = append(args, k, r.Stream, r.Field, r.Time.UnixMicro(), string(r.Value))
	}
	return t.s.inserts["latest_values"].exec(ctx, t.tx, args)
}

// LatestValues returns the latest values of every device by device id: an
// index walk of devices.id and, for each device, its rows of
// latest_values (its primary key's prefix).
func (s *Store) LatestValues(ctx context.Context, q readings.LatestQuery) (readings.LatestPage, error) {
	sqlq := `SELECT d.id, l.stream, l.field, l.ts, l.value FROM devices d JOIN latest_values l ON l.dev = d.key WHERE d.id > ?`
	args := []any{q.After}
	if q.Type != "" {
		sqlq += ` AND d.type = ?`
		args = append(args, q.Type)
	}
	if q.Stream != "" {
		sqlq += ` AND l.stream = ?`
		args = append(args, q.Stream)
	}
	if q.Field != "" {
		sqlq += ` AND l.field = ?`
		args = append(args, q.Field)
	}
	sqlq += ` ORDER BY d.id, l.stream, l.field`
	rows, err := s.r.QueryContext(ctx, sqlq, args...)
	if err != nil {
		return readings.LatestPage{}, fmt.Errorf("latest values: %w", err)
	}
	defer rows.Close()
	p := readings.NewLatestPager(q)
	for rows.Next() {
		var id, value string
		var v readings.LatestValue
		var ts int64
		if err := rows.Scan(&id, &v.Stream, &v.Field, &ts, &value); err != nil {
			return readings.LatestPage{}, fmt.Errorf("latest values: %w", err)
		}
		v.Time, v.Value = micros(ts), json.RawMessage(value)
		if !p.Add(id, v) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return readings.LatestPage{}, fmt.Errorf("latest values: %w", err)
	}
	return p.Page(), nil
}

// AggregateReadings sums up one field of one device: a range scan of the
// (dev, ts) index in time order, whose numeric values go to an
// Aggregator.
func (s *Store) AggregateReadings(ctx context.Context, q readings.AggregateQuery) (readings.Aggregate, error) {
	if err := q.Check(); err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
	}
	if q.Resolution > 0 {
		return s.aggregateRollups(ctx, q)
	}
	path := `$."` + q.Field + `"`
	sqlq := `SELECT ts, json_extract(data, ?1) FROM readings
		WHERE dev = (SELECT key FROM devices WHERE id = ?2) AND ts >= ?3 AND ts < ?4
		AND json_type(data, ?1) IN ('integer', 'real')`
	args := []any{path, q.DeviceID, q.From.UnixMicro(), q.To.UnixMicro()}
	if q.Stream != "" {
		sqlq += ` AND stream = ?5`
		args = append(args, q.Stream)
	}
	sqlq += ` ORDER BY ts, id`
	rows, err := s.r.QueryContext(ctx, sqlq, args...)
	if err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
	}
	defer rows.Close()
	a := readings.NewAggregator(q)
	for rows.Next() {
		var ts int64
		var v sql.NullFloat64
		if err := rows.Scan(&ts, &v); err != nil {
			return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
		}
		if v.Valid {
			a.Add(ts, v.Float64)
		}
	}
	if err := rows.Err(); err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
	}
	return a.Result(), nil
}

// aggregateRollups sums up a device's rollups of one resolution: a range
// of the rollups' primary key (dev, res, bucket).
func (s *Store) aggregateRollups(ctx context.Context, q readings.AggregateQuery) (readings.Aggregate, error) {
	sqlq := `SELECT bucket, n, sum, min, max, last, last_ts FROM rollups
		WHERE dev = (SELECT key FROM devices WHERE id = ?) AND res = ? AND bucket >= ? AND bucket < ? AND field = ?`
	args := []any{q.DeviceID, q.Resolution, q.From.UnixMicro(), q.To.UnixMicro(), q.Field}
	if q.Stream != "" {
		sqlq += ` AND stream = ?`
		args = append(args, q.Stream)
	}
	rows, err := s.r.QueryContext(ctx, sqlq+` ORDER BY bucket`, args...)
	if err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate rollups: %w", err)
	}
	defer rows.Close()
	a := readings.NewAggregator(q)
	for rows.Next() {
		var b, n, lastAt int64
		var sum, mn, mx, last float64
		if err := rows.Scan(&b, &n, &sum, &mn, &mx, &last, &lastAt); err != nil {
			return readings.Aggregate{}, fmt.Errorf("aggregate rollups: %w", err)
		}
		a.AddSummary(b, n, sum, mn, mx, last, lastAt)
	}
	if err := rows.Err(); err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate rollups: %w", err)
	}
	return a.Result(), nil
}
