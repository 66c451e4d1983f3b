package sqlite

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/devicehub/devicehub/internal/blocks"
	"github.com/devicehub/devicehub/internal/readings"
)

// maxLatestCached bounds the devices whose latest values Commit keeps
// decoded in memory (Store.latest): up to about 1 KiB each for 4 fields
// (the values are slices of the message's encoded event arguments), so
// at most ~16 MiB. A device beyond it is read from latest_fields, as
// every device was before the cache.
const maxLatestCached = 1 << 14

// UpsertLatest implements readings.TxStore: it merges the rows into the
// kept values of their devices (readings.MergeLatest) and writes each
// device's row back, ready to answer. The kept values come from the
// store's cache of what earlier commits wrote, and from latest_fields for
// devices not in it.
func (t *txn) UpsertLatest(ctx context.Context, rows []readings.LatestRow) error {
	snap := t.s.snap.Load() // only Commit publishes, under wmu: stable here
	keys := make([]int64, 0, 16)
	var missing, untyped []any
	for i := range rows {
		k, ok := t.key(rows[i].DeviceID)
		if !ok {
			return fmt.Errorf("device %s of a reading is not known", rows[i].DeviceID)
		}
		if i == 0 || rows[i].DeviceID != rows[i-1].DeviceID {
			keys = append(keys, k)
			if _, ok := t.keptLatest(k); ok {
				continue
			}
			if snap == nil {
				missing = append(missing, k)
				continue
			}
			// The snapshot holds every device with latest values: one
			// that is not in it has none, and its type is read.
			id := rows[i].DeviceID
			e, ok := snap.get(id)
			if !ok {
				if t.latest == nil {
					t.latest = map[int64][]readings.LatestValue{}
				}
				t.latest[k] = nil
				if _, ok := t.snapUpd[id]; !ok {
					untyped = append(untyped, k)
				}
				continue
			}
			d := readings.DeviceLatest{DeviceID: id, Raw: e.raw}
			vs, err := d.Decoded()
			if err != nil {
				return err
			}
			if t.latest == nil {
				t.latest = map[int64][]readings.LatestValue{}
			}
			t.latest[k] = vs
		}
	}
	if t.latest == nil {
		t.latest = make(map[int64][]readings.LatestValue, len(keys))
	}
	err := t.s.inserts["latest_lookup"].query(ctx, t.tx, missing, func(r *sql.Rows) error {
		var k int64
		var vals []byte
		if err := r.Scan(&k, &vals); err != nil {
			return err
		}
		var vs []readings.LatestValue
		if err := json.Unmarshal(vals, &vs); err != nil {
			return fmt.Errorf("latest values of device key %d: %w", k, err)
		}
		t.latest[k] = vs
		return nil
	})
	if err != nil {
		return fmt.Errorf("read latest values: %w", err)
	}
	var types map[int64]string
	if len(untyped) > 0 {
		types = make(map[int64]string, len(untyped))
		err := t.s.inserts["device_types"].query(ctx, t.tx, untyped, func(r *sql.Rows) error {
			var k int64
			var typ string
			if err := r.Scan(&k, &typ); err != nil {
				return err
			}
			types[k] = typ
			return nil
		})
		if err != nil {
			return fmt.Errorf("read device types: %w", err)
		}
	}
	args := t.s.args.take(2 * len(keys))
	for i, d := 0, 0; i < len(rows); d++ {
		j := i + 1
		for j < len(rows) && rows[j].DeviceID == rows[i].DeviceID {
			j++
		}
		dev := rows[i:j:j]
		for n := range dev {
			dev[n].Time = micros(dev[n].Time.UnixMicro())
		}
		k := keys[d]
		kept, _ := t.keptLatest(k)
		// The kept values are the writer's own (s.latest and t.latest
		// are read and written under wmu only, and a failed Commit drops
		// s.latest): merged into in place when no field is new.
		merged := readings.MergeLatestInPlace(kept, dev)
		// Encoded into a buffer kept across devices and commits (under
		// wmu); the snapshot takes a copy, which the statement binds too.
		vals, err := readings.AppendLatest(t.s.latestBuf[:0], merged)
		t.s.latestBuf = vals
		if err != nil {
			return fmt.Errorf("latest values of %s: %w", rows[i].DeviceID, err)
		}
		t.latest[k] = merged
		if snap != nil {
			if t.snapUpd == nil {
				t.snapUpd = make(map[string]latestEntry, len(keys))
			}
			own := bytes.Clone(vals)
			t.snapshotLatest(snap, rows[i].DeviceID, types[k], own)
			args = append(args, k, sharedText(own))
		} else {
			args = append(args, k, string(vals))
		}
		i = j
	}
	if cap(t.s.latestBuf) > 1<<16 {
		t.s.latestBuf = nil // one device's many values: not kept
	}
	return t.s.inserts["latest_fields"].exec(ctx, t, args)
}

// snapshotLatest records the latest values vals of device id for the
// snapshot published once t committed. typ is the device's type when it
// was read because the device is new to the snapshot.
func (t *txn) snapshotLatest(snap *latestSnap, id, typ string, vals []byte) {
	if t.snapUpd == nil {
		t.snapUpd = map[string]latestEntry{}
	}
	if e, ok := t.snapUpd[id]; ok {
		typ = e.typ
	} else if e, ok := snap.get(id); ok {
		typ = e.typ
	}
	t.snapUpd[id] = latestEntry{id: id, typ: typ, raw: vals}
}

// keptLatest returns the latest values of device key k before the rows
// being merged: what this transaction wrote or read, else the store's
// cache of committed values. ok is false when neither has the device.
func (t *txn) keptLatest(k int64) (vs []readings.LatestValue, ok bool) {
	if vs, ok = t.latest[k]; ok {
		return vs, true
	}
	vs, ok = t.s.latest[k]
	return vs, ok
}

// cacheLatest keeps the latest values this transaction wrote or read, once
// it committed; the caller holds wmu. A cached slice is written later by
// UpsertLatest (MergeLatestInPlace) under wmu only, and a failed Commit
// drops them all (s.latest = nil), so none is seen half merged.
func (s *Store) cacheLatest(written map[int64][]readings.LatestValue) {
	if s.latest == nil {
		s.latest = make(map[int64][]readings.LatestValue, len(written))
	}
	for k, vs := range written {
		if _, ok := s.latest[k]; !ok && len(s.latest) >= maxLatestCached {
			for old := range s.latest { // map order: an arbitrary device goes
				delete(s.latest, old)
				break
			}
		}
		s.latest[k] = vs
	}
}

// LatestValues returns the latest values of every device by device id,
// from the snapshot in memory (latest.go), or from the tables when the
// store keeps none.
func (s *Store) LatestValues(ctx context.Context, q readings.LatestQuery) (readings.LatestPage, error) {
	if snap := s.snap.Load(); snap != nil {
		return latestFromSnapshot(snap, q)
	}
	return s.latestFromTables(ctx, q)
}

// latestFromTables returns the latest values of every device by device
// id: an index walk of devices.id and, for each device, its row of
// latest_fields, answered as stored unless a stream or field is asked for.
func (s *Store) latestFromTables(ctx context.Context, q readings.LatestQuery) (readings.LatestPage, error) {
	sqlq := `SELECT d.id, l.vals FROM devices d JOIN latest_fields l ON l.dev = d.key WHERE d.id > ?`
	args := []any{q.After}
	if q.Type != "" {
		sqlq += ` AND d.type = ?`
		args = append(args, q.Type)
	}
	sqlq += ` ORDER BY d.id`
	rows, err := s.r.QueryContext(ctx, sqlq, args...)
	if err != nil {
		return readings.LatestPage{}, fmt.Errorf("latest values: %w", err)
	}
	defer rows.Close()
	p := readings.NewLatestPager(q)
	filter := q.Stream != "" || q.Field != ""
	for rows.Next() {
		var id string
		var vals []byte
		if err := rows.Scan(&id, &vals); err != nil {
			return readings.LatestPage{}, fmt.Errorf("latest values: %w", err)
		}
		if !filter {
			if !p.AddRaw(id, vals) {
				break
			}
			continue
		}
		full, err := addFiltered(p, q, id, vals)
		if err != nil {
			return readings.LatestPage{}, err
		}
		if full {
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
	sqlq := `SELECT ts, id, json_extract(data, ?1) FROM readings
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
	// The values go to the aggregator in (time, id) order, rows and
	// blocks merged, so that sums and the last of equal times come out
	// as they would from rows alone.
	type point struct {
		ts, id int64
		v      float64
	}
	var pts []point
	for rows.Next() {
		var p point
		var v sql.NullFloat64
		if err := rows.Scan(&p.ts, &p.id, &v); err != nil {
			return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
		}
		if v.Valid {
			p.v = v.Float64
			pts = append(pts, p)
		}
	}
	if err := rows.Err(); err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
	}
	// The head is read before the blocks (see QueryReadings); a
	// reading in both is counted once.
	from, to := q.From.UnixMicro(), q.To.UnixMicro()
	refs := s.headRefs(q.DeviceID, func(e *rdEntry) bool {
		return (q.Stream == "" || e.stream == q.Stream) && e.ts >= from && e.ts < to
	}, 0)
	for i := range refs {
		rec, err := refs[i].decode()
		if err != nil {
			return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
		}
		var vals map[string]any
		if err := json.Unmarshal(rec.Values, &vals); err != nil {
			return readings.Aggregate{}, fmt.Errorf("aggregate readings: reading %d: %w", rec.ID, err)
		}
		if v, ok := vals[q.Field].(float64); ok {
			pts = append(pts, point{rec.Time, rec.ID, v})
		}
	}
	b := &blockScan{deviceID: q.DeviceID, stream: q.Stream, from: q.From.UnixMicro(), to: q.To.UnixMicro(), field: q.Field,
		keep: func(r *blocks.Reading) bool {
			if v, ok := r.Values[q.Field].(float64); ok {
				pts = append(pts, point{r.Time, r.ID, v})
			}
			return false
		}}
	if err := s.scanBlocks(ctx, b); err != nil {
		return readings.Aggregate{}, fmt.Errorf("aggregate readings: %w", err)
	}
	if len(pts) > 0 {
		slices.SortFunc(pts, func(a, b point) int { return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.id, b.id)) })
		pts = slices.CompactFunc(pts, func(a, b point) bool { return a.id == b.id })
	}
	a := readings.NewAggregator(q)
	for _, p := range pts {
		a.Add(p.ts, p.v)
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
