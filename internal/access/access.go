// Package access holds the operators' bearer tokens and their roles.
// Tokens are random secrets; only their SHA-256 hashes are stored.
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

// Store keeps tokens.
type Store interface {
	CreateToken(ctx context.Context, t Token) error
	TokenByHash(ctx context.Context, hash []byte) (*Token, error) // ErrNotFound
	ListTokens(ctx context.Context) ([]Token, error)
	RevokeToken(ctx context.Context, id string, at time.Time) error // ErrNotFound
}
