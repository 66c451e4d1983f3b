package registry

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// GroupIDPattern is what a group id must match (the device id alphabet).
var GroupIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// ValidGroupID reports whether id is a valid group id (see ValidID).
func ValidGroupID(id string) bool { return GroupIDPattern.MatchString(id) && !dotSegment(id) }

// UpdateRequest is a patch of a device's registry fields: nil fields are
// left alone. JSON keys are those of Device.
type UpdateRequest struct {
	Name  *string   `json:"name,omitempty"`
	Group *string   `json:"group,omitempty"` // a group id; "" takes the device out of its group
	Tags  *[]string `json:"tags,omitempty"`
	// Location replaces the location; a zero Location removes it.
	Location *Location `json:"location,omitempty"`
	// Metadata replaces the metadata; an empty object removes it.
	Metadata        map[string]any `json:"metadata,omitempty"`
	FirmwareVersion *string        `json:"firmware_version,omitempty"`
	HardwareVersion *string        `json:"hardware_version,omitempty"`
	ManagementIP    *string        `json:"management_ip,omitempty"` // "" removes it
}

// Update changes a device's registry fields. A changed name fires
// device_name_changed, a changed group device_group_changed(group_id,
// old_group_id) and a changed management IP management_ip_changed(ip,
// old_ip), in the transaction that stores the change. A group that does
// not exist yet is created. It returns the updated device.
func (s *Service) Update(ctx context.Context, id string, req UpdateRequest) (*Device, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cur, err := s.store.GetDevice(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("update %s: %w", id, err)
	}
	var f DeviceFields
	var evs []events.Event
	var groups []NewGroup
	now := s.now().UTC()
	event := func(t events.Type, args any) {
		evs = append(evs, events.Event{Type: t, Time: now, DeviceID: id, DeviceType: cur.Type, Args: args})
	}
	if req.Name != nil {
		if err := checkText("name", *req.Name, 256); err != nil {
			return nil, err
		}
		if *req.Name != cur.Name {
			f.Name = req.Name
			event(events.DeviceNameChanged, &events.NameChanged{Name: *req.Name, OldName: cur.Name})
		}
	}
	if req.Group != nil && *req.Group != cur.Group {
		g := *req.Group
		if g != "" {
			if !ValidGroupID(g) {
				return nil, fmt.Errorf("%w: group %q: must be %s", ErrInvalid, g, IDRule)
			}
			groups = []NewGroup{{ID: g, Name: g}}
		}
		f.Group = &g
		event(events.DeviceGroupChanged, &events.GroupChanged{GroupID: g, OldGroupID: cur.Group})
	}
	if req.Tags != nil {
		if err := checkTags(*req.Tags); err != nil {
			return nil, err
		}
		if !slices.Equal(*req.Tags, cur.Tags) {
			tags := slices.Clone(*req.Tags)
			f.Tags = &tags
		}
	}
	if req.Location != nil {
		if *req.Location == (Location{}) {
			f.Location = []byte("null")
		} else if f.Location, err = encodeLocation(req.Location); err != nil {
			return nil, err
		}
	}
	if req.Metadata != nil {
		if len(req.Metadata) == 0 {
			f.Metadata = []byte("null")
		} else if f.Metadata, err = json.Marshal(req.Metadata); err != nil {
			return nil, fmt.Errorf("%w: metadata: %v", ErrInvalid, err)
		}
	}
	for _, v := range []struct {
		dst   **string
		val   *string
		cur   string
		field string
	}{
		{&f.FirmwareVersion, req.FirmwareVersion, cur.FirmwareVersion, "firmware_version"},
		{&f.HardwareVersion, req.HardwareVersion, cur.HardwareVersion, "hardware_version"},
	} {
		if v.val == nil || *v.val == v.cur {
			continue
		}
		if err := checkText(v.field, *v.val, 128); err != nil {
			return nil, err
		}
		*v.dst = v.val
	}
	if req.ManagementIP != nil {
		ip := *req.ManagementIP
		if ip != "" {
			if ip, err = normalizeIP(ip); err != nil {
				return nil, err
			}
		}
		if ip != cur.ManagementIP {
			f.ManagementIP = &ip
			event(events.ManagementIPChanged, &events.ManagementIP{IP: ip, OldIP: cur.ManagementIP})
		}
	}
	if f.Name == nil && f.Group == nil && f.Tags == nil && f.Location == nil && f.Metadata == nil &&
		f.FirmwareVersion == nil && f.HardwareVersion == nil && f.ManagementIP == nil {
		return cur, nil
	}
	ch := &commit.Change{DeviceID: id, Ops: []commit.Op{&Update{Fields: &f, Groups: groups}}}
	for _, e := range evs {
		ev, err := commit.NewEvent(e)
		if err != nil {
			return nil, err
		}
		ch.Events = append(ch.Events, ev)
	}
	if err := s.sub.Submit(ctx, ch); err != nil {
		return nil, fmt.Errorf("update %s: %w", id, storeErr(err))
	}
	d, err := s.store.GetDevice(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("update %s: %w", id, err)
	}
	return d, nil
}

// Disable refuses the device: its connection is closed at once and it
// cannot connect (or use its API key) until it is enabled again. It fires
// device_disabled_changed. Disabling a disabled device changes nothing.
func (s *Service) Disable(ctx context.Context, id, reason string) error {
	return s.setDisabled(ctx, id, true, reason)
}

// Enable lets a disabled device in again.
func (s *Service) Enable(ctx context.Context, id string) error {
	return s.setDisabled(ctx, id, false, "")
}

func (s *Service) setDisabled(ctx context.Context, id string, disabled bool, reason string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	e, ok := s.byID[id]
	var typ string
	var same bool
	if ok {
		typ, same = e.typ, e.disabled == disabled
	}
	s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("disable %s: %w", id, ErrNotFound)
	}
	if same {
		return nil
	}
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceDisabledChanged, Time: s.now().UTC(), DeviceID: id, DeviceType: typ,
		Args: &events.DisabledChanged{Disabled: disabled, Reason: reason}})
	if err != nil {
		return err
	}
	ch := &commit.Change{DeviceID: id, Ops: []commit.Op{&Update{Fields: &DeviceFields{Disabled: &disabled}}}, Events: []commit.Event{ev}}
	if err := s.sub.Submit(ctx, ch); err != nil {
		return fmt.Errorf("disable %s: %w", id, storeErr(err))
	}
	s.mu.Lock()
	if e, ok := s.byID[id]; ok {
		e.disabled = disabled
	}
	s.mu.Unlock()
	if disabled {
		s.kickDevice(id, "disabled")
		s.log.Info("device disabled", "device_id", id, "reason", reason)
	} else {
		s.log.Info("device enabled", "device_id", id)
	}
	return nil
}

// Revoke removes a device's credentials: they stop working at once, its
// connection is closed, and it cannot connect until it is provisioned
// again (Provision with Replace, or Rotate). It fires
// device_credentials_revoked.
func (s *Service) Revoke(ctx context.Context, id, reason string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	typ, ok := s.DeviceType(id)
	if !ok {
		return fmt.Errorf("revoke %s: %w", id, ErrNotFound)
	}
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceCredentialsRevoked, Time: s.now().UTC(), DeviceID: id, DeviceType: typ,
		Args: &events.CredentialsRevoked{Reason: reason}})
	if err != nil {
		return err
	}
	ch := &commit.Change{DeviceID: id, Ops: []commit.Op{&Update{Credentials: &CredentialChange{Revoke: true}}}, Events: []commit.Event{ev}}
	if err := s.sub.Submit(ctx, ch); err != nil {
		return fmt.Errorf("revoke %s: %w", id, storeErr(err))
	}
	s.mu.Lock()
	if e, ok := s.byID[id]; ok {
		s.dropKeysLocked(id, e)
		e.revoked = true
		e.prevUntil = time.Time{}
		e.pw, e.key, e.prevPW, e.prevKey = [sha256.Size]byte{}, [sha256.Size]byte{}, [sha256.Size]byte{}, [sha256.Size]byte{}
	}
	s.mu.Unlock()
	s.kickDevice(id, "credentials revoked")
	s.log.Info("device credentials revoked", "device_id", id, "reason", reason)
	return nil
}

// RefuseRegistration records that a device tried to register itself again
// and was refused (device_registration_refused), and logs it.
func (s *Service) RefuseRegistration(ctx context.Context, id, reason string) error {
	typ, ok := s.DeviceType(id)
	if !ok {
		return fmt.Errorf("refuse registration %s: %w", id, ErrNotFound)
	}
	s.log.Warn("device registration refused", "device_id", id, "reason", reason)
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceRegistrationRefused, Time: s.now().UTC(), DeviceID: id, DeviceType: typ,
		Args: &events.RegistrationRefused{Reason: reason}})
	if err != nil {
		return err
	}
	if err := s.sub.Submit(ctx, &commit.Change{DeviceID: id, Events: []commit.Event{ev}}); err != nil {
		return fmt.Errorf("refuse registration %s: %w", id, storeErr(err))
	}
	return nil
}

// RotateResult is the outcome of a rotation.
type RotateResult struct {
	Credentials events.Credentials `json:"credentials"`
	// OldValidUntil is when the old credentials stop working at the
	// latest (nil: they stopped at once).
	OldValidUntil *time.Time `json:"old_valid_until,omitempty"`
}

// Rotate gives a device new credentials. With an overlap, the old and the
// new ones are both valid until the device first uses the new ones or the
// overlap ends; without one, the old ones stop at once. A session opened
// with the old credentials ends when they do: at once without an overlap,
// at its end if the device never used the new ones (a connection with the
// new ones takes the old session over anyway). device_provisioned (via rotation) carries the new credentials to
// in-process subscribers.
func (s *Service) Rotate(ctx context.Context, id string, overlap time.Duration) (RotateResult, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	e, ok := s.byID[id]
	var typ string
	var revoked bool
	if ok {
		typ, revoked = e.typ, e.revoked
	}
	s.mu.RUnlock()
	if !ok {
		return RotateResult{}, fmt.Errorf("rotate %s: %w", id, ErrNotFound)
	}
	if overlap < 0 {
		return RotateResult{}, fmt.Errorf("%w: negative overlap", ErrInvalid)
	}
	now := s.now().UTC()
	creds, pw, key := newCredentials(id)
	var res RotateResult
	res.Credentials = creds
	cc := &CredentialChange{MQTTUsername: creds.MQTTUsername, PasswordHash: pw[:], APIKeyHash: key[:]}
	if overlap > 0 && !revoked {
		until := now.Add(overlap)
		cc.OldUntil = until
		res.OldValidUntil = &until
	}
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceProvisioned, Time: now, DeviceID: id, DeviceType: typ,
		Args: &events.Provisioned{Reprovisioned: true, Via: events.ViaRotation, OldValidUntil: res.OldValidUntil, Credentials: &creds}})
	if err != nil {
		return RotateResult{}, err
	}
	ch := &commit.Change{DeviceID: id, Ops: []commit.Op{&Update{Credentials: cc}}, Events: []commit.Event{ev}}
	if err := s.sub.Submit(ctx, ch); err != nil {
		return RotateResult{}, fmt.Errorf("rotate %s: %w", id, storeErr(err))
	}
	s.mu.Lock()
	if old, ok := s.byID[id]; ok {
		n := *old
		n.pw, n.key, n.revoked, n.username = pw, key, false, creds.MQTTUsername
		n.prevUntil = time.Time{}
		if res.OldValidUntil != nil {
			n.prevPW, n.prevKey, n.prevUntil = old.pw, old.key, *res.OldValidUntil
		}
		s.setLocked(id, &n)
	}
	s.mu.Unlock()
	if res.OldValidUntil == nil {
		// The old credentials stopped now: so do the sessions they opened.
		s.kickDevice(id, "credentials rotated")
	} else {
		s.endOverlapAt(id, *res.OldValidUntil)
	}
	s.log.Info("device credentials rotated", "device_id", id, "overlap", overlap)
	return res, nil
}

// PinCertificate pins a client certificate (the SHA-256 of its DER bytes)
// to the device: a TLS client presenting it authenticates as the device
// (AuthenticateCert). A zero fingerprint removes the pin.
func (s *Service) PinCertificate(ctx context.Context, id string, fingerprint [32]byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, ok := s.DeviceType(id); !ok {
		return fmt.Errorf("pin certificate of %s: %w", id, ErrNotFound)
	}
	pin := &CertPin{}
	if fingerprint != ([32]byte{}) {
		pin.Fingerprint = fingerprint[:]
	}
	if err := s.sub.Submit(ctx, &commit.Change{DeviceID: id, Ops: []commit.Op{&Update{Cert: pin}}}); err != nil {
		return fmt.Errorf("pin certificate of %s: %w", id, storeErr(err))
	}
	s.mu.Lock()
	if e, ok := s.byID[id]; ok {
		e.cert, e.hasCert = fingerprint, fingerprint != ([32]byte{})
	}
	s.mu.Unlock()
	return nil
}

// CreateGroupRequest creates a group.
type CreateGroupRequest struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"` // default: the id
}

// CreateGroup creates a device group.
func (s *Service) CreateGroup(ctx context.Context, req CreateGroupRequest) (*Group, error) {
	if !ValidGroupID(req.ID) {
		return nil, fmt.Errorf("%w: group id %q: must be %s", ErrInvalid, req.ID, IDRule)
	}
	name := req.Name
	if name == "" {
		name = req.ID
	}
	if err := checkText("name", name, 256); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	g := Group{ID: req.ID, Name: name, CreatedAt: now, UpdatedAt: now}
	if err := s.store.CreateGroup(ctx, g); err != nil {
		return nil, fmt.Errorf("create group %s: %w", req.ID, err)
	}
	return &g, nil
}

// RenameGroup changes a group's name; its id, and so its devices, stay.
func (s *Service) RenameGroup(ctx context.Context, id, name string) (*Group, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty group name", ErrInvalid)
	}
	if err := checkText("name", name, 256); err != nil {
		return nil, err
	}
	if err := s.store.RenameGroup(ctx, id, name, s.now().UTC()); err != nil {
		return nil, fmt.Errorf("rename group %s: %w", id, err)
	}
	return s.store.GetGroup(ctx, id)
}

// GetGroup returns a group with its device count.
func (s *Service) GetGroup(ctx context.Context, id string) (*Group, error) {
	return s.store.GetGroup(ctx, id)
}

// ListGroups lists the groups by id, with their device counts.
func (s *Service) ListGroups(ctx context.Context) ([]Group, error) {
	return s.store.ListGroups(ctx)
}

// ListGroupDevices lists the devices of a group (opts.Group is set to id).
func (s *Service) ListGroupDevices(ctx context.Context, id string, opts ListOptions) ([]Device, error) {
	if _, err := s.store.GetGroup(ctx, id); err != nil {
		return nil, err
	}
	opts.Group = id
	return s.store.ListDevices(ctx, opts)
}

func encodeLocation(l *Location) ([]byte, error) {
	if math.IsNaN(l.Lat) || math.IsNaN(l.Lon) || l.Lat < -90 || l.Lat > 90 || l.Lon < -180 || l.Lon > 180 {
		return nil, fmt.Errorf("%w: location: lat must be in [-90, 90] and lon in [-180, 180]", ErrInvalid)
	}
	if err := checkText("location.description", l.Description, 512); err != nil {
		return nil, err
	}
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("%w: location: %v", ErrInvalid, err)
	}
	return b, nil
}

// checkText refuses text that is too long, not UTF-8, or holds control
// characters.
func checkText(field, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, field, max)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalid, field)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s holds a control character", ErrInvalid, field)
		}
	}
	return nil
}

func checkTags(tags []string) error {
	if len(tags) > 64 {
		return fmt.Errorf("%w: more than 64 tags", ErrInvalid)
	}
	for _, t := range tags {
		if t == "" {
			return fmt.Errorf("%w: empty tag", ErrInvalid)
		}
		if err := checkText("tag", t, 64); err != nil {
			return err
		}
	}
	return nil
}

func normalizeIP(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("%w: management_ip %q is not an IP address", ErrInvalid, s)
	}
	return a.String(), nil
}
