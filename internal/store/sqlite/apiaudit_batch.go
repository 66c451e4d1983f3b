package sqlite

import (
	"context"
	"fmt"

	"github.com/devicehub/devicehub/internal/access"
)

// AppendAudits stores API audit entries in one transaction (one fsync for
// all: the API groups the entries of concurrent requests).
func (s *Store) AppendAudits(ctx context.Context, es []access.AuditEntry) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit: nothing to roll back
	st, err := tx.PrepareContext(ctx, `INSERT INTO api_audit
		(at, token_id, token_name, role, method, path, operation_id, target, status, remote_addr, detail)
		VALUES (?,?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	defer st.Close()
	for _, e := range es {
		if _, err := st.ExecContext(ctx, e.Time.UnixMicro(), e.TokenID, e.TokenName, string(e.Role), e.Method, e.Path,
			e.OperationID, e.Target, e.Status, e.RemoteAddr, e.Detail); err != nil {
			return fmt.Errorf("append audit: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	return nil
}
