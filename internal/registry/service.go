package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
)

// ErrDisabled is returned when a disabled device tries to authenticate.
var ErrDisabled = errors.New("device disabled")

// Submitter writes a change and waits for its commit.
type Submitter interface {
	Submit(ctx context.Context, ch *commit.Change) error
}

// Types looks up declared device types.
type Types interface {
	Get(name string) (*devicetype.Type, error)
}

// Service provisions devices and authenticates them from an in-memory view
// of their credentials, kept in step with every change it commits.
type Service struct {
	store Store
	sub   Submitter
	types Types
	log   *slog.Logger

	mu       sync.RWMutex
	byID     map[string]*entry
	byAPIKey map[[sha256.Size]byte]string
}

type entry struct {
	typ      string
	username string
	pw       [sha256.Size]byte
	key      [sha256.Size]byte
	disabled bool
}

// NewService returns a registry service. Call Load before use.
func NewService(store Store, sub Submitter, types Types, log *slog.Logger) *Service {
	return &Service{
		store: store, sub: sub, types: types, log: log,
		byID:     map[string]*entry{},
		byAPIKey: map[[sha256.Size]byte]string{},
	}
}

// Load fills the credential view from the store.
func (s *Service) Load(ctx context.Context) error {
	creds, err := s.store.AllCredentials(ctx)
	if err != nil {
		return fmt.Errorf("load credentials: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range creds {
		s.putLocked(c.DeviceID, c.DeviceType, c.MQTTUsername, c.PasswordHash, c.APIKeyHash, c.Disabled)
	}
	return nil
}

func (s *Service) putLocked(id, typ, user string, pw, key []byte, disabled bool) {
	if old, ok := s.byID[id]; ok {
		delete(s.byAPIKey, old.key)
	}
	e := &entry{typ: typ, username: user, disabled: disabled}
	copy(e.pw[:], pw)
	copy(e.key[:], key)
	s.byID[id] = e
	s.byAPIKey[e.key] = id
}

// ProvisionRequest describes a device to provision.
type ProvisionRequest struct {
	ID       string
	Type     string
	Name     string
	Group    string
	Tags     []string
	Metadata map[string]any
	// Replace re-provisions an existing device: new credentials, the old
	// ones stop working at once.
	Replace bool
}

// Provision creates a device (or re-provisions it) with new random
// credentials, and returns them in plaintext: the only time they are seen.
func (s *Service) Provision(ctx context.Context, req ProvisionRequest) (events.Credentials, error) {
	if !ValidID(req.ID) {
		return events.Credentials{}, fmt.Errorf("%w %q: must match %s", ErrInvalidID, req.ID, IDPattern)
	}
	if _, err := s.types.Get(req.Type); err != nil {
		return events.Credentials{}, err
	}
	creds := events.Credentials{MQTTUsername: req.ID, MQTTPassword: newSecret(), APIKey: newSecret()}
	pw := sha256.Sum256([]byte(creds.MQTTPassword))
	key := sha256.Sum256([]byte(creds.APIKey))
	var meta []byte
	if req.Metadata != nil {
		b, err := json.Marshal(req.Metadata)
		if err != nil {
			return events.Credentials{}, fmt.Errorf("metadata: %w", err)
		}
		meta = b
	}
	now := time.Now().UTC()
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceProvisioned, Time: now, DeviceID: req.ID, DeviceType: req.Type,
		Args: &events.Provisioned{Reprovisioned: req.Replace, Credentials: &creds},
	})
	if err != nil {
		return events.Credentials{}, err
	}
	ch := &commit.Change{
		DeviceID: req.ID,
		NewDevice: &commit.NewDevice{
			Type: req.Type, Name: req.Name, Group: req.Group, Tags: req.Tags, Metadata: meta,
			MQTTUsername: creds.MQTTUsername, PasswordHash: pw[:], APIKeyHash: key[:],
			Replace: req.Replace, CreatedAt: now,
		},
		Events: []commit.Event{ev},
	}
	if err := s.sub.Submit(ctx, ch); err != nil {
		switch {
		case errors.Is(err, commit.ErrDeviceExists):
			return events.Credentials{}, fmt.Errorf("provision %s: %w", req.ID, ErrExists)
		case errors.Is(err, commit.ErrDeviceNotFound):
			return events.Credentials{}, fmt.Errorf("provision %s: %w", req.ID, ErrNotFound)
		}
		return events.Credentials{}, fmt.Errorf("provision %s: %w", req.ID, err)
	}
	s.mu.Lock()
	s.putLocked(req.ID, req.Type, creds.MQTTUsername, pw[:], key[:], false)
	s.mu.Unlock()
	s.log.Info("device provisioned", "device_id", req.ID, "type", req.Type, "reprovisioned", req.Replace)
	return creds, nil
}

// Authenticate checks MQTT credentials: the client id and the username must
// both be the device id, and the password must hash to the stored hash. It
// returns the device's type.
func (s *Service) Authenticate(clientID, username string, password []byte) (string, error) {
	s.mu.RLock()
	e, ok := s.byID[clientID]
	s.mu.RUnlock()
	if !ok {
		return "", ErrNotFound
	}
	sum := sha256.Sum256(password)
	userOK := subtle.ConstantTimeCompare([]byte(username), []byte(e.username))
	pwOK := subtle.ConstantTimeCompare(sum[:], e.pw[:])
	if userOK&pwOK != 1 {
		return "", ErrUnauthorized
	}
	if e.disabled {
		return "", ErrDisabled
	}
	return e.typ, nil
}

// AuthenticateAPIKey returns the device and type an API key belongs to.
func (s *Service) AuthenticateAPIKey(key string) (id, typ string, err error) {
	sum := sha256.Sum256([]byte(key))
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.byAPIKey[sum]
	if !ok {
		return "", "", ErrUnauthorized
	}
	e := s.byID[id]
	// The map lookup found the hash; compare again in constant time so
	// that a hash collision in the map cannot be probed by timing.
	if subtle.ConstantTimeCompare(sum[:], e.key[:]) != 1 {
		return "", "", ErrUnauthorized
	}
	if e.disabled {
		return "", "", ErrDisabled
	}
	return id, e.typ, nil
}

// DeviceType returns the type of a known device.
func (s *Service) DeviceType(id string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byID[id]
	if !ok {
		return "", false
	}
	return e.typ, true
}

// Get returns a device from the store.
func (s *Service) Get(ctx context.Context, id string) (*Device, error) {
	return s.store.GetDevice(ctx, id)
}

// List lists devices from the store.
func (s *Service) List(ctx context.Context, opts ListOptions) ([]Device, error) {
	return s.store.ListDevices(ctx, opts)
}

func newSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
