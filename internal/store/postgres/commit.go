package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/twin"
)

// eventLockID is the transaction advisory lock that orders event writers:
// held from the moment a batch takes its seqs until it commits, so that
// seqs become visible in increasing order even with several hub nodes.
const eventLockID = 0x6465766963656875 // "devicehu"

// txn is one Commit in progress: the transaction every domain's
// operations are written in. It implements commit.Tx and the TxStore of
// every domain; the SQL of each domain is in the file of that domain
// (registry.go, messages.go, provisioning.go, devicecmd.go).
//
// Statements a domain can leave for later (the device state patch) are
// queued and sent with the events, in one round trip; every other
// statement goes through db, which sends what is queued first.
type txn struct {
	tx     pgx.Tx
	exists map[string]bool // devices looked up or created in this batch
	now    time.Time
	queued pgx.Batch
	// seen is the store's cache of written last_seen values, and written
	// what PatchDevices wrote, remembered once committed.
	seen    *registry.SeenCache
	written []registry.SeenWrite
}

var (
	_ commit.Tx            = (*txn)(nil)
	_ registry.TxStore     = (*txn)(nil)
	_ readings.TxStore     = (*txn)(nil)
	_ provisioning.TxStore = (*txn)(nil)
	_ commands.TxStore     = (*txn)(nil)
	_ twin.TxStore         = (*txn)(nil)
)

// Commit writes batch in one transaction; see commit.Store.
func (s *Store) Commit(ctx context.Context, batch []*commit.Change) error {
	commit.ResetOutcomes(batch)
	var t *txn
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		t = &txn{tx: tx, exists: map[string]bool{}, now: time.Now().UTC(), seen: s.seen}
		return commit.Write(ctx, t, batch)
	})
	if err != nil {
		commit.ResetOutcomes(batch)
		return fmt.Errorf("postgres commit: %w", err)
	}
	s.seen.Committed(t.written)
	return nil
}

// db returns the transaction after sending the queued statements.
func (t *txn) db(ctx context.Context) (pgx.Tx, error) {
	if t.queued.Len() > 0 {
		b := t.queued
		t.queued = pgx.Batch{}
		if err := t.tx.SendBatch(ctx, &b).Close(); err != nil {
			return nil, err
		}
	}
	return t.tx, nil
}

// LookupDevices implements commit.Tx.
func (t *txn) LookupDevices(ctx context.Context, ids []string) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		t.exists[id] = false
	}
	rows, err := tx.Query(ctx, `SELECT id FROM devices WHERE id = ANY($1)`, ids)
	if err != nil {
		return err
	}
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		t.exists[id] = true
		return nil
	})
	return err
}

// DeviceExists implements commit.Tx: a device the lookup found is not
// asked for again.
func (t *txn) DeviceExists(ctx context.Context, id string) (bool, error) {
	if t.exists[id] {
		return true, nil
	}
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	var one int
	err = tx.QueryRow(ctx, `SELECT 1 FROM devices WHERE id = $1`, id).Scan(&one)
	if errNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up device %s: %w", id, err)
	}
	t.exists[id] = true
	return true, nil
}

// WriteEvents implements commit.Tx: it sends the queued statements, the
// lock that orders event writers and the insert in one round trip.
func (t *txn) WriteEvents(ctx context.Context, evs []*commit.Event) error {
	b := &t.queued
	var seqs []int64
	if len(evs) > 0 {
		typ, device, devType := make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs))
		at := make([]time.Time, len(evs))
		args := make([]*string, len(evs))
		ord := make([]int32, len(evs))
		for i, e := range evs {
			if e.Args != nil {
				a := string(e.Args)
				args[i] = &a
			}
			typ[i], at[i], device[i], devType[i], ord[i] = string(e.Type), e.Time, e.DeviceID, e.DeviceType, int32(i)
		}
		b.Queue(`SELECT pg_advisory_xact_lock($1)`, int64(eventLockID))
		b.Queue(`INSERT INTO events (type, time, device_id, device_type, args)
			SELECT u.type, u.time, u.device_id, u.device_type, u.args::json
			FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::int4[]) AS u(type, time, device_id, device_type, args, ord)
			ORDER BY u.ord
			RETURNING seq`, typ, at, device, devType, args, ord).Query(func(rows pgx.Rows) error {
			var seq int64
			_, err := pgx.ForEachRow(rows, []any{&seq}, func() error {
				seqs = append(seqs, seq)
				return nil
			})
			return err
		})
	}
	if _, err := t.db(ctx); err != nil {
		return err
	}
	if len(seqs) != len(evs) {
		return fmt.Errorf("%d seqs for %d events", len(seqs), len(evs))
	}
	// Identity values were drawn in ord order; RETURNING order is not
	// promised, so hand them out sorted.
	slices.Sort(seqs)
	for i, e := range evs {
		e.Seq = seqs[i]
	}
	return nil
}
