package access

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrInvalid is returned for a token request with no name or an unknown role.
var ErrInvalid = errors.New("invalid token request")

// Service creates and verifies operator tokens.
type Service struct {
	store Store
	now   func() time.Time
}

// NewService returns a token service over store.
func NewService(store Store) *Service {
	return &Service{store: store, now: func() time.Time { return time.Now().UTC() }}
}

// ValidRole reports whether r is one of the roles.
func ValidRole(r Role) bool {
	return r == Admin || r == Operator || r == Viewer
}

// Rank orders the roles: viewer 1, operator 2, admin 3, anything else 0.
func (r Role) Rank() int {
	switch r {
	case Admin:
		return 3
	case Operator:
		return 2
	case Viewer:
		return 1
	}
	return 0
}

// Permits reports whether a token of role r may do what needs at least
// role need: admin ⊇ operator ⊇ viewer. An unknown role permits nothing.
func (r Role) Permits(need Role) bool {
	return r.Rank() > 0 && r.Rank() >= need.Rank()
}

// Allowed reports whether role may read (write false) or change (write
// true) what the API serves: every role may read; operators and admins may
// write.
func Allowed(role Role, write bool) bool {
	switch role {
	case Admin, Operator:
		return true
	case Viewer:
		return !write
	}
	return false
}

// Create makes a new token and returns its secret: the only time the
// secret is seen, since only its SHA-256 hash is stored.
func (s *Service) Create(ctx context.Context, name string, role Role) (string, Token, error) {
	if strings.TrimSpace(name) == "" {
		return "", Token{}, fmt.Errorf("%w: name must not be empty", ErrInvalid)
	}
	if !ValidRole(role) {
		return "", Token{}, fmt.Errorf("%w: unknown role %q (admin, operator or viewer)", ErrInvalid, role)
	}
	secret, err := randomString(32)
	if err != nil {
		return "", Token{}, err
	}
	id, err := randomHex(8)
	if err != nil {
		return "", Token{}, err
	}
	sum := sha256.Sum256([]byte(secret))
	t := Token{ID: id, Name: name, Role: role, Hash: sum[:], CreatedAt: s.now()}
	if err := s.store.CreateToken(ctx, t); err != nil {
		return "", Token{}, fmt.Errorf("create token %s: %w", name, err)
	}
	return secret, t, nil
}

// Verify returns the token whose secret is bearer. Unknown and revoked
// tokens are ErrUnauthorized.
func (s *Service) Verify(ctx context.Context, bearer string) (*Token, error) {
	if bearer == "" {
		return nil, ErrUnauthorized
	}
	sum := sha256.Sum256([]byte(bearer))
	t, err := s.store.TokenByHash(ctx, sum[:])
	if errors.Is(err, ErrNotFound) {
		return nil, ErrUnauthorized
	}
	if err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	// The store found the token by its hash; compare again in constant
	// time so that a lookup shortcut in a backend cannot leak by timing.
	if subtle.ConstantTimeCompare(sum[:], t.Hash) != 1 || t.RevokedAt != nil {
		return nil, ErrUnauthorized
	}
	return t, nil
}

// List returns every token (hashes included; callers must not show them).
func (s *Service) List(ctx context.Context) ([]Token, error) {
	return s.store.ListTokens(ctx)
}

// Get returns the token with the given id (ErrNotFound).
func (s *Service) Get(ctx context.Context, id string) (*Token, error) {
	toks, err := s.store.ListTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("get token %s: %w", id, err)
	}
	for i := range toks {
		if toks[i].ID == id {
			return &toks[i], nil
		}
	}
	return nil, fmt.Errorf("token %s: %w", id, ErrNotFound)
}

// Revoke revokes the token with the given id: it stops working at once.
func (s *Service) Revoke(ctx context.Context, id string) error {
	if err := s.store.RevokeToken(ctx, id, s.now()); err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}

// AdminBootstrap is what EnsureAdminToken found or did.
type AdminBootstrap struct {
	// Secret is the new admin token's secret when one was created (the
	// only time it is seen), "" otherwise.
	Secret string
	// Replaced: the file held a token this store does not know (another
	// database, or a revoked token), and now holds the new one.
	Replaced bool
	// Existing is the store's live admin token when none was created
	// because the file is missing or stale and another hub (another data
	// directory on the same database) made one first; nil otherwise.
	Existing *Token
}

// EnsureAdminToken makes sure that the hub has an admin token, and that the
// file at path holds it for the CLI on this machine. The store decides, not
// the file: several hubs with their own data directories may share one
// database (PostgreSQL), and they must agree on one admin token.
//
//   - The file holds a live token of the store: nothing to do.
//   - The store has a live admin token, but the file is missing or holds
//     something else: nothing is created; Existing says which token the
//     operator should copy here.
//   - The store has no live admin token: an admin token named "admin" is
//     created and its secret written to path (mode 0600, through a
//     temporary file and a rename, so that a crash never leaves half a
//     token).
//
// Two hubs starting at once on an empty database may both create one; the
// one created later revokes itself, so that one admin token remains (a
// race of two creations within a clock tick of each other is not covered).
func (s *Service) EnsureAdminToken(ctx context.Context, path string) (AdminBootstrap, error) {
	stale := false
	b, err := os.ReadFile(path)
	switch {
	case err == nil && strings.TrimSpace(string(b)) != "":
		if _, verr := s.Verify(ctx, strings.TrimSpace(string(b))); verr == nil {
			return AdminBootstrap{}, nil
		} else if !errors.Is(verr, ErrUnauthorized) {
			return AdminBootstrap{}, fmt.Errorf("check admin token file %s: %w", path, verr)
		}
		stale = true
	case err == nil, errors.Is(err, os.ErrNotExist):
	default:
		return AdminBootstrap{}, fmt.Errorf("admin token file: %w", err)
	}
	if first, err := s.firstAdmin(ctx); err != nil {
		return AdminBootstrap{}, err
	} else if first != nil {
		return AdminBootstrap{Existing: first}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return AdminBootstrap{}, fmt.Errorf("admin token dir: %w", err)
	}
	secret, mine, err := s.Create(ctx, "admin", Admin)
	if err != nil {
		return AdminBootstrap{}, err
	}
	// Another hub on the same database may have created one meanwhile:
	// the first created stays, the others revoke themselves.
	first, err := s.firstAdmin(ctx)
	if err != nil {
		return AdminBootstrap{}, err
	}
	if first != nil && first.ID != mine.ID {
		if err := s.Revoke(ctx, mine.ID); err != nil {
			return AdminBootstrap{}, err
		}
		return AdminBootstrap{Existing: first}, nil
	}
	if err := writeFileAtomic(path, []byte(secret+"\n")); err != nil {
		return AdminBootstrap{}, fmt.Errorf("admin token file: %w", err)
	}
	return AdminBootstrap{Secret: secret, Replaced: stale}, nil
}

// firstAdmin returns the live admin token created first (ties broken by
// id), nil if there is none.
func (s *Service) firstAdmin(ctx context.Context) (*Token, error) {
	toks, err := s.store.ListTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	var first *Token
	for i := range toks {
		t := &toks[i]
		if t.Role != Admin || t.RevokedAt != nil {
			continue
		}
		if first == nil || t.CreatedAt.Before(first.CreatedAt) || (t.CreatedAt.Equal(first.CreatedAt) && t.ID < first.ID) {
			first = t
		}
	}
	return first, nil
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
