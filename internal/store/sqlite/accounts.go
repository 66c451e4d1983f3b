package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/registry"
)

var _ accounts.Store = (*Store)(nil)

// CreateUser stores a new operator account, or fails with accounts.ErrExists.
func (s *Store) CreateUser(ctx context.Context, u accounts.User) error {
	res, err := s.w.ExecContext(ctx, `INSERT INTO operator_users (name, role, password_hash, created_at, updated_at)
		VALUES (?,?,?,?,?) ON CONFLICT (name) DO NOTHING`,
		u.Name, string(u.Role), u.PasswordHash, u.CreatedAt.UnixMicro(), u.UpdatedAt.UnixMicro())
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return accounts.ErrExists
	}
	return nil
}

const userColumns = `name, role, password_hash, created_at, updated_at`

func scanUser(sc interface{ Scan(...any) error }) (accounts.User, error) {
	var u accounts.User
	var role string
	var created, updated int64
	err := sc.Scan(&u.Name, &role, &u.PasswordHash, &created, &updated)
	u.Role, u.CreatedAt, u.UpdatedAt = access.Role(role), micros(created), micros(updated)
	return u, err
}

// GetUser returns one operator account.
func (s *Store) GetUser(ctx context.Context, name string) (*accounts.User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userColumns+` FROM operator_users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get user %s: %w", name, accounts.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get user %s: %w", name, err)
	}
	return &u, nil
}

// ListUsers lists the operator accounts by name.
func (s *Store) ListUsers(ctx context.Context) ([]accounts.User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+userColumns+` FROM operator_users ORDER BY name`)
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
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM operator_users WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete user %s: %w", name, accounts.ErrNotFound)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM operator_sessions WHERE user_name = ?`, name); err != nil {
		return fmt.Errorf("delete sessions of %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	return nil
}

// CreateSession stores a session.
func (s *Store) CreateSession(ctx context.Context, se accounts.Session) error {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO operator_sessions (hash, user_name, created_at, expires_at, remote_addr) VALUES (?,?,?,?,?)`,
		se.Hash, se.User, se.CreatedAt.UnixMicro(), se.ExpiresAt.UnixMicro(), se.RemoteAddr); err != nil {
		return fmt.Errorf("create session of %s: %w", se.User, err)
	}
	return nil
}

// GetSession returns the session with this hash.
func (s *Store) GetSession(ctx context.Context, hash []byte) (*accounts.Session, error) {
	se := accounts.Session{}
	var created, expires int64
	err := s.r.QueryRowContext(ctx, `SELECT hash, user_name, created_at, expires_at, remote_addr FROM operator_sessions WHERE hash = ?`, hash).
		Scan(&se.Hash, &se.User, &created, &expires, &se.RemoteAddr)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get session: %w", accounts.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	se.CreatedAt, se.ExpiresAt = micros(created), micros(expires)
	return &se, nil
}

// DeleteSession removes a session; an absent one is no error.
func (s *Store) DeleteSession(ctx context.Context, hash []byte) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM operator_sessions WHERE hash = ?`, hash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes the sessions that expired before t.
func (s *Store) DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM operator_sessions WHERE expires_at < ?`, t.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// CountDevices counts the devices by type, status, connection and
// disabled flag.
func (s *Store) CountDevices(ctx context.Context) ([]registry.DeviceCount, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT type, status, connected, disabled, count(*) FROM devices
		GROUP BY type, status, connected, disabled ORDER BY type, status, connected, disabled`)
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
	rows, err := s.r.QueryContext(ctx, `SELECT seq, type, time, device_id, device_type, args FROM events
		WHERE device_id = ? AND seq < ? AND type IN ('device_connected', 'device_disconnected', 'device_status_changed')
		ORDER BY seq DESC LIMIT ?`, deviceID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("presence history of %s: %w", deviceID, err)
	}
	defer rows.Close()
	out := []events.Event{}
	for rows.Next() {
		var e events.Event
		var t int64
		var args sql.NullString
		if err := rows.Scan(&e.Seq, &e.Type, &t, &e.DeviceID, &e.DeviceType, &args); err != nil {
			return nil, fmt.Errorf("presence history of %s: %w", deviceID, err)
		}
		e.Time = micros(t)
		if e.Args, err = events.DecodeArgs(e.Type, []byte(args.String)); err != nil {
			return nil, fmt.Errorf("read event %d: %w", e.Seq, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("presence history of %s: %w", deviceID, err)
	}
	return out, nil
}
