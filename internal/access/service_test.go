package access

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is an in-memory Store.
type memStore struct {
	mu     sync.Mutex
	tokens []Token
	err    error
}

func (m *memStore) CreateToken(_ context.Context, t Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.tokens = append(m.tokens, t)
	return nil
}

func (m *memStore) TokenByHash(_ context.Context, hash []byte) (*Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	for _, t := range m.tokens {
		if bytes.Equal(t.Hash, hash) {
			return &t, nil
		}
	}
	return nil, ErrNotFound
}

func (m *memStore) ListTokens(context.Context) ([]Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Token(nil), m.tokens...), nil
}

func (m *memStore) RevokeToken(_ context.Context, id string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.tokens {
		if m.tokens[i].ID == id {
			m.tokens[i].RevokedAt = &at
			return nil
		}
	}
	return ErrNotFound
}

func (m *memStore) AppendAudit(context.Context, AuditEntry) (int64, error) { return 0, nil }

func (m *memStore) ListAudit(context.Context, AuditQuery) ([]AuditEntry, error) { return nil, nil }

func TestPermits(t *testing.T) {
	tests := []struct {
		name string
		role Role
		need Role
		want bool
	}{
		{"admin does admin", Admin, Admin, true},
		{"admin operates", Admin, Operator, true},
		{"admin views", Admin, Viewer, true},
		{"operator may not admin", Operator, Admin, false},
		{"operator operates", Operator, Operator, true},
		{"operator views", Operator, Viewer, true},
		{"viewer may not admin", Viewer, Admin, false},
		{"viewer may not operate", Viewer, Operator, false},
		{"viewer views", Viewer, Viewer, true},
		{"unknown role views nothing", "root", Viewer, false},
		{"empty role", "", Viewer, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.role.Permits(tt.need); got != tt.want {
				t.Errorf("%q.Permits(%q) = %v", tt.role, tt.need, got)
			}
		})
	}
}

func TestGet(t *testing.T) {
	ctx := context.Background()
	s := NewService(&memStore{})
	_, tok, err := s.Create(ctx, "ci", Viewer)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, tok.ID)
	if err != nil || got.Name != "ci" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := s.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get missing: %v", err)
	}
}

func TestCreateVerify(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	s := NewService(st)
	secret, tok, err := s.Create(ctx, "ci", Operator)
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != 43 { // 32 bytes, base64url without padding
		t.Errorf("secret %q has length %d", secret, len(secret))
	}
	if bytes.Contains(st.tokens[0].Hash, []byte(secret)) || len(st.tokens[0].Hash) != 32 {
		t.Errorf("stored hash %x", st.tokens[0].Hash)
	}
	got, err := s.Verify(ctx, secret)
	if err != nil || got.ID != tok.ID || got.Role != Operator {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "nope", secret + "x"} {
		if _, err := s.Verify(ctx, bad); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("Verify(%q) = %v, want ErrUnauthorized", bad, err)
		}
	}
	if err := s.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, secret); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("revoked token: %v", err)
	}
	if err := s.Revoke(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke missing: %v", err)
	}
}

func TestCreateInvalid(t *testing.T) {
	s := NewService(&memStore{})
	tests := []struct {
		name  string
		tname string
		role  Role
	}{
		{"empty name", " ", Admin},
		{"unknown role", "x", "root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.Create(context.Background(), tt.tname, tt.role); !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

func TestVerifyStoreError(t *testing.T) {
	boom := errors.New("boom")
	s := NewService(&memStore{err: boom})
	if _, err := s.Verify(context.Background(), "x"); !errors.Is(err, boom) || errors.Is(err, ErrUnauthorized) {
		t.Errorf("err = %v", err)
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		role  Role
		write bool
		want  bool
	}{
		{Admin, false, true}, {Admin, true, true},
		{Operator, false, true}, {Operator, true, true},
		{Viewer, false, true}, {Viewer, true, false},
		{"", false, false}, {"root", true, false},
	}
	for _, tt := range tests {
		if got := Allowed(tt.role, tt.write); got != tt.want {
			t.Errorf("Allowed(%q, %v) = %v", tt.role, tt.write, got)
		}
	}
}

func TestEnsureAdminToken(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	s := NewService(st)
	path := filepath.Join(t.TempDir(), "data", "admin.token")
	b, err := s.EnsureAdminToken(ctx, path)
	if err != nil || b.Secret == "" || b.Replaced || b.Existing != nil {
		t.Fatalf("first call: %+v %v", b, err)
	}
	secret := b.Secret
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if strings.TrimSpace(string(data)) != secret {
		t.Errorf("file holds %q, want %q", data, secret)
	}
	tok, err := s.Verify(ctx, secret)
	if err != nil || tok.Role != Admin || tok.Name != "admin" {
		t.Fatalf("Verify = %+v, %v", tok, err)
	}
	if b, err := s.EnsureAdminToken(ctx, path); err != nil || b != (AdminBootstrap{}) {
		t.Errorf("second call: %+v %v", b, err)
	}
	if len(st.tokens) != 1 {
		t.Errorf("%d tokens, want 1", len(st.tokens))
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}

	// Another data directory on the same store: nothing is created, and
	// the existing token is named.
	other := filepath.Join(t.TempDir(), "admin.token")
	b, err = s.EnsureAdminToken(ctx, other)
	if err != nil || b.Secret != "" || b.Existing == nil || b.Existing.ID != tok.ID {
		t.Fatalf("other directory: %+v %v", b, err)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("other directory got a file: %v", err)
	}

	// A file from another database (or a revoked token), and no live admin
	// token: a new one replaces it.
	if err := s.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	b, err = s.EnsureAdminToken(ctx, path)
	if err != nil || b.Secret == "" || b.Secret == secret || !b.Replaced {
		t.Fatalf("stale file: %+v %v", b, err)
	}
	data, _ = os.ReadFile(path)
	if strings.TrimSpace(string(data)) != b.Secret {
		t.Errorf("file holds %q, want the new secret", data)
	}
}

// raceStore creates another hub's admin token just before the first
// CreateToken, as a second hub starting at the same instant would.
type raceStore struct {
	*memStore
	raced bool
}

func (r *raceStore) CreateToken(ctx context.Context, t Token) error {
	if !r.raced {
		r.raced = true
		other := Token{ID: "0000other", Name: "admin", Role: Admin, Hash: []byte("other"), CreatedAt: t.CreatedAt.Add(-time.Millisecond)}
		if err := r.memStore.CreateToken(ctx, other); err != nil {
			return err
		}
	}
	return r.memStore.CreateToken(ctx, t)
}

func TestEnsureAdminTokenRace(t *testing.T) {
	ctx := context.Background()
	st := &raceStore{memStore: &memStore{}}
	s := NewService(st)
	path := filepath.Join(t.TempDir(), "admin.token")
	b, err := s.EnsureAdminToken(ctx, path)
	if err != nil || b.Secret != "" || b.Existing == nil || b.Existing.ID != "0000other" {
		t.Fatalf("lost the race: %+v %v", b, err)
	}
	live := 0
	for _, tk := range st.tokens {
		if tk.RevokedAt == nil {
			live++
		}
	}
	if live != 1 {
		t.Errorf("%d live admin tokens, want 1", live)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the loser wrote the file: %v", err)
	}
}
