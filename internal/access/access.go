// Package access holds the operators' bearer tokens, their roles, and the
// API audit trail of what each token changed. Tokens are random secrets;
// only their SHA-256 hashes are stored.
package access

import (
	"context"
	"errors"
	"time"
)

// Role is what a token may do.
type Role string

// The roles, from most to least powerful.
const (
	Admin    Role = "admin"
	Operator Role = "operator"
	Viewer   Role = "viewer"
)

// Errors of the access package.
var (
	ErrNotFound     = errors.New("token not found")
	ErrUnauthorized = errors.New("invalid or revoked token")
	ErrForbidden    = errors.New("role may not do this")
)

// Token is a stored operator token.
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      Role       `json:"role"`
	Hash      []byte     `json:"-"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Store keeps tokens and the API audit trail.
type Store interface {
	CreateToken(ctx context.Context, t Token) error
	TokenByHash(ctx context.Context, hash []byte) (*Token, error) // ErrNotFound
	ListTokens(ctx context.Context) ([]Token, error)
	RevokeToken(ctx context.Context, id string, at time.Time) error // ErrNotFound
	AuditStore
}

// AuditEntry is one change asked of the API, allowed or refused: who
// (the token, empty when the request had no valid token), what (the method,
// path, operation and its target), when, and the HTTP status it got.
type AuditEntry struct {
	ID          int64     `json:"id"`
	Time        time.Time `json:"time"`
	TokenID     string    `json:"token_id,omitempty"`
	TokenName   string    `json:"token_name,omitempty"`
	Role        Role      `json:"role,omitempty"`
	Method      string    `json:"method"`
	Path        string    `json:"path"`
	OperationID string    `json:"operation_id,omitempty"`
	Target      string    `json:"target,omitempty"` // the id of what was changed, if any
	Status      int       `json:"status"`
	RemoteAddr  string    `json:"remote_addr,omitempty"`
	Detail      string    `json:"detail,omitempty"` // what the call changed, if the handler said
}

// AuditQuery selects audit entries, newest first.
type AuditQuery struct {
	TokenID string // "": every token
	Target  string // "": every target
	Failed  bool   // only entries with a status of 400 or more
	Since   time.Time
	Before  int64 // cursor: entries with a smaller id; 0 for the newest
	Limit   int   // 0: 100
}

// AuditStore keeps the API audit trail. Entries are only ever appended.
type AuditStore interface {
	// AppendAudit stores e and returns its id (e.ID is ignored).
	AppendAudit(ctx context.Context, e AuditEntry) (int64, error)
	ListAudit(ctx context.Context, q AuditQuery) ([]AuditEntry, error)
}
