package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/registry"
)

var _ accounts.Store = (*Store)(nil)

// CreateUser stores a new operator account, or fails with accounts.ErrExists.
func (s *Store) CreateUser(ctx context.Context, u accounts.User) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO operator_users (name, role, password_hash, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING`,
		u.Name, string(u.Role), u.PasswordHash, u.CreatedAt, u.UpdatedAt)
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return accounts.ErrExists
	}
	return nil
}

const userColumns = `name, role, password_hash, created_at, updated_at`

func scanUser(sc interface{ Scan(...any) error }) (accounts.User, error) {
	var u accounts.User
	var role string
	err := sc.Scan(&u.Name, &role, &u.PasswordHash, &u.CreatedAt, &u.UpdatedAt)
	u.Role, u.CreatedAt, u.UpdatedAt = access.Role(role), u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return u, err
}

// GetUser returns one operator account.
func (s *Store) GetUser(ctx context.Context, name string) (*accounts.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM operator_users WHERE name = $1`, name))
	if errNoRows(err) {
		return nil, fmt.Errorf("get user %s: %w", name, accounts.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get user %s: %w", name, err)
	}
	return &u, nil
}

// ListUsers lists the operator accounts by name.
func (s *Store) ListUsers(ctx context.Context) ([]accounts.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM operator_users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	out := []accounts.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// DeleteUser removes an account and its sessions.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM operator_users WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("delete user %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("delete user %s: %w", name, accounts.ErrNotFound)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM operator_sessions WHERE user_name = $1`, name); err != nil {
			return fmt.Errorf("delete sessions of %s: %w", name, err)
		}
		return nil
	})
}

// CreateSession stores a session.
func (s *Store) CreateSession(ctx context.Context, se accounts.Session) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO operator_sessions (hash, user_name, created_at, expires_at, remote_addr) VALUES ($1, $2, $3, $4, $5)`,
		se.Hash, se.User, se.CreatedAt, se.ExpiresAt, se.RemoteAddr); err != nil {
		return fmt.Errorf("create session of %s: %w", se.User, err)
	}
	return nil
}

// GetSession returns the session with this hash.
func (s *Store) GetSession(ctx context.Context, hash []byte) (*accounts.Session, error) {
	se := accounts.Session{}
	err := s.pool.QueryRow(ctx, `SELECT hash, user_name, created_at, expires_at, remote_addr FROM operator_sessions WHERE hash = $1`, hash).
		Scan(&se.Hash, &se.User, &se.CreatedAt, &se.ExpiresAt, &se.RemoteAddr)
	if errNoRows(err) {
		return nil, fmt.Errorf("get session: %w", accounts.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	se.CreatedAt, se.ExpiresAt = se.CreatedAt.UTC(), se.ExpiresAt.UTC()
	return &se, nil
}

// DeleteSession removes a session; an absent one is no error.
func (s *Store) DeleteSession(ctx context.Context, hash []byte) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM operator_sessions WHERE hash = $1`, hash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes the sessions that expired before t.
func (s *Store) DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM operator_sessions WHERE expires_at < $1`, t)
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// CountDevices counts the devices by type, status, connection and
// disabled flag.
func (s *Store) CountDevices(ctx context.Context) ([]registry.DeviceCount, error) {
	rows, err := s.pool.Query(ctx, `SELECT type, status, connected, disabled, count(*) FROM devices
		GROUP BY type, status, connected, disabled ORDER BY type COLLATE "C", status COLLATE "C", connected, disabled`)
	if err != nil {
		return nil, fmt.Errorf("count devices: %w", err)
	}
	defer rows.Close()
	out := []registry.DeviceCount{}
	for rows.Next() {
		var c registry.DeviceCount
		if err := rows.Scan(&c.Type, &c.Status, &c.Connected, &c.Disabled, &c.Devices); err != nil {
			return nil, fmt.Errorf("count devices: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count devices: %w", err)
	}
	return out, nil
}

// PresenceHistory returns a device's presence events newest first (the
// partial index events_presence serves it).
func (s *Store) PresenceHistory(ctx context.Context, deviceID string, before int64, limit int) ([]events.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, type, time, device_id, device_type, args::text FROM events
		WHERE device_id = $1 AND seq < $2 AND type IN ('device_connected', 'device_disconnected', 'device_status_changed')
		ORDER BY seq DESC LIMIT $3`, deviceID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("presence history of %s: %w", deviceID, err)
	}
	defer rows.Close()
	out := []events.Event{}
	for rows.Next() {
		var e events.Event
		var args *string
		if err := rows.Scan(&e.Seq, &e.Type, &e.Time, &e.DeviceID, &e.DeviceType, &args); err != nil {
			return nil, fmt.Errorf("presence history of %s: %w", deviceID, err)
		}
		e.Time = e.Time.UTC()
		var raw []byte
		if args != nil {
			raw = []byte(*args)
		}
		if e.Args, err = events.DecodeArgs(e.Type, raw); err != nil {
			return nil, fmt.Errorf("read event %d: %w", e.Seq, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("presence history of %s: %w", deviceID, err)
	}
	return out, nil
}
