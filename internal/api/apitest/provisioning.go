package apitest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/registry"
)

// The secrets the fake Provisioning knows from the start.
const (
	// ProvisioningToken is the secret of token pt_1 (WeatherStation,
	// group roof, unlimited, not auto-approving).
	ProvisioningToken = "dhp_good"
	// OperationID is a pending operation of pt_1 that asked for the
	// device id "wanted-1"; OperationSecret is its secret.
	OperationID     = "op_1"
	OperationSecret = "dho_secret"
	// SharedSecret enables self-registration.
	SharedSecret = "shared-secret-0123"
)

// Provisioning is a fake provisioning service. Its clock is fixed at Now;
// tokens and operations expire against it.
type Provisioning struct {
	Now time.Time
	// RegistrationOff makes Register fail with ErrRegistrationOff.
	RegistrationOff bool

	devices *Devices
	types   *devicetype.Registry

	mu      sync.Mutex
	tokens  map[string]*provisioning.Token // secret → token
	ops     map[string]*fakeOp
	regKeys map[string]string // registration key → device id
	n       int
}

type fakeOp struct {
	op     provisioning.Operation
	secret string
	creds  *events.Credentials
}

func newProvisioning(d *Devices, types *devicetype.Registry) *Provisioning {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	p := &Provisioning{Now: now, devices: d, types: types, tokens: map[string]*provisioning.Token{},
		ops: map[string]*fakeOp{}, regKeys: map[string]string{}}
	p.tokens[ProvisioningToken] = &provisioning.Token{ID: "pt_1", Name: "factory", DeviceType: "WeatherStation", Group: "roof",
		ExpiresAt: now.Add(24 * time.Hour), Uses: 1, CreatedAt: now}
	p.ops[OperationID] = &fakeOp{secret: OperationSecret, op: provisioning.Operation{ID: OperationID, TokenID: "pt_1",
		VerificationCode: "K7MPQ2XH", RequestedDeviceID: "wanted-1", DeviceType: "WeatherStation", Group: "roof",
		Status: provisioning.StatusPending, RemoteAddr: "192.0.2.1:1234", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}}
	return p
}

// CreateToken creates a token whose secret is dhp_<n>.
func (p *Provisioning) CreateToken(_ context.Context, req provisioning.CreateTokenRequest) (*provisioning.CreateTokenResponse, error) {
	if _, err := p.types.Get(req.DeviceType); err != nil {
		return nil, fmt.Errorf("%w: device_type: %w", provisioning.ErrInvalid, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	exp := req.ExpiresAt
	if exp.IsZero() {
		exp = p.Now.Add(7 * 24 * time.Hour)
	}
	if !exp.After(p.Now) {
		return nil, fmt.Errorf("%w: expires_at is in the past", provisioning.ErrInvalid)
	}
	t := provisioning.Token{ID: fmt.Sprintf("pt_%d", p.n+1), Name: req.Name, DeviceType: req.DeviceType, Group: req.Group, Tags: req.Tags,
		ExpiresAt: exp, MaxUses: req.MaxUses, AutoApprove: req.AutoApprove, CreatedAt: p.Now}
	secret := fmt.Sprintf("dhp_%d", p.n)
	p.tokens[secret] = &t
	return &provisioning.CreateTokenResponse{Token: t, Secret: secret}, nil
}

// ListTokens lists the tokens by id.
func (p *Provisioning) ListTokens(context.Context) ([]provisioning.Token, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []provisioning.Token
	for _, t := range p.tokens {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// RevokeToken revokes a token by id.
func (p *Provisioning) RevokeToken(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.tokens {
		if t.ID == id {
			if t.RevokedAt == nil {
				at := p.Now
				t.RevokedAt = &at
			}
			return nil
		}
	}
	return fmt.Errorf("revoke %s: %w", id, provisioning.ErrTokenNotFound)
}

// CreateOperation creates an operation whose secret is dho_<n>.
func (p *Provisioning) CreateOperation(ctx context.Context, req provisioning.CreateOperationRequest, remote string) (*provisioning.CreateOperationResponse, error) {
	p.mu.Lock()
	t, ok := p.tokens[req.Token]
	switch {
	case !ok:
		p.mu.Unlock()
		return nil, provisioning.ErrTokenNotFound
	case t.RevokedAt != nil:
		p.mu.Unlock()
		return nil, provisioning.ErrTokenRevoked
	case !p.Now.Before(t.ExpiresAt):
		p.mu.Unlock()
		return nil, provisioning.ErrTokenExpired
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		p.mu.Unlock()
		return nil, provisioning.ErrTokenExhausted
	}
	t.Uses++
	p.n++
	o := &fakeOp{secret: fmt.Sprintf("dho_%d", p.n), op: provisioning.Operation{ID: fmt.Sprintf("op_%d", p.n+1), TokenID: t.ID,
		VerificationCode: "ABCD2345", RequestedDeviceID: req.DeviceID, DeviceType: t.DeviceType, Group: t.Group, Tags: t.Tags,
		Status: provisioning.StatusPending, RemoteAddr: remote, CreatedAt: p.Now, ExpiresAt: p.Now.Add(time.Hour)}}
	p.ops[o.op.ID] = o
	auto := t.AutoApprove
	p.mu.Unlock()
	if auto {
		_, _ = p.ApproveOperation(ctx, o.op.ID, provisioning.ApproveRequest{})
	}
	return &provisioning.CreateOperationResponse{ID: o.op.ID, VerificationCode: o.op.VerificationCode, ExpiresAt: o.op.ExpiresAt, Secret: o.secret}, nil
}

// PollOperation answers a device's poll.
func (p *Provisioning) PollOperation(_ context.Context, id, secret string) (*provisioning.OperationStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	o, ok := p.ops[id]
	if !ok {
		return nil, provisioning.ErrOperationNotFound
	}
	if secret != o.secret {
		return nil, provisioning.ErrBadSecret
	}
	st := &provisioning.OperationStatus{ID: id, Status: o.op.Status, ExpiresAt: o.op.ExpiresAt, Reason: o.op.Reason}
	switch o.op.Status {
	case provisioning.StatusRejected:
		return st, provisioning.ErrOperationRejected
	case provisioning.StatusDelivered:
		st.DeviceID, st.DeviceType = o.op.DeviceID, o.op.DeviceType
		return st, provisioning.ErrAlreadyDelivered
	case provisioning.StatusApproved:
		st.DeviceID, st.DeviceType, st.Credentials = o.op.DeviceID, o.op.DeviceType, o.creds
		o.op.Status, o.creds = provisioning.StatusDelivered, nil
	}
	return st, nil
}

// ListOperations lists operations by id, newest first.
func (p *Provisioning) ListOperations(_ context.Context, status string, _ int) ([]provisioning.Operation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []provisioning.Operation
	for _, o := range p.ops {
		if status == "" || o.op.Status == status {
			out = append(out, o.op)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	return out, nil
}

// GetOperation returns an operation.
func (p *Provisioning) GetOperation(_ context.Context, id string) (*provisioning.Operation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	o, ok := p.ops[id]
	if !ok {
		return nil, provisioning.ErrOperationNotFound
	}
	op := o.op
	return &op, nil
}

// ApproveOperation provisions the operation's device in the fake registry.
func (p *Provisioning) ApproveOperation(ctx context.Context, id string, req provisioning.ApproveRequest) (*provisioning.Operation, error) {
	p.mu.Lock()
	o, ok := p.ops[id]
	if !ok {
		p.mu.Unlock()
		return nil, provisioning.ErrOperationNotFound
	}
	if o.op.Status != provisioning.StatusPending {
		p.mu.Unlock()
		if o.op.Status == provisioning.StatusRejected {
			return nil, fmt.Errorf("operation %s: %w", id, provisioning.ErrOperationRejected)
		}
		return nil, fmt.Errorf("operation %s: %w", id, provisioning.ErrOperationDecided)
	}
	devID := req.DeviceID
	if devID == "" {
		devID = o.op.RequestedDeviceID
	}
	if devID == "" {
		devID = "dev-" + id
	}
	typ, group, tags := o.op.DeviceType, o.op.Group, o.op.Tags
	p.mu.Unlock()
	creds, err := p.devices.Provision(ctx, registry.ProvisionRequest{ID: devID, Type: typ, Group: group, Tags: tags})
	if err != nil {
		return nil, fmt.Errorf("approve operation %s: %w", id, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	at := p.Now
	o.op.Status, o.op.DeviceID, o.op.DecidedAt, o.creds = provisioning.StatusApproved, devID, &at, &creds
	op := o.op
	return &op, nil
}

// RejectOperation rejects a pending operation.
func (p *Provisioning) RejectOperation(_ context.Context, id string, req provisioning.RejectRequest) (*provisioning.Operation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	o, ok := p.ops[id]
	if !ok {
		return nil, provisioning.ErrOperationNotFound
	}
	if o.op.Status != provisioning.StatusPending {
		return nil, fmt.Errorf("operation %s: %w", id, provisioning.ErrOperationDecided)
	}
	at := p.Now
	o.op.Status, o.op.Reason, o.op.DecidedAt = provisioning.StatusRejected, req.Reason, &at
	op := o.op
	return &op, nil
}

// Register registers a device with SharedSecret and a hardware key: a new
// key creates the device (default id "dev-<key>"), a known one gets new
// credentials.
func (p *Provisioning) Register(ctx context.Context, req provisioning.RegisterRequest) (*provisioning.RegisterResponse, error) {
	if p.RegistrationOff {
		return nil, provisioning.ErrRegistrationOff
	}
	if req.SharedSecret != SharedSecret {
		return nil, provisioning.ErrBadSharedSecret
	}
	if req.Key == "" || len(req.Key) > 256 {
		return nil, fmt.Errorf("%w: key must be 1 to 256 bytes", provisioning.ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	id, known := p.regKeys[req.Key]
	typ := req.Type
	if known {
		d, err := p.devices.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		typ = d.Type
	} else {
		id = req.DeviceID
		if id == "" {
			id = "dev-" + req.Key
		}
		if typ == "" {
			return nil, provisioning.ErrDeviceTypeRequired
		}
		if _, err := p.devices.Get(ctx, id); err == nil {
			return nil, fmt.Errorf("register %s: %w", id, provisioning.ErrKeyBoundElsewhere)
		}
	}
	creds, err := p.devices.Provision(ctx, registry.ProvisionRequest{ID: id, Type: typ, Name: req.Name, Replace: known})
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	p.regKeys[req.Key] = id
	return &provisioning.RegisterResponse{DeviceID: id, DeviceType: typ, IsNew: !known, Credentials: creds}, nil
}
