package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/provisioning"
)

var _ provisioning.Store = (*Store)(nil)

func encodeTags(tags []string) (string, error) {
	if len(tags) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(tags)
	return string(b), err
}

func decodeTags(s string) ([]string, error) {
	var tags []string
	if err := json.Unmarshal([]byte(s), &tags); err != nil {
		return nil, err
	}
	if len(tags) == 0 {
		return nil, nil
	}
	return tags, nil
}

// CreateProvisioningToken stores a token with the hash of its secret.
func (s *Store) CreateProvisioningToken(ctx context.Context, t provisioning.Token, hash []byte) error {
	tags, err := encodeTags(t.Tags)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO provisioning_tokens (id, name, hash, device_type, grp, tags, expires_at, max_uses, auto_approve, created_at)
		VALUES (?,?,?,?,?,?,?,?,?,?)`, t.ID, t.Name, hash, t.DeviceType, t.Group, tags, t.ExpiresAt.UnixMicro(), t.MaxUses, t.AutoApprove, t.CreatedAt.UnixMicro())
	if err != nil {
		return fmt.Errorf("insert provisioning token: %w", err)
	}
	return nil
}

const provTokenColumns = `id, name, device_type, grp, tags, expires_at, max_uses, uses, auto_approve, created_at, revoked_at`

func scanProvToken(sc interface{ Scan(...any) error }) (provisioning.Token, error) {
	var t provisioning.Token
	var tags string
	var exp, created int64
	var revoked sql.NullInt64
	if err := sc.Scan(&t.ID, &t.Name, &t.DeviceType, &t.Group, &tags, &exp, &t.MaxUses, &t.Uses, &t.AutoApprove, &created, &revoked); err != nil {
		return t, err
	}
	var err error
	if t.Tags, err = decodeTags(tags); err != nil {
		return t, fmt.Errorf("decode tags of token %s: %w", t.ID, err)
	}
	t.ExpiresAt, t.CreatedAt = micros(exp), micros(created)
	if revoked.Valid {
		r := micros(revoked.Int64)
		t.RevokedAt = &r
	}
	return t, nil
}

// ListProvisioningTokens lists the tokens by creation.
func (s *Store) ListProvisioningTokens(ctx context.Context) ([]provisioning.Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+provTokenColumns+` FROM provisioning_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list provisioning tokens: %w", err)
	}
	defer rows.Close()
	out := []provisioning.Token{}
	for rows.Next() {
		t, err := scanProvToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list provisioning tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeProvisioningToken revokes a token (again is fine).
func (s *Store) RevokeProvisioningToken(ctx context.Context, id string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE provisioning_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?`, at.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("revoke provisioning token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return provisioning.ErrTokenNotFound
	}
	return nil
}

// CreateProvisioningOperation counts a use of the token and stores the
// operation, in one transaction; see provisioning.Store.
func (s *Store) CreateProvisioningOperation(ctx context.Context, tokenHash []byte, op *provisioning.Operation, now time.Time) (provisioning.Token, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return provisioning.Token{}, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	t, err := scanProvToken(tx.QueryRowContext(ctx, `UPDATE provisioning_tokens SET uses = uses + 1
		WHERE hash = ? AND revoked_at IS NULL AND expires_at > ? AND (max_uses = 0 OR uses < max_uses)
		RETURNING `+provTokenColumns, tokenHash, now.UnixMicro()))
	if errors.Is(err, sql.ErrNoRows) {
		t, err := scanProvToken(tx.QueryRowContext(ctx, `SELECT `+provTokenColumns+` FROM provisioning_tokens WHERE hash = ?`, tokenHash))
		if errors.Is(err, sql.ErrNoRows) {
			return provisioning.Token{}, provisioning.ErrTokenNotFound
		}
		if err != nil {
			return provisioning.Token{}, fmt.Errorf("read provisioning token: %w", err)
		}
		return t, tokenRefusal(t, now)
	}
	if err != nil {
		return provisioning.Token{}, fmt.Errorf("use provisioning token: %w", err)
	}
	op.TokenID, op.DeviceType, op.Group, op.Tags = t.ID, t.DeviceType, t.Group, t.Tags
	tags, err := encodeTags(op.Tags)
	if err != nil {
		return provisioning.Token{}, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO provisioning_operations (id, token_id, verification_code, secret_hash, public_key,
		requested_device_id, device_type, grp, tags, status, remote_addr, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		op.ID, op.TokenID, op.VerificationCode, op.SecretHash, op.PublicKey, op.RequestedDeviceID, op.DeviceType, op.Group, tags,
		op.Status, op.RemoteAddr, op.CreatedAt.UnixMicro(), op.ExpiresAt.UnixMicro())
	if err != nil {
		return provisioning.Token{}, fmt.Errorf("insert provisioning operation: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return provisioning.Token{}, fmt.Errorf("commit: %w", err)
	}
	return t, nil
}

// tokenRefusal says why a token that exists admits no operation at now.
func tokenRefusal(t provisioning.Token, now time.Time) error {
	switch {
	case t.RevokedAt != nil:
		return provisioning.ErrTokenRevoked
	case !now.Before(t.ExpiresAt):
		return provisioning.ErrTokenExpired
	default:
		return provisioning.ErrTokenExhausted
	}
}

const provOperationColumns = `id, token_id, verification_code, secret_hash, public_key, requested_device_id, device_id, device_type,
	grp, tags, status, reason, sealed, remote_addr, created_at, expires_at, claimed_at, decided_at`

func scanProvOperation(sc interface{ Scan(...any) error }) (provisioning.Operation, error) {
	var op provisioning.Operation
	var tags string
	var created, exp int64
	var claimed, decided sql.NullInt64
	if err := sc.Scan(&op.ID, &op.TokenID, &op.VerificationCode, &op.SecretHash, &op.PublicKey, &op.RequestedDeviceID, &op.DeviceID,
		&op.DeviceType, &op.Group, &tags, &op.Status, &op.Reason, &op.Sealed, &op.RemoteAddr, &created, &exp, &claimed, &decided); err != nil {
		return op, err
	}
	var err error
	if op.Tags, err = decodeTags(tags); err != nil {
		return op, fmt.Errorf("decode tags of operation %s: %w", op.ID, err)
	}
	op.CreatedAt, op.ExpiresAt = micros(created), micros(exp)
	if claimed.Valid {
		t := micros(claimed.Int64)
		op.ClaimedAt = &t
	}
	if decided.Valid {
		t := micros(decided.Int64)
		op.DecidedAt = &t
	}
	return op, nil
}

// GetProvisioningOperation returns an operation, or
// provisioning.ErrOperationNotFound.
func (s *Store) GetProvisioningOperation(ctx context.Context, id string) (*provisioning.Operation, error) {
	op, err := scanProvOperation(s.r.QueryRowContext(ctx, `SELECT `+provOperationColumns+` FROM provisioning_operations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, provisioning.ErrOperationNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get provisioning operation %s: %w", id, err)
	}
	return &op, nil
}

// ListProvisioningOperations lists operations, newest first.
func (s *Store) ListProvisioningOperations(ctx context.Context, status string, limit int) ([]provisioning.Operation, error) {
	q := `SELECT ` + provOperationColumns + ` FROM provisioning_operations`
	var args []any
	switch status {
	case "":
	case provisioning.StatusPending:
		q += ` WHERE status IN ('pending', 'approving')`
	default:
		q += ` WHERE status = ?`
		args = append(args, status)
	}
	q += ` ORDER BY created_at DESC, id LIMIT ?`
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list provisioning operations: %w", err)
	}
	defer rows.Close()
	out := []provisioning.Operation{}
	for rows.Next() {
		op, err := scanProvOperation(rows)
		if err != nil {
			return nil, fmt.Errorf("list provisioning operations: %w", err)
		}
		out = append(out, op)
	}
	return out, rows.Err()
}

func (s *Store) execOne(ctx context.Context, what, q string, args ...any) (bool, error) {
	res, err := s.w.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	return n == 1, nil
}

// ClaimProvisioningOperation: see provisioning.Store.
func (s *Store) ClaimProvisioningOperation(ctx context.Context, id string, now, stale time.Time) (bool, error) {
	return s.execOne(ctx, "claim provisioning operation", `UPDATE provisioning_operations SET status = 'approving', claimed_at = ?
		WHERE id = ? AND expires_at > ? AND (status = 'pending' OR (status = 'approving' AND claimed_at < ?))`,
		now.UnixMicro(), id, now.UnixMicro(), stale.UnixMicro())
}

// ReleaseProvisioningOperation: see provisioning.Store.
func (s *Store) ReleaseProvisioningOperation(ctx context.Context, id string) error {
	_, err := s.execOne(ctx, "release provisioning operation", `UPDATE provisioning_operations SET status = 'pending', claimed_at = NULL
		WHERE id = ? AND status = 'approving'`, id)
	return err
}

// RejectProvisioningOperation: see provisioning.Store.
func (s *Store) RejectProvisioningOperation(ctx context.Context, id, reason string, now, stale time.Time) (bool, error) {
	return s.execOne(ctx, "reject provisioning operation", `UPDATE provisioning_operations SET status = 'rejected', reason = ?, decided_at = ?
		WHERE id = ? AND expires_at > ? AND (status = 'pending' OR (status = 'approving' AND claimed_at < ?))`,
		reason, now.UnixMicro(), id, now.UnixMicro(), stale.UnixMicro())
}

// DeliverProvisioningOperation: see provisioning.Store.
func (s *Store) DeliverProvisioningOperation(ctx context.Context, id string, now time.Time) ([]byte, error) {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: no other writer in between
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	var sealed []byte
	err = tx.QueryRowContext(ctx, `SELECT sealed FROM provisioning_operations
		WHERE id = ? AND status = 'approved' AND expires_at > ? AND sealed IS NOT NULL`, id, now.UnixMicro()).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("deliver provisioning operation: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE provisioning_operations SET status = 'delivered', sealed = NULL WHERE id = ?`, id); err != nil {
		return nil, fmt.Errorf("deliver provisioning operation: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return sealed, nil
}

// RegisteredDevice returns the device a registration key is bound to.
func (s *Store) RegisteredDevice(ctx context.Context, keyHash []byte) (string, error) {
	var id string
	err := s.w.QueryRowContext(ctx, `SELECT device_id FROM registration_keys WHERE key_hash = ?`, keyHash).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up registration key: %w", err)
	}
	return id, nil
}

// BindRegistrationKey implements provisioning.TxStore.
func (t *txn) BindRegistrationKey(ctx context.Context, keyHash []byte, deviceID string) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO registration_keys (key_hash, device_id, created_at) VALUES (?,?,?) ON CONFLICT DO NOTHING`,
		keyHash, deviceID, t.now)
	return err
}

// ApproveOperation implements provisioning.TxStore.
func (t *txn) ApproveOperation(ctx context.Context, a *provisioning.OperationApproval) error {
	_, err := t.tx.ExecContext(ctx, `UPDATE provisioning_operations SET status = 'approved', device_id = ?, sealed = ?,
		expires_at = ?, decided_at = ? WHERE id = ?`,
		a.DeviceID, a.Sealed, a.DeliverBy.UnixMicro(), a.At.UnixMicro(), a.ID)
	return err
}

// RegistrationKeyScheme implements provisioning.RegistrationStore.
func (s *Store) RegistrationKeyScheme(ctx context.Context) (string, error) {
	var scheme string
	if err := s.w.QueryRowContext(ctx, `SELECT scheme FROM registration_key_scheme`).Scan(&scheme); err != nil {
		return "", fmt.Errorf("registration key scheme: %w", err)
	}
	return scheme, nil
}

// RekeyRegistrationKeys implements provisioning.RegistrationStore.
func (s *Store) RekeyRegistrationKeys(ctx context.Context, scheme string, rekey func(old []byte) []byte) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("rekey registration keys: %w", err)
	}
	defer tx.Rollback()
	var current string
	if err := tx.QueryRowContext(ctx, `SELECT scheme FROM registration_key_scheme`).Scan(&current); err != nil {
		return fmt.Errorf("rekey registration keys: %w", err)
	}
	if current == scheme {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT key_hash FROM registration_keys`)
	if err != nil {
		return fmt.Errorf("rekey registration keys: %w", err)
	}
	var old [][]byte
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return fmt.Errorf("rekey registration keys: %w", err)
		}
		old = append(old, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("rekey registration keys: %w", err)
	}
	for _, h := range old {
		if _, err := tx.ExecContext(ctx, `UPDATE registration_keys SET key_hash = ? WHERE key_hash = ?`, rekey(h), h); err != nil {
			return fmt.Errorf("rekey registration keys: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE registration_key_scheme SET scheme = ?`, scheme); err != nil {
		return fmt.Errorf("rekey registration keys: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("rekey registration keys: %w", err)
	}
	return nil
}
