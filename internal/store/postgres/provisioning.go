package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/provisioning"
)

var _ provisioning.Store = (*Store)(nil)

func encodeProvTags(tags []string) ([]byte, error) {
	if len(tags) == 0 {
		return []byte("[]"), nil
	}
	return json.Marshal(tags)
}

func decodeProvTags(b []byte) ([]string, error) {
	var tags []string
	if err := json.Unmarshal(b, &tags); err != nil {
		return nil, err
	}
	if len(tags) == 0 {
		return nil, nil
	}
	return tags, nil
}

// CreateProvisioningToken stores a token with the hash of its secret.
func (s *Store) CreateProvisioningToken(ctx context.Context, t provisioning.Token, hash []byte) error {
	tags, err := encodeProvTags(t.Tags)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO provisioning_tokens (id, name, hash, device_type, grp, tags, expires_at, max_uses, auto_approve, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, t.ID, t.Name, hash, t.DeviceType, t.Group, tags, t.ExpiresAt, t.MaxUses, t.AutoApprove, t.CreatedAt)
	if err != nil {
		return fmt.Errorf("insert provisioning token: %w", err)
	}
	return nil
}

const provTokenColumns = `id, name, device_type, grp, tags, expires_at, max_uses, uses, auto_approve, created_at, revoked_at`

func scanProvToken(row pgx.Row) (provisioning.Token, error) {
	var t provisioning.Token
	var tags []byte
	if err := row.Scan(&t.ID, &t.Name, &t.DeviceType, &t.Group, &tags, &t.ExpiresAt, &t.MaxUses, &t.Uses, &t.AutoApprove, &t.CreatedAt, &t.RevokedAt); err != nil {
		return t, err
	}
	var err error
	if t.Tags, err = decodeProvTags(tags); err != nil {
		return t, fmt.Errorf("decode tags of token %s: %w", t.ID, err)
	}
	t.ExpiresAt, t.CreatedAt = t.ExpiresAt.UTC(), t.CreatedAt.UTC()
	if t.RevokedAt != nil {
		r := t.RevokedAt.UTC()
		t.RevokedAt = &r
	}
	return t, nil
}

// ListProvisioningTokens lists the tokens by creation.
func (s *Store) ListProvisioningTokens(ctx context.Context) ([]provisioning.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+provTokenColumns+` FROM provisioning_tokens ORDER BY created_at, id`)
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
	tag, err := s.pool.Exec(ctx, `UPDATE provisioning_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1`, id, at)
	if err != nil {
		return fmt.Errorf("revoke provisioning token: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return provisioning.ErrTokenNotFound
	}
	return nil
}

// CreateProvisioningOperation counts a use of the token and stores the
// operation, in one transaction; the conditional UPDATE makes the count
// atomic across nodes.
func (s *Store) CreateProvisioningOperation(ctx context.Context, tokenHash []byte, op *provisioning.Operation, now time.Time) (provisioning.Token, error) {
	var t provisioning.Token
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		t, err = scanProvToken(tx.QueryRow(ctx, `UPDATE provisioning_tokens SET uses = uses + 1
			WHERE hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND (max_uses = 0 OR uses < max_uses)
			RETURNING `+provTokenColumns, tokenHash, now))
		if errNoRows(err) {
			t, err = scanProvToken(tx.QueryRow(ctx, `SELECT `+provTokenColumns+` FROM provisioning_tokens WHERE hash = $1`, tokenHash))
			if errNoRows(err) {
				return provisioning.ErrTokenNotFound
			}
			if err != nil {
				return fmt.Errorf("read provisioning token: %w", err)
			}
			return tokenRefusal(t, now)
		}
		if err != nil {
			return fmt.Errorf("use provisioning token: %w", err)
		}
		op.TokenID, op.DeviceType, op.Group, op.Tags = t.ID, t.DeviceType, t.Group, t.Tags
		tags, err := encodeProvTags(op.Tags)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO provisioning_operations (id, token_id, verification_code, secret_hash, public_key,
			requested_device_id, device_type, grp, tags, status, remote_addr, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			op.ID, op.TokenID, op.VerificationCode, op.SecretHash, op.PublicKey, op.RequestedDeviceID, op.DeviceType, op.Group, tags,
			op.Status, op.RemoteAddr, op.CreatedAt, op.ExpiresAt)
		if err != nil {
			return fmt.Errorf("insert provisioning operation: %w", err)
		}
		return nil
	})
	if err != nil {
		return provisioning.Token{}, err
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

func scanProvOperation(row pgx.Row) (provisioning.Operation, error) {
	var op provisioning.Operation
	var tags []byte
	if err := row.Scan(&op.ID, &op.TokenID, &op.VerificationCode, &op.SecretHash, &op.PublicKey, &op.RequestedDeviceID, &op.DeviceID,
		&op.DeviceType, &op.Group, &tags, &op.Status, &op.Reason, &op.Sealed, &op.RemoteAddr, &op.CreatedAt, &op.ExpiresAt,
		&op.ClaimedAt, &op.DecidedAt); err != nil {
		return op, err
	}
	var err error
	if op.Tags, err = decodeProvTags(tags); err != nil {
		return op, fmt.Errorf("decode tags of operation %s: %w", op.ID, err)
	}
	op.CreatedAt, op.ExpiresAt = op.CreatedAt.UTC(), op.ExpiresAt.UTC()
	for _, p := range []**time.Time{&op.ClaimedAt, &op.DecidedAt} {
		if *p != nil {
			t := (*p).UTC()
			*p = &t
		}
	}
	return op, nil
}

// GetProvisioningOperation returns an operation, or
// provisioning.ErrOperationNotFound.
func (s *Store) GetProvisioningOperation(ctx context.Context, id string) (*provisioning.Operation, error) {
	op, err := scanProvOperation(s.pool.QueryRow(ctx, `SELECT `+provOperationColumns+` FROM provisioning_operations WHERE id = $1`, id))
	if errNoRows(err) {
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
	args := []any{limit}
	switch status {
	case "":
	case provisioning.StatusPending:
		q += ` WHERE status IN ('pending', 'approving')`
	default:
		q += ` WHERE status = $2`
		args = append(args, status)
	}
	q += ` ORDER BY created_at DESC, id LIMIT $1`
	rows, err := s.pool.Query(ctx, q, args...)
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
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ClaimProvisioningOperation: see provisioning.Store.
func (s *Store) ClaimProvisioningOperation(ctx context.Context, id string, now, stale time.Time) (bool, error) {
	return s.execOne(ctx, "claim provisioning operation", `UPDATE provisioning_operations SET status = 'approving', claimed_at = $2
		WHERE id = $1 AND expires_at > $2 AND (status = 'pending' OR (status = 'approving' AND claimed_at < $3))`, id, now, stale)
}

// ReleaseProvisioningOperation: see provisioning.Store.
func (s *Store) ReleaseProvisioningOperation(ctx context.Context, id string) error {
	_, err := s.execOne(ctx, "release provisioning operation", `UPDATE provisioning_operations SET status = 'pending', claimed_at = NULL
		WHERE id = $1 AND status = 'approving'`, id)
	return err
}

// RejectProvisioningOperation: see provisioning.Store.
func (s *Store) RejectProvisioningOperation(ctx context.Context, id, reason string, now, stale time.Time) (bool, error) {
	return s.execOne(ctx, "reject provisioning operation", `UPDATE provisioning_operations SET status = 'rejected', reason = $2, decided_at = $3
		WHERE id = $1 AND expires_at > $3 AND (status = 'pending' OR (status = 'approving' AND claimed_at < $4))`, id, reason, now, stale)
}

// DeliverProvisioningOperation: see provisioning.Store. The row lock of the
// UPDATE lets one of two concurrent polls win; the subquery reads the
// sealed credentials as they were before the update cleared them.
func (s *Store) DeliverProvisioningOperation(ctx context.Context, id string, now time.Time) ([]byte, error) {
	var sealed []byte
	err := s.pool.QueryRow(ctx, `UPDATE provisioning_operations o SET status = 'delivered', sealed = NULL
		FROM (SELECT id, sealed FROM provisioning_operations WHERE id = $1 FOR UPDATE) old
		WHERE o.id = old.id AND o.status = 'approved' AND o.expires_at > $2 AND o.sealed IS NOT NULL
		RETURNING old.sealed`, id, now).Scan(&sealed)
	if errNoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("deliver provisioning operation: %w", err)
	}
	return sealed, nil
}

// RegisteredDevice returns the device a registration key is bound to.
func (s *Store) RegisteredDevice(ctx context.Context, keyHash []byte) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT device_id FROM registration_keys WHERE key_hash = $1`, keyHash).Scan(&id)
	if errNoRows(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up registration key: %w", err)
	}
	return id, nil
}

// BindRegistrationKey implements provisioning.TxStore.
func (t *txn) BindRegistrationKey(ctx context.Context, keyHash []byte, deviceID string) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO registration_keys (key_hash, device_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		keyHash, deviceID, t.now)
	return err
}

// ApproveOperation implements provisioning.TxStore.
func (t *txn) ApproveOperation(ctx context.Context, a *provisioning.OperationApproval) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE provisioning_operations SET status = 'approved', device_id = $2, sealed = $3,
		expires_at = $4, decided_at = $5 WHERE id = $1`, a.ID, a.DeviceID, a.Sealed, a.DeliverBy, a.At)
	return err
}

// RegistrationKeyScheme implements provisioning.RegistrationStore.
func (s *Store) RegistrationKeyScheme(ctx context.Context) (string, error) {
	var scheme string
	if err := s.pool.QueryRow(ctx, `SELECT scheme FROM registration_key_scheme`).Scan(&scheme); err != nil {
		return "", fmt.Errorf("registration key scheme: %w", err)
	}
	return scheme, nil
}

// RekeyRegistrationKeys implements provisioning.RegistrationStore.
func (s *Store) RekeyRegistrationKeys(ctx context.Context, scheme string, rekey func(old []byte) []byte) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The scheme row is locked first: two hubs starting on one
		// database rekey one after the other, and the second finds the
		// new scheme.
		var current string
		if err := tx.QueryRow(ctx, `SELECT scheme FROM registration_key_scheme FOR UPDATE`).Scan(&current); err != nil {
			return err
		}
		if current == scheme {
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT key_hash FROM registration_keys`)
		if err != nil {
			return err
		}
		old, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return err
		}
		for _, h := range old {
			if _, err := tx.Exec(ctx, `UPDATE registration_keys SET key_hash = $1 WHERE key_hash = $2`, rekey(h), h); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE registration_key_scheme SET scheme = $1`, scheme)
		return err
	})
	if err != nil {
		return fmt.Errorf("rekey registration keys: %w", err)
	}
	return nil
}
