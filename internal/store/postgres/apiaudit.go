package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/devicehub/devicehub/internal/access"
)

// AppendAudit stores one API audit entry and returns its id.
func (s *Store) AppendAudit(ctx context.Context, e access.AuditEntry) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO api_audit
		(at, token_id, token_name, role, method, path, operation_id, target, status, remote_addr, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
		e.Time, e.TokenID, e.TokenName, string(e.Role), e.Method, e.Path, e.OperationID, e.Target, e.Status, e.RemoteAddr, e.Detail).Scan(&id)
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
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.TokenID != "" {
		where = append(where, `token_id = `+arg(q.TokenID))
	}
	if q.Target != "" {
		where = append(where, `target = `+arg(q.Target))
	}
	if q.Failed {
		where = append(where, `status >= 400`)
	}
	if !q.Since.IsZero() {
		where = append(where, `at >= `+arg(q.Since))
	}
	if q.Before > 0 {
		where = append(where, `id < `+arg(q.Before))
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	sqlq := `SELECT id, at, token_id, token_name, role, method, path, operation_id, target, status, remote_addr, detail FROM api_audit`
	if len(where) > 0 {
		sqlq += ` WHERE ` + strings.Join(where, ` AND `)
	}
	sqlq += ` ORDER BY id DESC LIMIT ` + arg(limit)
	rows, err := s.pool.Query(ctx, sqlq, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []access.AuditEntry
	for rows.Next() {
		var e access.AuditEntry
		var role string
		if err := rows.Scan(&e.ID, &e.Time, &e.TokenID, &e.TokenName, &role, &e.Method, &e.Path, &e.OperationID, &e.Target, &e.Status, &e.RemoteAddr, &e.Detail); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time, e.Role = e.Time.UTC(), access.Role(role)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}
