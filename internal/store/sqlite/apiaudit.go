package sqlite

import (
	"context"
	"fmt"
	"strings"

	"github.com/devicehub/devicehub/internal/access"
)

// AppendAudit stores one API audit entry and returns its id.
func (s *Store) AppendAudit(ctx context.Context, e access.AuditEntry) (int64, error) {
	res, err := s.w.ExecContext(ctx, `INSERT INTO api_audit
		(at, token_id, token_name, role, method, path, operation_id, target, status, remote_addr, detail)
		VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
		e.Time.UnixMicro(), e.TokenID, e.TokenName, string(e.Role), e.Method, e.Path, e.OperationID, e.Target, e.Status, e.RemoteAddr, e.Detail)
	if err != nil {
		return 0, fmt.Errorf("append audit: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("append audit: %w", err)
	}
	return id, nil
}

// ListAudit lists API audit entries newest first.
func (s *Store) ListAudit(ctx context.Context, q access.AuditQuery) ([]access.AuditEntry, error) {
	var (
		where []string
		args  []any
	)
	if q.TokenID != "" {
		where = append(where, `token_id = ?`)
		args = append(args, q.TokenID)
	}
	if q.Target != "" {
		where = append(where, `target = ?`)
		args = append(args, q.Target)
	}
	if q.Failed {
		where = append(where, `status >= 400`)
	}
	if !q.Since.IsZero() {
		where = append(where, `at >= ?`)
		args = append(args, q.Since.UnixMicro())
	}
	if q.Before > 0 {
		where = append(where, `id < ?`)
		args = append(args, q.Before)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	sqlq := `SELECT id, at, token_id, token_name, role, method, path, operation_id, target, status, remote_addr, detail FROM api_audit`
	if len(where) > 0 {
		sqlq += ` WHERE ` + strings.Join(where, ` AND `)
	}
	sqlq += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, sqlq, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []access.AuditEntry
	for rows.Next() {
		var e access.AuditEntry
		var at int64
		var role string
		if err := rows.Scan(&e.ID, &at, &e.TokenID, &e.TokenName, &role, &e.Method, &e.Path, &e.OperationID, &e.Target, &e.Status, &e.RemoteAddr, &e.Detail); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time, e.Role = micros(at), access.Role(role)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}
