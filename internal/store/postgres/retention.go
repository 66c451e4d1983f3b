package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/retention"
)

var _ retention.Store = (*Store)(nil)

// RetentionDevices implements retention.Store.
func (s *Store) RetentionDevices(ctx context.Context, after string, n int) ([]retention.Device, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, type FROM devices WHERE id > $1 ORDER BY id LIMIT $2`, after, n)
	if err != nil {
		return nil, fmt.Errorf("retention devices: %w", err)
	}
	var out []retention.Device
	var d retention.Device
	if _, err := pgx.ForEachRow(rows, []any{&d.ID, &d.Type}, func() error {
		out = append(out, d)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("retention devices: %w", err)
	}
	return out, nil
}

// ExpireReadings implements retention.Store: per device, a range of the
// (device_id, ts, id) index, in one transaction. The newest reading of
// the table stays, like on SQLite.
func (s *Store) ExpireReadings(ctx context.Context, cuts []retention.Cutoff, limit int) (int, error) {
	done := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, c := range cuts {
			if done >= limit {
				break
			}
			tag, err := tx.Exec(ctx, `DELETE FROM readings WHERE id IN (
				SELECT id FROM readings WHERE device_id = $1 AND ts < $2
				AND id < (SELECT max(id) FROM readings) LIMIT $3)`, c.DeviceID, c.Before, limit-done)
			if err != nil {
				return err
			}
			done += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire readings: %w", err)
	}
	return done, nil
}

// StripMessagePayloads implements retention.Store: a range of the
// primary key.
func (s *Store) StripMessagePayloads(ctx context.Context, before time.Time, after int64, limit int) (int, int64, error) {
	var expired int
	last := after
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT count(*), coalesce(max(id), $1) FROM (SELECT id, received_at FROM messages WHERE id > $1 ORDER BY id LIMIT $2) m WHERE received_at < $3`,
			after, limit, before).Scan(&expired, &last)
		if err != nil || expired == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE messages SET payload = NULL WHERE id > $1 AND id <= $2 AND received_at < $3 AND payload IS NOT NULL`, after, last, before)
		return err
	})
	if err != nil {
		return 0, after, fmt.Errorf("strip message payloads: %w", err)
	}
	return expired, last, nil
}

// ExpireMessages implements retention.Store: the oldest records by id;
// the newest stays, so that message ids never go back after a restart.
func (s *Store) ExpireMessages(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM messages WHERE id IN (
		SELECT id FROM (SELECT id, received_at FROM messages ORDER BY id LIMIT $1) m WHERE received_at < $2)
		AND id < (SELECT max(id) FROM messages)`, limit, before)
	if err != nil {
		return 0, fmt.Errorf("expire messages: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// ExpireEvents implements retention.Store: the oldest events by seq.
func (s *Store) ExpireEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM events WHERE seq IN (
		SELECT seq FROM (SELECT seq, time FROM events ORDER BY seq LIMIT $1) e WHERE time < $2)
		AND seq < (SELECT max(seq) FROM events)`, limit, before)
	if err != nil {
		return 0, fmt.Errorf("expire events: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// DiskSize returns the bytes of the tables of the store's schema, with
// their indexes and TOAST.
func (s *Store) DiskSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
		JOIN pg_namespace ns ON ns.oid = c.relnamespace
		WHERE ns.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')`).Scan(&n); err != nil {
		return 0, fmt.Errorf("disk size: %w", err)
	}
	return n, nil
}
