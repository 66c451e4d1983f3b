// Package provisioning lets devices in without an operator typing
// credentials: with a provisioning token and an operation the operator
// approves (seed 004), or by registering themselves with a shared secret
// and a stable hardware key (seed 001). Every way ends in the registry's
// Provision, so that a device gets the same credentials (mqtt_username,
// mqtt_password, api_key), stored as hashes only, and device_provisioned
// carries them to in-process subscribers.
//
// Token flow: an operator creates a token (CreateToken; its secret is shown
// once). A device creates an operation with it (CreateOperation) and gets
// an operation id, a short verification code, an expiry and a secret to
// poll with. Creating an operation counts a use of the token atomically in
// the store, so a token's quota holds across hub nodes. The operator
// approves the operation (ApproveOperation, optionally choosing the device
// id) or rejects it; a token may approve its operations itself. Approval
// provisions the device and seals its credentials for the device (X25519
// to a public key derived from the operation's secret, so the store never
// holds them in plaintext); the device's next poll (PollOperation) opens
// them, once.
package provisioning

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/registry"
)

// Errors of provisioning. The API maps them to statuses and codes.
var (
	ErrTokenNotFound     = errors.New("provisioning token not found")
	ErrTokenExpired      = errors.New("provisioning token expired")
	ErrTokenRevoked      = errors.New("provisioning token revoked")
	ErrTokenExhausted    = errors.New("provisioning token used up")
	ErrOperationNotFound = errors.New("provisioning operation not found")
	ErrOperationExpired  = errors.New("provisioning operation expired")
	ErrOperationRejected = errors.New("provisioning operation rejected")
	ErrOperationDecided  = errors.New("provisioning operation already decided")
	ErrOperationBusy     = errors.New("provisioning operation is being approved")
	ErrAlreadyDelivered  = errors.New("credentials already delivered")
	ErrBadSecret         = errors.New("bad operation secret")
	ErrRegistrationOff   = errors.New("self-registration is not enabled")
	ErrBadSharedSecret   = errors.New("bad shared secret")
	ErrInvalid           = errors.New("invalid request")
	ErrKeyBoundElsewhere = errors.New("device exists and is not registered with this key")
	// ErrDeviceRevoked: the key belongs to a device whose credentials were
	// revoked; registering again does not undo that (an operator must
	// provision it again).
	ErrDeviceRevoked      = errors.New("device revoked: an operator must provision it again")
	ErrDeviceTypeRequired = errors.New("a device type is required")
)

// Operation statuses.
const (
	StatusPending   = "pending"
	StatusApproving = "approving" // claimed by an approval in progress; reads as pending
	StatusApproved  = "approved"  // credentials sealed, waiting for the device
	StatusDelivered = "delivered" // the device fetched its credentials
	StatusRejected  = "rejected"
	StatusExpired   = "expired" // computed: pending or approved past expires_at
)

// Token is a provisioning token, without its secret.
type Token struct {
	ID          string     `json:"id"`
	Name        string     `json:"name,omitempty"`
	DeviceType  string     `json:"device_type"`
	Group       string     `json:"group,omitempty"`
	Tags        []string   `json:"tags,omitempty"`
	ExpiresAt   time.Time  `json:"expires_at"`
	MaxUses     int        `json:"max_uses"` // 0: unlimited
	Uses        int        `json:"uses"`
	AutoApprove bool       `json:"auto_approve"`
	CreatedAt   time.Time  `json:"created_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
}

// Operation is a provisioning operation as the operator sees it. The
// hashes and sealed credentials never leave the process (json:"-").
type Operation struct {
	ID                string     `json:"id"`
	TokenID           string     `json:"token_id"`
	VerificationCode  string     `json:"verification_code"`
	RequestedDeviceID string     `json:"requested_device_id,omitempty"`
	DeviceID          string     `json:"device_id,omitempty"` // set at approval
	DeviceType        string     `json:"device_type"`
	Group             string     `json:"group,omitempty"`
	Tags              []string   `json:"tags,omitempty"`
	Status            string     `json:"status"`
	Reason            string     `json:"reason,omitempty"` // why it was rejected
	RemoteAddr        string     `json:"remote_addr,omitempty"`
	CreatedAt         time.Time  `json:"created_at"`
	ExpiresAt         time.Time  `json:"expires_at"`
	DecidedAt         *time.Time `json:"decided_at,omitempty"`

	SecretHash []byte     `json:"-"`
	PublicKey  []byte     `json:"-"`
	Sealed     []byte     `json:"-"`
	ClaimedAt  *time.Time `json:"-"`
}

// Store is what provisioning needs of storage: its three parts, each
// used by its own part of the Service. Tokens and operations are written
// directly (no signal describes them); the approval that provisions a
// device goes through the commit path with the device (an Approval op).
type Store interface {
	TokenStore
	OperationStore
	RegistrationStore
}

// TokenStore keeps provisioning tokens (provisioning.go).
type TokenStore interface {
	CreateProvisioningToken(ctx context.Context, t Token, hash []byte) error
	ListProvisioningTokens(ctx context.Context) ([]Token, error)
	// RevokeProvisioningToken: ErrTokenNotFound.
	RevokeProvisioningToken(ctx context.Context, id string, at time.Time) error
}

// OperationStore keeps provisioning operations (operations.go).
type OperationStore interface {
	// CreateProvisioningOperation counts a use of the token whose secret
	// hashes to tokenHash and stores op with the token's device type,
	// group and tags, in one transaction; it fails with ErrTokenNotFound,
	// ErrTokenRevoked, ErrTokenExpired (at now) or ErrTokenExhausted.
	// It returns the token (uses counted) and fills op's token fields.
	CreateProvisioningOperation(ctx context.Context, tokenHash []byte, op *Operation, now time.Time) (Token, error)
	// GetProvisioningOperation: ErrOperationNotFound.
	GetProvisioningOperation(ctx context.Context, id string) (*Operation, error)
	// ListProvisioningOperations lists operations by creation, newest
	// first; status "" lists all, StatusPending also lists approving.
	ListProvisioningOperations(ctx context.Context, status string, limit int) ([]Operation, error)
	// ClaimProvisioningOperation moves an unexpired pending operation (or
	// one claimed before stale) to approving, and reports whether it did.
	ClaimProvisioningOperation(ctx context.Context, id string, now, stale time.Time) (bool, error)
	// ReleaseProvisioningOperation moves an approving operation back to
	// pending.
	ReleaseProvisioningOperation(ctx context.Context, id string) error
	// RejectProvisioningOperation moves a pending (or stale approving)
	// operation to rejected, and reports whether it did.
	RejectProvisioningOperation(ctx context.Context, id, reason string, now, stale time.Time) (bool, error)
	// DeliverProvisioningOperation moves an unexpired approved operation
	// to delivered, deleting its sealed credentials, and returns them
	// (nil: it was not approved, or expired, or delivered already).
	DeliverProvisioningOperation(ctx context.Context, id string, now time.Time) ([]byte, error)
}

// RegistrationStore finds the device a self-registration key is bound to
// (register.go, keys.go).
type RegistrationStore interface {
	// RegisteredDevice returns the device a registration key (hash) is
	// bound to, "" for none.
	RegisteredDevice(ctx context.Context, keyHash []byte) (string, error)
	// RegistrationKeyScheme says how the stored key hashes are made
	// (SchemeSHA256, SchemeHMAC).
	RegistrationKeyScheme(ctx context.Context) (string, error)
	// RekeyRegistrationKeys replaces every stored key hash h by rekey(h)
	// and records scheme, in one transaction; nothing if the store is at
	// scheme already.
	RekeyRegistrationKeys(ctx context.Context, scheme string, rekey func(old []byte) []byte) error
}

// Registry is what provisioning needs of the registry (registry.Service).
type Registry interface {
	Provision(ctx context.Context, req registry.ProvisionRequest) (events.Credentials, error)
	DeviceType(id string) (string, bool)
	Get(ctx context.Context, id string) (*registry.Device, error)
	// Active says whether a device may use the hub (registry.ErrRevoked
	// for a revoked one).
	Active(id string) error
	// RefuseRegistration records a refused self-registration (an event).
	RefuseRegistration(ctx context.Context, id, reason string) error
}

// Types looks up declared device types.
type Types interface {
	Get(name string) (*devicetype.Type, error)
}

// Options configure provisioning.
type Options struct {
	// OperationTTL is how long an operation waits for approval, and an
	// approved one for the device to fetch its credentials (default 1h).
	OperationTTL time.Duration
	// DefaultTokenTTL is the lifetime of a token created without
	// expires_at (default 7 days).
	DefaultTokenTTL time.Duration
	// SharedSecret enables self-registration (registration.shared_secret);
	// empty disables it.
	SharedSecret string
	// RegistrationType is the device type of a self-registering device
	// that names none (registration.default_type); empty: type required.
	RegistrationType string
	// KeySecret keys the hashes of hardware keys the store keeps (see
	// keys.go; the hub keeps it in its data directory). Empty keys them
	// with an empty key: for tests only.
	KeySecret []byte
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// claimTimeout is how long an approval may hold an operation before
// another approval or a rejection may take it over (the first one
// crashed).
const claimTimeout = time.Minute

// Service runs provisioning. Create it with New.
type Service struct {
	tokens TokenStore
	ops    OperationStore
	keys   RegistrationStore
	reg    Registry
	types  Types
	opts   Options
	log    *slog.Logger

	regMu sync.Mutex // serialises self-registrations of this process
}

// New returns a provisioning service.
func New(store Store, reg Registry, types Types, opts Options, log *slog.Logger) *Service {
	if opts.OperationTTL <= 0 {
		opts.OperationTTL = time.Hour
	}
	if opts.DefaultTokenTTL <= 0 {
		opts.DefaultTokenTTL = 7 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Service{tokens: store, ops: store, keys: store, reg: reg, types: types, opts: opts, log: log}
}

func (s *Service) now() time.Time { return s.opts.Now().UTC().Truncate(time.Microsecond) }

// CreateTokenRequest creates a provisioning token.
type CreateTokenRequest struct {
	Name       string    `json:"name,omitempty"`
	DeviceType string    `json:"device_type"`
	Group      string    `json:"group,omitempty"`
	Tags       []string  `json:"tags,omitempty"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"` // zero: now + Options.DefaultTokenTTL
	MaxUses    int       `json:"max_uses,omitempty"`  // 0: unlimited
	// AutoApprove approves the token's operations as they are created.
	AutoApprove bool `json:"auto_approve,omitempty"`
}

// CreateTokenResponse is the new token and its secret, shown only here.
type CreateTokenResponse struct {
	Token
	Secret string `json:"token"`
}

// CreateToken creates a token. Its secret is returned once; the store keeps
// its hash.
func (s *Service) CreateToken(ctx context.Context, req CreateTokenRequest) (*CreateTokenResponse, error) {
	if req.DeviceType == "" {
		return nil, fmt.Errorf("%w: device_type is required", ErrInvalid)
	}
	if _, err := s.types.Get(req.DeviceType); err != nil {
		return nil, fmt.Errorf("%w: device_type: %w", ErrInvalid, err)
	}
	if req.Group != "" && !registry.ValidGroupID(req.Group) {
		return nil, fmt.Errorf("%w: group %q: must be %s", ErrInvalid, req.Group, registry.IDRule)
	}
	if req.MaxUses < 0 {
		return nil, fmt.Errorf("%w: max_uses must not be negative", ErrInvalid)
	}
	if len(req.Name) > 256 || len(req.Tags) > 64 {
		return nil, fmt.Errorf("%w: name or tags too long", ErrInvalid)
	}
	now := s.now()
	exp := req.ExpiresAt.UTC().Truncate(time.Microsecond)
	if req.ExpiresAt.IsZero() {
		exp = now.Add(s.opts.DefaultTokenTTL)
	}
	if !exp.After(now) {
		return nil, fmt.Errorf("%w: expires_at is in the past", ErrInvalid)
	}
	secret := "dhp_" + registry.NewSecret()
	sum := sha256.Sum256([]byte(secret))
	t := Token{
		ID: "pt_" + randomHex(8), Name: req.Name, DeviceType: req.DeviceType, Group: req.Group, Tags: req.Tags,
		ExpiresAt: exp, MaxUses: req.MaxUses, AutoApprove: req.AutoApprove, CreatedAt: now,
	}
	if err := s.tokens.CreateProvisioningToken(ctx, t, sum[:]); err != nil {
		return nil, fmt.Errorf("create provisioning token: %w", err)
	}
	s.log.Info("provisioning token created", "token_id", t.ID, "device_type", t.DeviceType, "max_uses", t.MaxUses,
		"auto_approve", t.AutoApprove, "expires_at", t.ExpiresAt)
	return &CreateTokenResponse{Token: t, Secret: secret}, nil
}

// ListTokens lists the tokens, without secrets.
func (s *Service) ListTokens(ctx context.Context) ([]Token, error) {
	return s.tokens.ListProvisioningTokens(ctx)
}

// RevokeToken revokes a token: it admits no more operations (those it
// admitted already stay as they are).
func (s *Service) RevokeToken(ctx context.Context, id string) error {
	if err := s.tokens.RevokeProvisioningToken(ctx, id, s.now()); err != nil {
		return fmt.Errorf("revoke provisioning token %s: %w", id, err)
	}
	s.log.Info("provisioning token revoked", "token_id", id)
	return nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}
