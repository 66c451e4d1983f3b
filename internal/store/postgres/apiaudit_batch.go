package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/access"
)

// AppendAudits stores API audit entries in one transaction and one round
// trip (the API groups the entries of concurrent requests).
func (s *Store) AppendAudits(ctx context.Context, es []access.AuditEntry) error {
	b := &pgx.Batch{}
	for _, e := range es {
		b.Queue(`INSERT INTO api_audit
			(at, token_id, token_name, role, method, path, operation_id, target, status, remote_addr, detail)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			e.Time, e.TokenID, e.TokenName, string(e.Role), e.Method, e.Path, e.OperationID, e.Target, e.Status, e.RemoteAddr, e.Detail)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit: nothing to roll back
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	return nil
}
