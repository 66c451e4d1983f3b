package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/devicehub/devicehub/internal/commit"
)

// Fencing (cluster mode): the writes of single-owner work carry their
// lease's fence in their context (commit.WithFence); each is made in a
// transaction that first checks that the fence's token is still the
// lease's current, unexpired one, and holds the lease row (FOR SHARE) so
// that no other node can take the lease before the write commits. A write
// whose fence fails is refused with commit.ErrFenced.

// fenceHeld checks f inside tx.
func fenceHeld(ctx context.Context, tx pgx.Tx, f commit.Fence) (bool, error) {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM leases WHERE name = $1 AND token = $2 AND expires_at > now() FOR SHARE`, f.Lease, f.Token).Scan(&one)
	if errNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check lease %s: %w", f.Lease, err)
	}
	return true, nil
}

// FenceHeld implements commit.FenceChecker.
func (t *txn) FenceHeld(ctx context.Context, f commit.Fence) (bool, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	return fenceHeld(ctx, tx, f)
}

var _ commit.FenceChecker = (*txn)(nil)

// checkFence refuses, inside tx, the write of a context whose fence
// failed; a context without a fence passes.
func checkFence(ctx context.Context, tx pgx.Tx) error {
	f, ok := commit.FenceOf(ctx)
	if !ok {
		return nil
	}
	held, err := fenceHeld(ctx, tx, f)
	if err != nil {
		return err
	}
	if !held {
		return fmt.Errorf("lease %s, token %d: %w", f.Lease, f.Token, commit.ErrFenced)
	}
	return nil
}

// inTx runs fn in a transaction that first checks ctx's fence.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkFence(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

// exec runs one statement; with a fence in ctx, in a transaction that
// checks it first.
func (s *Store) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if _, ok := commit.FenceOf(ctx); !ok {
		return s.pool.Exec(ctx, sql, args...)
	}
	var tag pgconn.CommandTag
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		tag, err = tx.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}
