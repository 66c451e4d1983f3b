package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/devicehub/devicehub/internal/readings"
)

// UpsertLatest implements readings.TxStore: one upsert from column arrays,
// queued to go with the events' round trip. A value already kept with a
// later time stays.
func (t *txn) UpsertLatest(ctx context.Context, rows []readings.LatestRow) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	device, stream, field := make([]string, n), make([]string, n), make([]string, n)
	at := make([]time.Time, n)
	value := make([]string, n)
	for i := range rows {
		r := &rows[i]
		device[i], stream[i], field[i], at[i], value[i] = r.DeviceID, r.Stream, r.Field, r.Time, string(r.Value)
	}
	t.queued.Queue(`INSERT INTO latest_values AS l (device_id, stream, field, ts, value)
		SELECT u.d, u.s, u.f, u.t, u.v::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS u(d, s, f, t, v)
		ON CONFLICT (device_id, stream, field) DO UPDATE SET ts = excluded.ts, value = excluded.value
		WHERE excluded.ts >= l.ts`, device, stream, field, at, value)
	return nil
}

// LatestValues returns the latest values of every device by device id: a
// walk of latest_values' primary key.
func (s *Store) LatestValues(ctx context.Context, q readings.LatestQuery) (readings.LatestPage, error) {
	sqlq := `SELECT l.device_id, l.stream, l.field, l.ts, l.value FROM latest_values l WHERE l.device_id > $1`
	args := []any{q.After}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Type != "" {
		sqlq += ` AND l.device_id IN (SELECT id FROM devices WHERE type = ` + arg(q.Type) + `)`
	}
	if q.Stream != "" {
		sqlq += ` AND l.stream = ` + arg(q.Stream)
	}
	if q.Field != "" {
		sqlq += ` AND l.field = ` + arg(q.Field)
	}
	sqlq += ` ORDER BY l.device_id, l.stream, l.field`
	rows, err := s.pool.Query(ctx, sqlq, args...)
	if err != nil {
		return readings.LatestPage{}, fmt.Errorf("latest values: %w", err)
	}
	defer rows.Close()
	p := readings.NewLatestPager(q)
	for rows.Next() {
		var id string
		var v readings.LatestValue
		var value []byte
		if err := rows.Scan(&id, &v.Stream, &v.Field, &v.Time, &value); err != nil {
			return readings.LatestPage{}, fmt.Errorf("latest values: %w", err)
		}
		v.Time, v.Value = v.Time.UTC(), value
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
// (device_id, ts, id) index in time order, whose numeric values go to an
// Aggregator.
func (s *Store) AggregateReadings(ctx context.Context, q readings.AggregateQuery) (readings.Aggregate, error) {
	if err := q.Check(); err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
	}
	if q.Resolution > 0 {
		return s.aggregateRollups(ctx, q)
	}
	sqlq := `SELECT ts, (data->>$2)::float8 FROM readings
		WHERE device_id = $1 AND ts >= $3 AND ts < $4 AND jsonb_typeof(data->$2) = 'number'`
	args := []any{q.DeviceID, q.Field, q.From, q.To}
	if q.Stream != "" {
		sqlq += ` AND stream = $5`
		args = append(args, q.Stream)
	}
	sqlq += ` ORDER BY ts, id`
	rows, err := s.pool.Query(ctx, sqlq, args...)
	if err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
	}
	defer rows.Close()
	a := readings.NewAggregator(q)
	for rows.Next() {
		var ts time.Time
		var v float64
		if err := rows.Scan(&ts, &v); err != nil {
			return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
		}
		a.Add(ts.UnixMicro(), v)
	}
	if err := rows.Err(); err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
	}
	return a.Result(), nil
}

// aggregateRollups sums up a device's rollups of one resolution: a range
// of the rollups' primary key (device_id, res, bucket).
func (s *Store) aggregateRollups(ctx context.Context, q readings.AggregateQuery) (readings.Aggregate, error) {
	sqlq := `SELECT bucket, n, sum, min, max, last, last_ts FROM rollups
		WHERE device_id = $1 AND res = $2 AND bucket >= $3 AND bucket < $4 AND field = $5`
	args := []any{q.DeviceID, q.Resolution, q.From, q.To, q.Field}
	if q.Stream != "" {
		sqlq += ` AND stream = $6`
		args = append(args, q.Stream)
	}
	rows, err := s.pool.Query(ctx, sqlq+` ORDER BY bucket`, args...)
	if err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate rollups: %w", err)
	}
	defer rows.Close()
	a := readings.NewAggregator(q)
	for rows.Next() {
		var b, lastAt time.Time
		var n int64
		var sum, mn, mx, last float64
		if err := rows.Scan(&b, &n, &sum, &mn, &mx, &last, &lastAt); err != nil {
			return readings.Aggregate{}, fmt.Errorf("aggregate rollups: %w", err)
		}
		a.AddSummary(b.UnixMicro(), n, sum, mn, mx, last, lastAt.UnixMicro())
	}
	if err := rows.Err(); err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate rollups: %w", err)
	}
	return a.Result(), nil
}
