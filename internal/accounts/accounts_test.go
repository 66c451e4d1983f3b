package accounts

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/access"
)

// memStore is an in-memory Store for the service's own tests; the SQL
// stores pass the contract suite in internal/store/storetest.
type memStore struct {
	mu       sync.Mutex
	users    map[string]User
	sessions map[string]Session
}

func newMem() *memStore {
	return &memStore{users: map[string]User{}, sessions: map[string]Session{}}
}

func (m *memStore) CreateUser(_ context.Context, u User) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.users[u.Name]; ok {
		return ErrExists
	}
	m.users[u.Name] = u
	return nil
}

func (m *memStore) GetUser(_ context.Context, name string) (*User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[name]
	if !ok {
		return nil, ErrNotFound
	}
	return &u, nil
}

func (m *memStore) ListUsers(context.Context) ([]User, error) { return nil, nil }

func (m *memStore) DeleteUser(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.users[name]; !ok {
		return ErrNotFound
	}
	delete(m.users, name)
	for k, s := range m.sessions {
		if s.User == name {
			delete(m.sessions, k)
		}
	}
	return nil
}

func (m *memStore) CreateSession(_ context.Context, s Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sessions[string(s.Hash)] = s
	return nil
}

func (m *memStore) GetSession(_ context.Context, hash []byte) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[string(hash)]
	if !ok {
		return nil, ErrNotFound
	}
	return &s, nil
}

func (m *memStore) DeleteSession(_ context.Context, hash []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, string(hash))
	return nil
}

func (m *memStore) DeleteExpiredSessions(_ context.Context, t time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, s := range m.sessions {
		if s.ExpiresAt.Before(t) {
			delete(m.sessions, k)
			n++
		}
	}
	return n, nil
}

// fastParams keep the tests quick; the format and checks are the same.
var fastParams = Params{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

func newService(t *testing.T) (*Service, *memStore, *time.Time) {
	t.Helper()
	st := newMem()
	s := New(st, Options{Params: fastParams, SessionTTL: time.Hour, MaxFailures: 3, FailureWindow: time.Minute}, nil)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	return s, st, &now
}

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("correct horse", DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q: not the PHC argon2id form with the default parameters", h)
	}
	if strings.Contains(h, "correct horse") {
		t.Fatal("hash contains the password")
	}
	tests := []struct {
		name string
		pw   string
		want bool
	}{
		{"right", "correct horse", true},
		{"wrong", "correct horsf", false},
		{"empty", "", false},
		{"prefix", "correct", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := CheckPassword(h, tt.pw)
			if err != nil || ok != tt.want {
				t.Fatalf("CheckPassword(%q) = %v, %v; want %v", tt.pw, ok, err, tt.want)
			}
		})
	}
	h2, _ := HashPassword("correct horse", DefaultParams)
	if h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
}

func TestParseHashRefuses(t *testing.T) {
	tests := []struct{ name, hash string }{
		{"empty", ""},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuv"},
		{"argon2i", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5"},
		{"version", "$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5"},
		{"missing param", "$argon2id$v=19$m=64,t=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5"},
		{"zero time", "$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5"},
		{"huge memory", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5"},
		{"bad salt", "$argon2id$v=19$m=64,t=1,p=1$!!$a2V5a2V5a2V5a2V5a2V5a2V5"},
		{"short key", "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5"},
		{"unknown param", "$argon2id$v=19$m=64,t=1,x=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, _, err := ParseHash(tt.hash); !errors.Is(err, errHash) {
				t.Fatalf("ParseHash(%q) = %v, want errHash", tt.hash, err)
			}
			if ok, err := CheckPassword(tt.hash, "x"); ok || err == nil {
				t.Fatalf("CheckPassword on %q: %v, %v", tt.hash, ok, err)
			}
		})
	}
}

func FuzzParseHash(f *testing.F) {
	good, _ := HashPassword("pw", fastParams)
	for _, s := range []string{good, "", "$argon2id$", "$argon2id$v=19$m=1,t=1,p=1$$", "$argon2id$v=19$m=,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := ParseHash(s)
		if err != nil {
			return
		}
		if p.Memory == 0 || p.Memory > maxMemory || p.Time == 0 || p.Time > 100 || p.Threads == 0 || len(salt) < 8 || len(key) < 16 {
			t.Fatalf("ParseHash(%q) accepted bad parameters %+v", s, p)
		}
	})
}

func TestAddUserValidates(t *testing.T) {
	s, _, _ := newService(t)
	ctx := context.Background()
	tests := []struct {
		name, user, pw string
		role           access.Role
	}{
		{"bad name", "al ice", "long enough", access.Admin},
		{"empty name", "", "long enough", access.Admin},
		{"short password", "alice", "short", access.Admin},
		{"long password", "alice", strings.Repeat("x", MaxPasswordLen+1), access.Admin},
		{"bad role", "alice", "long enough", "root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.AddUser(ctx, tt.user, tt.pw, tt.role); !errors.Is(err, ErrInvalid) {
				t.Fatalf("AddUser: got %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := s.AddUser(ctx, "alice", "long enough", access.Operator); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddUser(ctx, "alice", "long enough", access.Operator); !errors.Is(err, ErrExists) {
		t.Fatalf("second AddUser: %v, want ErrExists", err)
	}
}

func TestLoginSessionLogout(t *testing.T) {
	s, st, now := newService(t)
	ctx := context.Background()
	if _, err := s.AddUser(ctx, "alice", "long enough", access.Operator); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Login(ctx, "alice", "wrong password", "10.0.0.1:1"); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, _, err := s.Login(ctx, "bob", "long enough", "10.0.0.1:1"); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("unknown user: %v", err)
	}
	secret, sess, u, err := s.Login(ctx, "alice", "long enough", "10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if u.Role != access.Operator || !sess.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("session %+v of %+v", sess, u)
	}
	for k := range st.sessions {
		if strings.Contains(k, secret) {
			t.Fatal("the session secret is stored, not its hash")
		}
	}
	if got, _, err := s.Authenticate(ctx, secret); err != nil || got.Name != "alice" {
		t.Fatalf("Authenticate: %+v, %v", got, err)
	}
	if _, _, err := s.Authenticate(ctx, secret+"x"); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("wrong secret: %v", err)
	}
	// CSRF tokens are bound to the session.
	tok := CSRFToken(secret)
	if !CheckCSRF(secret, tok) || CheckCSRF(secret, "") || CheckCSRF("other", tok) || CheckCSRF("", "") {
		t.Fatal("CSRF token checks")
	}
	// Expiry.
	*now = now.Add(time.Hour)
	if _, _, err := s.Authenticate(ctx, secret); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("expired session: %v", err)
	}
	*now = now.Add(-time.Hour)
	if err := s.Logout(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Authenticate(ctx, secret); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("after logout: %v", err)
	}
	// Deleting a user ends its sessions.
	secret, _, _, err = s.Login(ctx, "alice", "long enough", "10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Authenticate(ctx, secret); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("session of a deleted user: %v", err)
	}
}

func TestLoginThrottle(t *testing.T) {
	s, _, now := newService(t)
	ctx := context.Background()
	if _, err := s.AddUser(ctx, "alice", "long enough", access.Viewer); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, _, _, err := s.Login(ctx, "alice", "guess", "10.0.0.1:1"); !errors.Is(err, ErrBadLogin) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	// Blocked now, even with the right password, from any address.
	if _, _, _, err := s.Login(ctx, "alice", "long enough", "10.0.0.9:1"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("after 3 failures: %v, want ErrThrottled", err)
	}
	// The address is blocked for other names too.
	if _, _, _, err := s.Login(ctx, "mallory", "x", "10.0.0.1:2"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("same address, other name: %v, want ErrThrottled", err)
	}
	*now = now.Add(time.Minute)
	if _, _, _, err := s.Login(ctx, "alice", "long enough", "10.0.0.1:1"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}
