package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/access"
)

func (a *API) registerAudit() {
	register(a, permAdmin, huma.Operation{
		OperationID: "listAudit", Method: http.MethodGet, Path: "/api/v1/audit", Tags: []string{"audit"},
		Summary: "List the API audit trail",
		Description: "The audit trail: every change operators asked of the API (any method but GET), allowed or refused, newest first: " +
			"who (token), what (method, path, operation, target), when, and the answer's status. " +
			"Pass a page's next as cursor for the next page. What devices sent is their message log, /api/v1/devices/{id}/messages.",
	}, a.listAudit)
}

// AuditInput filters and pages GET /api/v1/audit.
type AuditInput struct {
	TokenID string `query:"token_id" doc:"Only changes asked with this token."`
	Target  string `query:"target" doc:"Only changes of this target (a device id, a token id)."`
	Failed  bool   `query:"failed" doc:"Only refused or failed changes (status 400 or more)."`
	Since   string `query:"since" doc:"Only changes at or after this time: RFC 3339 or Unix milliseconds."`
	Cursor  string `query:"cursor" doc:"The previous page's next."`
	Limit   int    `query:"limit" minimum:"1" maximum:"1000" doc:"Page size; default 100."`
}

// AuditEntry is one change asked of the API.
type AuditEntry struct {
	ID          int64     `json:"id"`
	Time        time.Time `json:"time"`
	TokenID     string    `json:"token_id,omitempty" doc:"The token that asked; absent when it had no valid token."`
	TokenName   string    `json:"token_name,omitempty"`
	Role        string    `json:"role,omitempty"`
	Method      string    `json:"method" example:"POST"`
	Path        string    `json:"path" example:"/api/v1/devices"`
	OperationID string    `json:"operation_id,omitempty" example:"provisionDevice"`
	Target      string    `json:"target,omitempty" doc:"What was changed: a device id, a token id." example:"ws-1"`
	Status      int       `json:"status" doc:"The HTTP status of the answer." example:"201"`
	RemoteAddr  string    `json:"remote_addr,omitempty"`
	Detail      string    `json:"detail,omitempty" doc:"What the call changed, when the operation says (a configuration change's old and new checksums)." example:"checksum 3a7b… -> 9f1c…"`
}

// AuditList is the answer of GET /api/v1/audit.
type AuditList struct {
	Entries []AuditEntry `json:"entries"`
	Next    string       `json:"next,omitempty" doc:"The cursor of the next page; absent on the last page."`
}

type auditOutput struct{ Body AuditList }

func (a *API) listAudit(ctx context.Context, in *AuditInput) (*auditOutput, error) {
	if a.deps.Audit == nil {
		return nil, errNotImplemented
	}
	limit := in.Limit
	if limit == 0 {
		limit = defaultLimit
	}
	q := access.AuditQuery{TokenID: in.TokenID, Target: in.Target, Failed: in.Failed, Limit: limit + 1}
	var err error
	if q.Since, err = timeParam("since", in.Since); err != nil {
		return nil, err
	}
	if in.Cursor != "" {
		if q.Before, err = strconv.ParseInt(in.Cursor, 10, 64); err != nil || q.Before < 1 {
			return nil, &Error{Status: http.StatusBadRequest, Code: "bad_cursor", Message: "bad cursor", Field: "cursor"}
		}
	}
	entries, err := a.deps.Audit.ListAudit(ctx, q)
	if err != nil {
		return nil, err
	}
	out := AuditList{Entries: make([]AuditEntry, 0, len(entries))}
	if len(entries) > limit {
		entries = entries[:limit]
		out.Next = strconv.FormatInt(entries[limit-1].ID, 10)
	}
	for _, e := range entries {
		out.Entries = append(out.Entries, AuditEntry{
			ID: e.ID, Time: e.Time, TokenID: e.TokenID, TokenName: e.TokenName, Role: string(e.Role),
			Method: e.Method, Path: e.Path, OperationID: e.OperationID, Target: e.Target, Status: e.Status, RemoteAddr: e.RemoteAddr, Detail: e.Detail,
		})
	}
	return &auditOutput{Body: out}, nil
}
