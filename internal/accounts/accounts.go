// Package accounts holds the dashboard's operator accounts: people who sign
// in with a name and a password (hashed with argon2id), their sessions
// (random secrets, only their SHA-256 hashes stored, expiring), the CSRF
// token bound to each session, and login throttling. Roles are the API's
// (access.Role): a signed-in user may do exactly what a token of the same
// role may. API tokens stay for machines.
//
// Users and sessions are plain rows written directly through Store: they
// are not device state and no signal describes them.
package accounts

import (
	"context"
	"errors"
	"regexp"
	"time"

	"github.com/devicehub/devicehub/internal/access"
)

// Errors of the accounts package.
var (
	// ErrNotFound: no such user or session.
	ErrNotFound = errors.New("not found")
	// ErrExists: a user with this name exists already.
	ErrExists = errors.New("user already exists")
	// ErrInvalid: a name, password or role is not acceptable; the error
	// says which.
	ErrInvalid = errors.New("invalid user")
	// ErrBadLogin: the name or the password is wrong (which one is not
	// said), or the session is unknown or expired.
	ErrBadLogin = errors.New("wrong name or password")
	// ErrThrottled: too many failed sign-ins for this name or address;
	// wait and try again.
	ErrThrottled = errors.New("too many failed sign-ins, try again later")
)

// User is an operator account.
type User struct {
	Name string      `json:"name"`
	Role access.Role `json:"role"`
	// PasswordHash is the argon2id hash in its PHC string form.
	PasswordHash string    `json:"-"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Session is a signed-in browser. Only the SHA-256 of its secret is stored.
type Session struct {
	Hash       []byte
	User       string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	RemoteAddr string
}

// Store keeps users and sessions.
type Store interface {
	CreateUser(ctx context.Context, u User) error                  // ErrExists
	GetUser(ctx context.Context, name string) (*User, error)       // ErrNotFound
	ListUsers(ctx context.Context) ([]User, error)                 // by name
	DeleteUser(ctx context.Context, name string) error             // ErrNotFound; removes the user's sessions too
	CreateSession(ctx context.Context, s Session) error            //
	GetSession(ctx context.Context, hash []byte) (*Session, error) // ErrNotFound
	DeleteSession(ctx context.Context, hash []byte) error          // no error when absent
	// DeleteExpiredSessions removes the sessions that expired before t
	// and returns how many.
	DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error)
}

// NamePattern is what a user name must match.
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)

// MinPasswordLen is the shortest password accepted.
const MinPasswordLen = 8

// MaxPasswordLen bounds the work one sign-in can cause.
const MaxPasswordLen = 1024
