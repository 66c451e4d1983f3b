package provisioning

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// CreateOperationRequest is what a device sends to
// POST /api/v1/provisioning/operations.
type CreateOperationRequest struct {
	Token    string `json:"token"`
	DeviceID string `json:"device_id,omitempty"` // the id the device would like
}

// CreateOperationResponse is what the device gets back. It polls
// GET /api/v1/provisioning/operations/{id} with
// "Authorization: Bearer <secret>".
type CreateOperationResponse struct {
	ID               string    `json:"id"`
	VerificationCode string    `json:"verification_code"`
	ExpiresAt        time.Time `json:"expires_at"`
	Secret           string    `json:"secret"`
}

// OperationStatus is the answer to a device's poll. Credentials are set
// once: in the first answer after approval.
type OperationStatus struct {
	ID          string              `json:"id"`
	Status      string              `json:"status"`
	DeviceID    string              `json:"device_id,omitempty"`
	DeviceType  string              `json:"device_type,omitempty"`
	ExpiresAt   time.Time           `json:"expires_at"`
	Reason      string              `json:"reason,omitempty"`
	Credentials *events.Credentials `json:"credentials,omitempty"`
}

// ApproveRequest approves an operation. DeviceID overrides the id the
// device asked for; with neither, the hub picks one.
type ApproveRequest struct {
	DeviceID string `json:"device_id,omitempty"`
}

// RejectRequest rejects an operation.
type RejectRequest struct {
	Reason string `json:"reason,omitempty"`
}

// codeAlphabet has no characters that read alike (0/O, 1/I/L): 31 of
// them, so 8 characters carry about 39 bits.
const codeAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"

// newVerificationCode returns 8 characters the operator compares with what
// the device shows.
func newVerificationCode() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	for i := range b {
		// 256 is not a multiple of 31; the bias of a modulo is below
		// what a human comparing codes could notice or exploit.
		b[i] = codeAlphabet[int(b[i])%len(codeAlphabet)]
	}
	return string(b)
}

// CreateOperation starts provisioning a device with a token. The token's
// use is counted at once (a reused single-use token, or one over its
// quota, fails with ErrTokenExhausted). With an auto-approving token the
// operation is approved before this returns (if that fails, it stays
// pending for an operator). remoteAddr is shown to the operator.
func (s *Service) CreateOperation(ctx context.Context, req CreateOperationRequest, remoteAddr string) (*CreateOperationResponse, error) {
	if req.Token == "" {
		return nil, fmt.Errorf("%w: token is required", ErrInvalid)
	}
	if req.DeviceID != "" && !registry.ValidID(req.DeviceID) {
		return nil, fmt.Errorf("%w: device_id %q: must be %s", ErrInvalid, req.DeviceID, registry.IDRule)
	}
	now := s.now()
	secret := "dho_" + registry.NewSecret()
	pub, err := publicKeyFor(secret)
	if err != nil {
		return nil, fmt.Errorf("create operation: %w", err)
	}
	sum := sha256.Sum256([]byte(secret))
	op := &Operation{
		ID: "op_" + randomHex(12), VerificationCode: newVerificationCode(), RequestedDeviceID: req.DeviceID,
		Status: StatusPending, RemoteAddr: remoteAddr, CreatedAt: now, ExpiresAt: now.Add(s.opts.OperationTTL),
		SecretHash: sum[:], PublicKey: pub,
	}
	tokenHash := sha256.Sum256([]byte(req.Token))
	tok, err := s.ops.CreateProvisioningOperation(ctx, tokenHash[:], op, now)
	if err != nil {
		return nil, fmt.Errorf("create operation: %w", err)
	}
	s.log.Info("provisioning operation created", "operation_id", op.ID, "token_id", tok.ID,
		"requested_device_id", req.DeviceID, "remote", remoteAddr)
	if tok.AutoApprove {
		if _, err := s.approve(ctx, op.ID, ""); err != nil {
			s.log.Warn("auto-approval failed; the operation waits for an operator", "operation_id", op.ID, "err", err)
		}
	}
	return &CreateOperationResponse{ID: op.ID, VerificationCode: op.VerificationCode, ExpiresAt: op.ExpiresAt, Secret: secret}, nil
}

// effectiveStatus is the status an operation shows at now.
func effectiveStatus(op *Operation, now time.Time) string {
	switch op.Status {
	case StatusPending, StatusApproving, StatusApproved:
		if !now.Before(op.ExpiresAt) {
			return StatusExpired
		}
		if op.Status == StatusApproving {
			return StatusPending
		}
	}
	return op.Status
}

// PollOperation is a device asking how its operation stands, with the
// operation's secret. Pending: the status only. Approved: the credentials,
// exactly once (the operation is then delivered; a later poll gets
// ErrAlreadyDelivered). Rejected, expired: ErrOperationRejected,
// ErrOperationExpired. The status is returned with each of these errors.
func (s *Service) PollOperation(ctx context.Context, id, secret string) (*OperationStatus, error) {
	op, err := s.ops.GetProvisioningOperation(ctx, id)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], op.SecretHash) != 1 {
		return nil, ErrBadSecret
	}
	now := s.now()
	st := &OperationStatus{ID: op.ID, Status: effectiveStatus(op, now), ExpiresAt: op.ExpiresAt, Reason: op.Reason}
	switch st.Status {
	case StatusPending:
		return st, nil
	case StatusRejected:
		return st, ErrOperationRejected
	case StatusExpired:
		return st, ErrOperationExpired
	case StatusDelivered:
		st.DeviceID, st.DeviceType = op.DeviceID, op.DeviceType
		return st, ErrAlreadyDelivered
	}
	// Approved: exactly one poll wins the delivery.
	sealed, err := s.ops.DeliverProvisioningOperation(ctx, id, now)
	if err != nil {
		return nil, fmt.Errorf("deliver operation %s: %w", id, err)
	}
	st.DeviceID, st.DeviceType = op.DeviceID, op.DeviceType
	if sealed == nil {
		st.Status = StatusDelivered
		return st, ErrAlreadyDelivered
	}
	plain, err := open(secret, sealed)
	if err != nil {
		return nil, fmt.Errorf("deliver operation %s: %w", id, err)
	}
	var creds events.Credentials
	if err := json.Unmarshal(plain, &creds); err != nil {
		return nil, fmt.Errorf("deliver operation %s: %w", id, err)
	}
	st.Status, st.Credentials = StatusApproved, &creds
	s.log.Info("provisioning credentials delivered", "operation_id", id, "device_id", op.DeviceID)
	return st, nil
}

// ListOperations lists operations, newest first: status "" for all,
// StatusPending for those waiting for an operator (with their
// verification codes). limit 0 is 100.
func (s *Service) ListOperations(ctx context.Context, status string, limit int) ([]Operation, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	ops, err := s.ops.ListProvisioningOperations(ctx, status, limit)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := ops[:0]
	for _, op := range ops {
		op.Status = effectiveStatus(&op, now)
		if status == StatusPending && op.Status != StatusPending {
			continue
		}
		out = append(out, op)
	}
	return out, nil
}

// ListPending lists the operations waiting for an operator.
func (s *Service) ListPending(ctx context.Context) ([]Operation, error) {
	return s.ListOperations(ctx, StatusPending, 0)
}

// GetOperation returns an operation as the operator sees it.
func (s *Service) GetOperation(ctx context.Context, id string) (*Operation, error) {
	op, err := s.ops.GetProvisioningOperation(ctx, id)
	if err != nil {
		return nil, err
	}
	op.Status = effectiveStatus(op, s.now())
	return op, nil
}

// ApproveOperation approves a pending operation: the device is provisioned
// (device_provisioned fires, via token, with its credentials in process)
// with the token's type, group and tags, under req.DeviceID, or the id the
// device asked for, or one the hub picks. It fails with
// ErrOperationExpired, ErrOperationRejected, ErrOperationDecided,
// ErrOperationBusy, or the registry's errors (registry.ErrExists: pick
// another id); after a failure the operation is pending again.
func (s *Service) ApproveOperation(ctx context.Context, id string, req ApproveRequest) (*Operation, error) {
	if req.DeviceID != "" && !registry.ValidID(req.DeviceID) {
		return nil, fmt.Errorf("%w: device_id %q: must be %s", ErrInvalid, req.DeviceID, registry.IDRule)
	}
	return s.approve(ctx, id, req.DeviceID)
}

func (s *Service) approve(ctx context.Context, id, deviceID string) (*Operation, error) {
	now := s.now()
	ok, err := s.ops.ClaimProvisioningOperation(ctx, id, now, now.Add(-claimTimeout))
	if err != nil {
		return nil, fmt.Errorf("approve operation %s: %w", id, err)
	}
	if !ok {
		return nil, s.whyNot(ctx, id, now)
	}
	op, err := s.ops.GetProvisioningOperation(ctx, id)
	if err == nil {
		op, err = s.provision(ctx, op, deviceID, now)
	}
	if err != nil {
		if rerr := s.ops.ReleaseProvisioningOperation(context.WithoutCancel(ctx), id); rerr != nil {
			err = errors.Join(err, fmt.Errorf("release operation %s: %w", id, rerr))
		}
		return nil, err
	}
	return op, nil
}

// provision provisions the device of a claimed operation, sealing its
// credentials into the operation in the same transaction.
func (s *Service) provision(ctx context.Context, op *Operation, deviceID string, now time.Time) (*Operation, error) {
	if deviceID == "" {
		deviceID = op.RequestedDeviceID
	}
	if deviceID == "" {
		deviceID = "dev-" + strings.ToLower(randomHex(6))
	}
	deliverBy := now.Add(s.opts.OperationTTL)
	_, err := s.reg.Provision(ctx, registry.ProvisionRequest{
		ID: deviceID, Type: op.DeviceType, Group: op.Group, Tags: op.Tags, Via: events.ViaToken,
		Also: func(ch *commit.Change, creds events.Credentials) error {
			plain, err := json.Marshal(creds)
			if err != nil {
				return err
			}
			sealed, err := seal(op.PublicKey, plain)
			if err != nil {
				return err
			}
			ch.Ops = append(ch.Ops, &Approval{Operation: &OperationApproval{ID: op.ID, DeviceID: deviceID, Sealed: sealed, DeliverBy: deliverBy, At: now}})
			return nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("approve operation %s: %w", op.ID, err)
	}
	s.log.Info("provisioning operation approved", "operation_id", op.ID, "device_id", deviceID, "type", op.DeviceType)
	op.Status, op.DeviceID, op.ExpiresAt, op.DecidedAt = StatusApproved, deviceID, deliverBy, &now
	op.Sealed = nil
	return op, nil
}

// RejectOperation rejects a pending operation; the device's next poll gets
// ErrOperationRejected with the reason.
func (s *Service) RejectOperation(ctx context.Context, id string, req RejectRequest) (*Operation, error) {
	if len(req.Reason) > 512 {
		return nil, fmt.Errorf("%w: reason longer than 512 bytes", ErrInvalid)
	}
	now := s.now()
	ok, err := s.ops.RejectProvisioningOperation(ctx, id, req.Reason, now, now.Add(-claimTimeout))
	if err != nil {
		return nil, fmt.Errorf("reject operation %s: %w", id, err)
	}
	if !ok {
		return nil, s.whyNot(ctx, id, now)
	}
	s.log.Info("provisioning operation rejected", "operation_id", id, "reason", req.Reason)
	return s.GetOperation(ctx, id)
}

// whyNot explains why an operation could not be claimed.
func (s *Service) whyNot(ctx context.Context, id string, now time.Time) error {
	op, err := s.ops.GetProvisioningOperation(ctx, id)
	if err != nil {
		return err
	}
	switch effectiveStatus(op, now) {
	case StatusExpired:
		return fmt.Errorf("operation %s: %w", id, ErrOperationExpired)
	case StatusRejected:
		return fmt.Errorf("operation %s: %w", id, ErrOperationRejected)
	case StatusPending: // approving, claimed recently
		return fmt.Errorf("operation %s: %w", id, ErrOperationBusy)
	}
	return fmt.Errorf("operation %s is %s: %w", id, op.Status, ErrOperationDecided)
}
