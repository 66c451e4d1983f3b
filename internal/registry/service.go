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

	"golang.org/x/time/rate"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
)

// Errors of the credential view.
var (
	// ErrDisabled is returned when a disabled device tries to authenticate.
	ErrDisabled = errors.New("device disabled")
	// ErrRevoked is returned for a device whose credentials were revoked;
	// it is an ErrUnauthorized.
	ErrRevoked = fmt.Errorf("credentials revoked: %w", ErrUnauthorized)
)

// Submitter writes a change and waits for its commit.
type Submitter interface {
	Submit(ctx context.Context, ch *commit.Change) error
}

// enqueuer is the optional capability of a Submitter to queue a change
// without waiting (the committer has it). The credential view uses it to
// persist the end of a rotation overlap from the CONNECT path.
type enqueuer interface {
	Enqueue(ctx context.Context, ch *commit.Change) (*commit.Ticket, error)
}

// Types looks up declared device types.
type Types interface {
	Get(name string) (*devicetype.Type, error)
}

// Kicker closes a device's MQTT connection (the broker).
type Kicker interface {
	Kick(deviceID, reason string)
}

// Service provisions devices and authenticates them from an in-memory view
// of their credentials, kept in step with every change it commits.
//
// Lock order: s.wmu (serialises registry writes that read before they
// write) before s.mu (the credential view). Nothing is submitted while
// s.mu is held.
type Service struct {
	store  Store
	sub    Submitter
	types  Types
	log    *slog.Logger
	now    func() time.Time
	kicker Kicker // set once by NewService

	// missReader, when set (cluster mode), is asked for a device's
	// credentials when a CONNECT fails against the view: another node may
	// have provisioned, enabled or rotated the device a moment ago, before
	// its event reached this node.
	missReader CredentialReader
	// keyReader (cluster mode) finds an API key the view does not know;
	// keyMisses bounds how often.
	keyReader KeyReader
	keyMisses *rate.Limiter

	wmu sync.Mutex

	mu       sync.RWMutex
	byID     map[string]*entry
	byAPIKey map[[sha256.Size]byte]string
}

// entry is one device in the credential view.
type entry struct {
	typ      string
	username string
	pw       [sha256.Size]byte
	key      [sha256.Size]byte
	revoked  bool
	disabled bool

	// The credentials a rotation replaced, valid until prevUntil (zero:
	// none).
	prevPW    [sha256.Size]byte
	prevKey   [sha256.Size]byte
	prevUntil time.Time

	cert    [sha256.Size]byte
	hasCert bool
}

// NewService returns a registry service. Call Load before use.
//
// kick closes the sessions of a device that was disabled, revoked,
// re-provisioned or deleted (the broker); nil for none, and then such a
// device stays connected until it reconnects.
func NewService(store Store, sub Submitter, types Types, kick Kicker, log *slog.Logger) *Service {
	return &Service{
		store: store, sub: sub, types: types, kicker: kick, log: log, now: time.Now,
		byID:     map[string]*entry{},
		byAPIKey: map[[sha256.Size]byte]string{},
	}
}

func (s *Service) kickDevice(id, reason string) {
	if s.kicker != nil {
		s.kicker.Kick(id, reason)
	}
}

// endOverlapAt closes the device's sessions at until if the overlap that
// ends then is still the device's (it did not use its new credentials,
// was not rotated again): they were opened with the old credentials.
func (s *Service) endOverlapAt(id string, until time.Time) {
	time.AfterFunc(until.Sub(s.now()), func() {
		s.mu.RLock()
		e, ok := s.byID[id]
		still := ok && e.prevUntil.Equal(until)
		s.mu.RUnlock()
		if still {
			s.kickDevice(id, "credential overlap ended")
		}
	})
}

// Load fills the credential view from the store.
func (s *Service) Load(ctx context.Context) error {
	creds, err := s.store.AllCredentials(ctx)
	if err != nil {
		return fmt.Errorf("load credentials: %w", err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range creds {
		s.setLocked(c.DeviceID, s.entryOf(c, now))
	}
	return nil
}

// entryOf is the view's entry of stored credentials c.
func (s *Service) entryOf(c Credentials, now time.Time) *entry {
	e := &entry{typ: c.DeviceType, username: c.MQTTUsername, disabled: c.Disabled, revoked: c.Revoked || len(c.PasswordHash) == 0}
	copy(e.pw[:], c.PasswordHash)
	copy(e.key[:], c.APIKeyHash)
	if c.PrevUntil != nil && c.PrevUntil.After(now) && len(c.PrevPasswordHash) > 0 {
		e.prevUntil = *c.PrevUntil
		copy(e.prevPW[:], c.PrevPasswordHash)
		copy(e.prevKey[:], c.PrevAPIKeyHash)
		s.endOverlapAt(c.DeviceID, e.prevUntil)
	}
	if len(c.CertFingerprint) == sha256.Size {
		e.hasCert = true
		copy(e.cert[:], c.CertFingerprint)
	}
	return e
}

// CredentialReader reads one device's stored credentials (ok false: none).
type CredentialReader interface {
	DeviceCredentials(ctx context.Context, id string) (c Credentials, ok bool, err error)
}

// Reload refreshes the view's entry of device id from r: in a cluster,
// another node provisioned, rotated, revoked, disabled or enabled it. A
// device now revoked or disabled is disconnected from this node.
func (s *Service) Reload(ctx context.Context, r CredentialReader, id string) error {
	c, ok, err := r.DeviceCredentials(ctx, id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	// The entry's flags are read under the lock: a revoke through this
	// node changes them in place.
	revoked, disabled := !ok, false
	if ok {
		e := s.entryOf(c, s.now())
		s.setLocked(id, e)
		revoked, disabled = e.revoked, e.disabled
	} else if old, had := s.byID[id]; had {
		s.dropKeysLocked(id, old)
		delete(s.byID, id)
	}
	s.mu.Unlock()
	switch {
	case revoked:
		s.kickDevice(id, "credentials revoked")
	case disabled:
		s.kickDevice(id, "device disabled")
	}
	return nil
}

// setLocked puts e in the view in place of the device's old entry.
func (s *Service) setLocked(id string, e *entry) {
	if old, ok := s.byID[id]; ok {
		s.dropKeysLocked(id, old)
	}
	s.byID[id] = e
	if !e.revoked {
		s.byAPIKey[e.key] = id
	}
	if !e.prevUntil.IsZero() {
		s.byAPIKey[e.prevKey] = id
	}
}

func (s *Service) dropKeysLocked(id string, e *entry) {
	if s.byAPIKey[e.key] == id {
		delete(s.byAPIKey, e.key)
	}
	if !e.prevUntil.IsZero() && s.byAPIKey[e.prevKey] == id {
		delete(s.byAPIKey, e.prevKey)
	}
}

// ProvisionRequest describes a device to provision.
type ProvisionRequest struct {
	ID              string
	Type            string
	Name            string
	Group           string
	Tags            []string
	Location        *Location
	Metadata        map[string]any
	FirmwareVersion string
	HardwareVersion string
	ManagementIP    string
	// Replace re-provisions an existing device: new credentials, the old
	// ones stop working at once (and its connection is closed).
	Replace bool
	// Via says who provisions (events.ViaOperator when empty); it is
	// carried by device_provisioned.
	Via string
	// Also, if set, may add to the change that provisions the device, to
	// be written in the same transaction (a provisioning operation's
	// approval, a registration key, more events). The change's first op
	// is the *NewDevice. It sees the plaintext
	// credentials, and must not keep them.
	Also func(ch *commit.Change, creds events.Credentials) error
}

// Provision creates a device (or re-provisions it) with new random
// credentials, and returns them in plaintext: the only time they are seen.
// device_provisioned carries them to in-process subscribers.
func (s *Service) Provision(ctx context.Context, req ProvisionRequest) (events.Credentials, error) {
	if !ValidID(req.ID) {
		return events.Credentials{}, fmt.Errorf("%w %q: must be %s", ErrInvalidID, req.ID, IDRule)
	}
	if _, err := s.types.Get(req.Type); err != nil {
		return events.Credentials{}, err
	}
	fields, groups, err := provisionFields(req)
	if err != nil {
		return events.Credentials{}, err
	}
	via := req.Via
	if via == "" {
		via = events.ViaOperator
	}
	creds, pw, key := newCredentials(req.ID)
	var meta []byte
	if req.Metadata != nil {
		b, err := json.Marshal(req.Metadata)
		if err != nil {
			return events.Credentials{}, fmt.Errorf("%w: metadata: %v", ErrInvalid, err)
		}
		meta = b
	}
	now := s.now().UTC()
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceProvisioned, Time: now, DeviceID: req.ID, DeviceType: req.Type,
		Args: &events.Provisioned{Reprovisioned: req.Replace, Via: via, Credentials: &creds},
	})
	if err != nil {
		return events.Credentials{}, err
	}
	ch := &commit.Change{
		DeviceID: req.ID,
		Ops: []commit.Op{&NewDevice{
			Type: req.Type, Name: req.Name, Group: req.Group, Tags: req.Tags, Metadata: meta,
			MQTTUsername: creds.MQTTUsername, PasswordHash: pw[:], APIKeyHash: key[:],
			Replace: req.Replace, CreatedAt: now,
		}},
		Events: []commit.Event{ev},
	}
	if fields != nil || groups != nil {
		ch.Ops = append(ch.Ops, &Update{Fields: fields, Groups: groups})
	}
	if req.Also != nil {
		if err := req.Also(ch, creds); err != nil {
			return events.Credentials{}, fmt.Errorf("provision %s: %w", req.ID, err)
		}
	}
	if err := s.sub.Submit(ctx, ch); err != nil {
		return events.Credentials{}, fmt.Errorf("provision %s: %w", req.ID, storeErr(err))
	}
	s.mu.Lock()
	e := &entry{typ: req.Type, username: creds.MQTTUsername, pw: pw, key: key}
	if old, ok := s.byID[req.ID]; ok {
		// A re-provisioned device keeps its pinned certificate and its
		// disabled flag: the store keeps them too.
		e.disabled, e.cert, e.hasCert = old.disabled, old.cert, old.hasCert
	}
	s.setLocked(req.ID, e)
	s.mu.Unlock()
	if req.Replace {
		s.kickDevice(req.ID, "re-provisioned")
	}
	s.log.Info("device provisioned", "device_id", req.ID, "type", req.Type, "reprovisioned", req.Replace, "via", via)
	return creds, nil
}

// provisionFields are the registry fields of a new device that NewDevice
// does not carry, and the group to create if missing.
func provisionFields(req ProvisionRequest) (*DeviceFields, []NewGroup, error) {
	var f DeviceFields
	set := false
	if req.Location != nil {
		b, err := encodeLocation(req.Location)
		if err != nil {
			return nil, nil, err
		}
		f.Location, set = b, true
	}
	for _, v := range []struct {
		dst   **string
		val   string
		field string
		max   int
	}{
		{&f.FirmwareVersion, req.FirmwareVersion, "firmware_version", 128},
		{&f.HardwareVersion, req.HardwareVersion, "hardware_version", 128},
	} {
		if v.val == "" {
			continue
		}
		if err := checkText(v.field, v.val, v.max); err != nil {
			return nil, nil, err
		}
		*v.dst, set = &v.val, true
	}
	if req.ManagementIP != "" {
		ip, err := normalizeIP(req.ManagementIP)
		if err != nil {
			return nil, nil, err
		}
		f.ManagementIP, set = &ip, true
	}
	if err := checkText("name", req.Name, 256); err != nil {
		return nil, nil, err
	}
	if err := checkTags(req.Tags); err != nil {
		return nil, nil, err
	}
	var groups []NewGroup
	if req.Group != "" {
		if !ValidGroupID(req.Group) {
			return nil, nil, fmt.Errorf("%w: group %q: must be %s", ErrInvalid, req.Group, IDRule)
		}
		groups = []NewGroup{{ID: req.Group, Name: req.Group}}
	}
	if !set {
		return nil, groups, nil
	}
	return &f, groups, nil
}

// storeErr maps the commit path's per-change errors to the registry's.
func storeErr(err error) error {
	switch {
	case err == commit.ErrDeviceExists: // the bare sentinel says nothing more than ErrExists
		return ErrExists
	case errors.Is(err, commit.ErrDeviceExists):
		return fmt.Errorf("%w (%v)", ErrExists, err)
	case errors.Is(err, commit.ErrDeviceNotFound):
		return ErrNotFound
	}
	return err
}

// Authenticate checks MQTT credentials: the client id and the username must
// both be the device id, and the password must hash to the stored hash (or,
// during a rotation's overlap, to the previous one). It returns the
// device's type. The first use of the new credentials ends the overlap.
func (s *Service) Authenticate(clientID, username string, password []byte) (string, error) {
	typ, err := s.authenticate(clientID, username, password)
	if err == nil || s.missReader == nil || errors.Is(err, ErrDisabled) {
		return typ, err
	}
	// In a cluster the view may lag another node's change by the event
	// fan-out's delay: read the device's row once and try again.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rerr := s.Reload(ctx, s.missReader, clientID); rerr != nil {
		s.log.Warn("reload credentials after a failed connect", "device_id", clientID, "err", rerr)
		return typ, err
	}
	return s.authenticate(clientID, username, password)
}

// ReadMisses makes Authenticate read a device's credentials from r when
// they do not match the view (cluster mode: other nodes change them).
// Set before the broker starts.
// A reader that is also a KeyReader serves AuthenticateAPIKey's misses.
func (s *Service) ReadMisses(r CredentialReader) {
	s.missReader = r
	if kr, ok := r.(KeyReader); ok {
		s.keyReader = kr
		s.keyMisses = rate.NewLimiter(keyMissRate, keyMissRate)
	}
}

func (s *Service) authenticate(clientID, username string, password []byte) (string, error) {
	// Hashed first, so that an unknown device takes as long as a wrong
	// password.
	sum := sha256.Sum256(password)
	s.mu.RLock()
	e, ok := s.byID[clientID]
	if !ok {
		s.mu.RUnlock()
		return "", ErrNotFound
	}
	userOK := subtle.ConstantTimeCompare([]byte(username), []byte(e.username))
	curOK := subtle.ConstantTimeCompare(sum[:], e.pw[:])
	if e.revoked {
		curOK = 0
	}
	prevOK := 0
	overlap := !e.prevUntil.IsZero()
	if overlap && s.now().Before(e.prevUntil) {
		prevOK = subtle.ConstantTimeCompare(sum[:], e.prevPW[:])
	}
	typ, disabled, revoked := e.typ, e.disabled, e.revoked
	s.mu.RUnlock()
	if userOK&(curOK|prevOK) != 1 {
		if revoked {
			return "", ErrRevoked
		}
		return "", ErrUnauthorized
	}
	if disabled {
		return "", ErrDisabled
	}
	if overlap && curOK == 1 {
		s.retireOld(clientID, typ)
	}
	return typ, nil
}

// KeyReader finds in the store the device an API key belongs to (the
// PostgreSQL store; cluster mode).
type KeyReader interface {
	DeviceByAPIKey(ctx context.Context, hash []byte) (id string, ok bool, err error)
}

// keyMissRate bounds the store reads of unknown API keys per second and
// node (cluster mode): an unknown key is most often a wrong one, and a
// flood of them must not become a flood of queries.
const keyMissRate = 20

// AuthenticateAPIKey returns the device and type an API key belongs to.
// In cluster mode (ReadMisses with a KeyReader) a key the view does not
// know is looked up in the store (at most keyMissRate a second): another
// node may have provisioned or rotated it a moment ago.
func (s *Service) AuthenticateAPIKey(key string) (id, typ string, err error) {
	id, typ, err = s.authenticateAPIKey(key)
	if err == nil || s.keyReader == nil || errors.Is(err, ErrDisabled) || !s.keyMisses.Allow() {
		return id, typ, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sum := sha256.Sum256([]byte(key))
	found, ok, rerr := s.keyReader.DeviceByAPIKey(ctx, sum[:])
	if rerr != nil {
		s.log.Warn("look up an unknown api key", "err", rerr)
		return id, typ, err
	}
	if !ok {
		return id, typ, err
	}
	if rerr := s.Reload(ctx, s.missReader, found); rerr != nil {
		s.log.Warn("reload credentials after an unknown api key", "device_id", found, "err", rerr)
		return id, typ, err
	}
	return s.authenticateAPIKey(key)
}

func (s *Service) authenticateAPIKey(key string) (id, typ string, err error) {
	sum := sha256.Sum256([]byte(key))
	s.mu.RLock()
	id, ok := s.byAPIKey[sum]
	if !ok {
		s.mu.RUnlock()
		return "", "", ErrUnauthorized
	}
	e := s.byID[id]
	// The map lookup found the hash; compare again in constant time so
	// that a hash collision in the map cannot be probed by timing.
	curOK := subtle.ConstantTimeCompare(sum[:], e.key[:]) == 1 && !e.revoked
	overlap := !e.prevUntil.IsZero()
	prevOK := overlap && s.now().Before(e.prevUntil) && subtle.ConstantTimeCompare(sum[:], e.prevKey[:]) == 1
	typ, disabled := e.typ, e.disabled
	s.mu.RUnlock()
	if !curOK && !prevOK {
		return "", "", ErrUnauthorized
	}
	if disabled {
		return "", "", ErrDisabled
	}
	if overlap && curOK {
		s.retireOld(id, typ)
	}
	return id, typ, nil
}

// retireOld ends a rotation's overlap: the device used its new
// credentials. The view changes at once; the store learns of it through a
// change queued without waiting (a restart before it is committed only
// shortens nothing: the old credentials then expire at the end of the
// period).
func (s *Service) retireOld(id, typ string) {
	s.mu.Lock()
	e, ok := s.byID[id]
	if !ok || e.prevUntil.IsZero() {
		s.mu.Unlock()
		return
	}
	if s.byAPIKey[e.prevKey] == id && e.prevKey != e.key {
		delete(s.byAPIKey, e.prevKey)
	}
	e.prevUntil = time.Time{}
	e.prevPW, e.prevKey = [sha256.Size]byte{}, [sha256.Size]byte{}
	s.mu.Unlock()
	q, ok := s.sub.(enqueuer)
	if !ok {
		return
	}
	// Bounded: this runs in a device's CONNECT; a full commit queue must
	// not hold the connection.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := q.Enqueue(ctx, &commit.Change{DeviceID: id, Ops: []commit.Op{&Update{RetireOld: true}}}); err != nil {
		s.log.Warn("record end of credential overlap", "device_id", id, "type", typ, "err", err)
	}
}

// AuthenticateCert checks a client certificate (its SHA-256 fingerprint)
// against the one pinned to the device, and returns the device's type.
func (s *Service) AuthenticateCert(clientID string, fingerprint [32]byte) (deviceType string, err error) {
	s.mu.RLock()
	e, ok := s.byID[clientID]
	if !ok {
		s.mu.RUnlock()
		return "", ErrNotFound
	}
	match := e.hasCert && subtle.ConstantTimeCompare(fingerprint[:], e.cert[:]) == 1
	typ, disabled := e.typ, e.disabled
	s.mu.RUnlock()
	if !match {
		return "", ErrUnauthorized
	}
	if disabled {
		return "", ErrDisabled
	}
	return typ, nil
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

// newCredentials returns new random credentials and the hashes of the
// secrets.
func newCredentials(id string) (creds events.Credentials, pw, key [sha256.Size]byte) {
	creds = events.Credentials{MQTTUsername: id, MQTTPassword: NewSecret(), APIKey: NewSecret()}
	return creds, sha256.Sum256([]byte(creds.MQTTPassword)), sha256.Sum256([]byte(creds.APIKey))
}

// NewSecret returns 32 random bytes, base64url encoded.
func NewSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Active reports whether a device may use the hub now: nil, or
// ErrNotFound, ErrRevoked or ErrDisabled. The HTTP auth view asks it for
// every ACL check, so that an external broker, which the hub cannot make
// close a connection, stops a disabled device at its next publish.
func (s *Service) Active(id string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byID[id]
	switch {
	case !ok:
		return ErrNotFound
	case e.revoked:
		return ErrRevoked
	case e.disabled:
		return ErrDisabled
	}
	return nil
}
