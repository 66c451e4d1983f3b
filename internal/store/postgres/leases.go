package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/lease"
	"github.com/devicehub/devicehub/internal/presence"
)

var _ lease.Store = (*Store)(nil)

// AcquireLease implements lease.Store: the row is taken when it is
// missing, expired, or already the holder's (a restart of the same
// node); the token grows by one at every acquisition.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (int64, bool, error) {
	var token int64
	err := s.pool.QueryRow(ctx, `
		INSERT INTO leases (name, holder, token, acquired_at, expires_at)
		VALUES ($1, $2, 1, now(), now() + $3 * interval '1 millisecond')
		ON CONFLICT (name) DO UPDATE
		SET holder = EXCLUDED.holder, token = leases.token + 1, acquired_at = now(), expires_at = EXCLUDED.expires_at
		WHERE leases.expires_at <= now() OR leases.holder = EXCLUDED.holder
		RETURNING token`, name, holder, ttl.Milliseconds()).Scan(&token)
	if errNoRows(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return token, true, nil
}

// RenewLease implements lease.Store.
func (s *Store) RenewLease(ctx context.Context, name, holder string, token int64, ttl time.Duration) (bool, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE leases SET expires_at = now() + $4 * interval '1 millisecond'
		WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()`, name, holder, token, ttl.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("renew lease %s: %w", name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseLease implements lease.Store: it expires the lease at once if
// token still holds it.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string, token int64) error {
	_, err := s.pool.Exec(ctx, `UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2 AND token = $3`, name, holder, token)
	if err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// LeaseHeld implements lease.Store: whether token is the current,
// unexpired token of name (the fencing check).
func (s *Store) LeaseHeld(ctx context.Context, name string, token int64) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM leases WHERE name = $1 AND token = $2 AND expires_at > now())`, name, token).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("check lease %s: %w", name, err)
	}
	return ok, nil
}

// Leases implements lease.Store.
func (s *Store) Leases(ctx context.Context, prefix string) ([]lease.Info, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, holder, token, acquired_at, expires_at, expires_at > now() FROM leases WHERE starts_with(name, $1) ORDER BY name`, prefix)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	defer rows.Close()
	var out []lease.Info
	for rows.Next() {
		var l lease.Info
		if err := rows.Scan(&l.Name, &l.Holder, &l.Token, &l.AcquiredAt, &l.ExpiresAt, &l.Live); err != nil {
			return nil, fmt.Errorf("list leases: %w", err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// DevicesOnNode lists the devices the database shows connected through
// node (cluster mode), with their session generation.
func (s *Store) DevicesOnNode(ctx context.Context, node string) ([]presence.LostDevice, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, type, coalesce(session_gen, 0) FROM devices WHERE connected AND node = $1 ORDER BY id`, node)
	if err != nil {
		return nil, fmt.Errorf("devices on node %s: %w", node, err)
	}
	defer rows.Close()
	var out []presence.LostDevice
	for rows.Next() {
		var d presence.LostDevice
		var g int64
		if err := rows.Scan(&d.ID, &d.Type, &g); err != nil {
			return nil, fmt.Errorf("devices on node %s: %w", node, err)
		}
		d.Gen = uint64(g)
		out = append(out, d)
	}
	return out, rows.Err()
}

// NextSessionGeneration implements the cluster-wide session generation:
// a PostgreSQL sequence, so every node's sessions are ordered.
func (s *Store) NextSessionGeneration(ctx context.Context) (uint64, error) {
	var g int64
	if err := s.pool.QueryRow(ctx, `SELECT nextval('session_generation')`).Scan(&g); err != nil {
		return 0, fmt.Errorf("next session generation: %w", err)
	}
	return uint64(g), nil
}
