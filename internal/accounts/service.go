package accounts

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/throttle"
)

// Options tune the service. Zero values take the defaults.
type Options struct {
	// SessionTTL is how long a session lasts from sign-in; default 12h.
	SessionTTL time.Duration
	// MaxFailures failed sign-ins of one name or one address within
	// FailureWindow block further attempts of it until the window ends;
	// defaults 5 and 15 minutes.
	MaxFailures   int
	FailureWindow time.Duration
	// Params are argon2id's parameters for new hashes; default DefaultParams.
	Params Params
}

// Service adds users, signs them in and out, and authenticates sessions.
type Service struct {
	store    Store
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	throttle *throttle.Failures
	// dummy is a hash checked when the user does not exist, so that a
	// wrong name costs as long as a wrong password.
	dummy string
}

// New returns a service over store.
func New(store Store, opts Options, log *slog.Logger) *Service {
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 12 * time.Hour
	}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = 5
	}
	if opts.FailureWindow <= 0 {
		opts.FailureWindow = 15 * time.Minute
	}
	if opts.Params == (Params{}) {
		opts.Params = DefaultParams
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dummy, _ := HashPassword("not a password", opts.Params)
	return &Service{
		store: store, opts: opts, log: log,
		now:      func() time.Time { return time.Now().UTC() },
		throttle: throttle.NewFailures(opts.MaxFailures, opts.FailureWindow, 100_000),
		dummy:    dummy,
	}
}

// SessionTTL is how long a new session lasts.
func (s *Service) SessionTTL() time.Duration { return s.opts.SessionTTL }

// ValidateUser checks a new user's name, password and role.
func ValidateUser(name, password string, role access.Role) error {
	if !NamePattern.MatchString(name) {
		return fmt.Errorf("%w: name %q must match %s", ErrInvalid, name, NamePattern)
	}
	if len(password) < MinPasswordLen {
		return fmt.Errorf("%w: password must have at least %d characters", ErrInvalid, MinPasswordLen)
	}
	if len(password) > MaxPasswordLen {
		return fmt.Errorf("%w: password must have at most %d characters", ErrInvalid, MaxPasswordLen)
	}
	if !access.ValidRole(role) {
		return fmt.Errorf("%w: unknown role %q (admin, operator or viewer)", ErrInvalid, role)
	}
	return nil
}

// AddUser creates a user with a password and a role.
func (s *Service) AddUser(ctx context.Context, name, password string, role access.Role) (*User, error) {
	if err := ValidateUser(name, password, role); err != nil {
		return nil, err
	}
	hash, err := HashPassword(password, s.opts.Params)
	if err != nil {
		return nil, err
	}
	now := s.now()
	u := User{Name: name, Role: role, PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
	if err := s.store.CreateUser(ctx, u); err != nil {
		return nil, fmt.Errorf("add user %s: %w", name, err)
	}
	s.log.Info("user added", "user", name, "role", role)
	return &u, nil
}

// ListUsers lists the users by name.
func (s *Service) ListUsers(ctx context.Context) ([]User, error) { return s.store.ListUsers(ctx) }

// DeleteUser removes a user and signs out its sessions.
func (s *Service) DeleteUser(ctx context.Context, name string) error {
	if err := s.store.DeleteUser(ctx, name); err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	s.log.Info("user deleted", "user", name)
	return nil
}

// Login checks name and password and starts a session. It returns the
// session's secret, the value of the browser's cookie. Failed attempts
// are counted per name and per remote address (the address without its
// port); after too many, Login answers ErrThrottled without checking.
func (s *Service) Login(ctx context.Context, name, password, remoteAddr string) (string, *Session, *User, error) {
	now := s.now()
	ip := hostOf(remoteAddr)
	nameKey, ipKey := "u:"+strings.ToLower(name), "a:"+ip
	for _, k := range []string{nameKey, ipKey} {
		if b, until := s.throttle.Blocked(k, now); b {
			s.log.Warn("sign-in throttled", "user", name, "remote", ip, "until", until)
			return "", nil, nil, fmt.Errorf("%w (until %s)", ErrThrottled, until.Format(time.RFC3339))
		}
	}
	fail := func() (string, *Session, *User, error) {
		s.throttle.Fail(nameKey, now)
		s.throttle.Fail(ipKey, now)
		s.log.Info("sign-in failed", "user", name, "remote", ip)
		return "", nil, nil, ErrBadLogin
	}
	if len(password) > MaxPasswordLen || !NamePattern.MatchString(name) {
		return fail()
	}
	u, err := s.store.GetUser(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		_, _ = CheckPassword(s.dummy, password)
		return fail()
	case err != nil:
		return "", nil, nil, fmt.Errorf("sign in %s: %w", name, err)
	}
	ok, err := CheckPassword(u.PasswordHash, password)
	if err != nil {
		return "", nil, nil, fmt.Errorf("sign in %s: %w", name, err)
	}
	if !ok {
		return fail()
	}
	s.throttle.Reset(nameKey)
	secret, err := randomSecret()
	if err != nil {
		return "", nil, nil, err
	}
	sess := Session{Hash: hashSecret(secret), User: u.Name, CreatedAt: now, ExpiresAt: now.Add(s.opts.SessionTTL), RemoteAddr: remoteAddr}
	if err := s.store.CreateSession(ctx, sess); err != nil {
		return "", nil, nil, fmt.Errorf("sign in %s: %w", name, err)
	}
	// Expired sessions go at sign-in: no background loop is needed.
	if n, err := s.store.DeleteExpiredSessions(ctx, now); err != nil {
		s.log.Warn("delete expired sessions", "err", err)
	} else if n > 0 {
		s.log.Debug("expired sessions deleted", "sessions", n)
	}
	s.log.Info("signed in", "user", u.Name, "remote", ip)
	return secret, &sess, u, nil
}

// Authenticate returns the user and session of a session secret, or
// ErrBadLogin when it is unknown or expired.
func (s *Service) Authenticate(ctx context.Context, secret string) (*User, *Session, error) {
	if secret == "" || len(secret) > 128 {
		return nil, nil, ErrBadLogin
	}
	sess, err := s.store.GetSession(ctx, hashSecret(secret))
	if errors.Is(err, ErrNotFound) {
		return nil, nil, ErrBadLogin
	}
	if err != nil {
		return nil, nil, fmt.Errorf("authenticate session: %w", err)
	}
	if !s.now().Before(sess.ExpiresAt) {
		return nil, nil, ErrBadLogin
	}
	u, err := s.store.GetUser(ctx, sess.User)
	if errors.Is(err, ErrNotFound) {
		return nil, nil, ErrBadLogin
	}
	if err != nil {
		return nil, nil, fmt.Errorf("authenticate session: %w", err)
	}
	return u, sess, nil
}

// Logout ends the session of secret; an unknown one is no error.
func (s *Service) Logout(ctx context.Context, secret string) error {
	if secret == "" {
		return nil
	}
	if err := s.store.DeleteSession(ctx, hashSecret(secret)); err != nil {
		return fmt.Errorf("sign out: %w", err)
	}
	return nil
}

// CSRFToken is the anti-forgery token of the session with this secret: an
// HMAC of a fixed label keyed by the secret. A page gets it from the
// server; another site's page cannot, since it cannot read the HttpOnly
// cookie or our pages.
func CSRFToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("devicehub csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckCSRF reports whether token is the CSRF token of the session secret.
func CheckCSRF(secret, token string) bool {
	if secret == "" || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(CSRFToken(secret)), []byte(token)) == 1
}

func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("session secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
