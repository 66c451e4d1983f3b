package provisioning

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// RegisterRequest is what a device sends to POST /api/v1/device/register.
type RegisterRequest struct {
	SharedSecret string `json:"shared_secret"`
	// Key is the device's stable hardware key (for instance a hash of its
	// MAC address and serial number): it identifies the device across
	// factory resets.
	Key string `json:"key"`
	// DeviceID is the id a new device would like (default: derived from
	// the key); a known key keeps its device's id.
	DeviceID string `json:"device_id,omitempty"`
	// Type is a new device's type (default: Options.RegistrationType); a
	// known device keeps its type.
	Type            string `json:"type,omitempty"`
	Name            string `json:"name,omitempty"`
	FirmwareVersion string `json:"firmware_version,omitempty"`
	HardwareVersion string `json:"hardware_version,omitempty"`
}

// RegisterResponse is the device's identity and its new credentials.
type RegisterResponse struct {
	DeviceID   string `json:"device_id"`
	DeviceType string `json:"type"`
	IsNew      bool   `json:"is_new"`
	events.Credentials
}

// Register lets a device register itself with the shared secret. A new
// key creates a device (device_registered with is_new true); a known key
// registers its device again, as after a factory reset: it gets new
// credentials (the old ones stop working) and keeps its id, type, name,
// group and tags (device_registered with is_new false). Both fire
// device_provisioned (via registration) with the credentials in process,
// in the same transaction.
func (s *Service) Register(ctx context.Context, req RegisterRequest) (*RegisterResponse, error) {
	if s.opts.SharedSecret == "" {
		return nil, ErrRegistrationOff
	}
	if subtle.ConstantTimeCompare([]byte(req.SharedSecret), []byte(s.opts.SharedSecret)) != 1 {
		return nil, ErrBadSharedSecret
	}
	if req.Key == "" || len(req.Key) > 256 {
		return nil, fmt.Errorf("%w: key must be 1 to 256 bytes", ErrInvalid)
	}
	if req.DeviceID != "" && !registry.ValidID(req.DeviceID) {
		return nil, fmt.Errorf("%w: device_id %q: must be %s", ErrInvalid, req.DeviceID, registry.IDRule)
	}
	keyHash := s.keyHash(req.Key)

	// Two registrations of one new key at once would create two devices;
	// this process lets them in one at a time (nodes of a cluster may
	// still race, and the key then stays bound to the first device).
	s.regMu.Lock()
	defer s.regMu.Unlock()
	known, err := s.keys.RegisteredDevice(ctx, keyHash)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	isNew := known == ""
	preq := registry.ProvisionRequest{Via: events.ViaRegistration,
		FirmwareVersion: req.FirmwareVersion, HardwareVersion: req.HardwareVersion}
	if isNew {
		preq.ID = req.DeviceID
		if preq.ID == "" {
			preq.ID = "dev-" + hex.EncodeToString(keyHash[:8])
		}
		if _, exists := s.reg.DeviceType(preq.ID); exists {
			return nil, fmt.Errorf("register %s: %w", preq.ID, ErrKeyBoundElsewhere)
		}
		preq.Type = req.Type
		if preq.Type == "" {
			preq.Type = s.opts.RegistrationType
		}
		if preq.Type == "" {
			return nil, ErrDeviceTypeRequired
		}
		preq.Name = req.Name
	} else {
		if err := s.reg.Active(known); errors.Is(err, registry.ErrRevoked) {
			// A revocation stands until an operator says otherwise: the
			// shared secret and the key (which the revoked device, or
			// whoever took it, still has) must not undo it.
			if rerr := s.reg.RefuseRegistration(ctx, known, "credentials revoked"); rerr != nil {
				s.log.Error("record refused registration", "device_id", known, "err", rerr)
			}
			return nil, fmt.Errorf("register %s: %w", known, ErrDeviceRevoked)
		}
		d, err := s.reg.Get(ctx, known)
		if err != nil {
			return nil, fmt.Errorf("register %s: %w", known, err)
		}
		preq.ID, preq.Type, preq.Name, preq.Group, preq.Tags, preq.Metadata = d.ID, d.Type, d.Name, d.Group, d.Tags, d.Metadata
		preq.Replace = true
	}
	preq.Also = func(ch *commit.Change, _ events.Credentials) error {
		ev, err := commit.NewEvent(events.Event{Type: events.DeviceRegistered, Time: ch.Ops[0].(*registry.NewDevice).CreatedAt, DeviceID: preq.ID,
			DeviceType: preq.Type, Args: &events.Registered{IsNew: isNew}})
		if err != nil {
			return err
		}
		ch.Events = append(ch.Events, ev)
		if isNew {
			ch.Ops = append(ch.Ops, &Approval{RegistrationKey: keyHash})
		}
		return nil
	}
	creds, err := s.reg.Provision(ctx, preq)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	s.log.Info("device registered", "device_id", preq.ID, "type", preq.Type, "is_new", isNew)
	return &RegisterResponse{DeviceID: preq.ID, DeviceType: preq.Type, IsNew: isNew, Credentials: creds}, nil
}
