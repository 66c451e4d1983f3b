package provisioning

import (
	"context"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// approvalDomain writes provisioning's part of the change that provisions
// a device (see commit.Op). Ranks: see docs/ARCHITECTURE.md, "Adding a
// domain".
var approvalDomain = &commit.Domain{Name: "provisioning", Rank: 35, Write: writeApprovals}

// TxStore is what provisioning's operations need of a commit transaction.
// The transaction of every backend implements it.
type TxStore interface {
	// BindRegistrationKey binds a key hash to a device unless it is bound
	// already.
	BindRegistrationKey(ctx context.Context, keyHash []byte, deviceID string) error
	// ApproveOperation marks a claimed operation approved with its sealed
	// credentials.
	ApproveOperation(ctx context.Context, a *OperationApproval) error
}

// Approval is provisioning's part of the change that provisions a device:
// the hardware key it self-registered with, and the operation it was
// approved by. Both are optional.
type Approval struct {
	// RegistrationKey binds the SHA-256 hash of a hardware key to the
	// device, for self-registration. A key already bound stays bound to
	// its device.
	RegistrationKey []byte
	// Operation records the approval of a provisioning operation, in the
	// same transaction as the device it provisions.
	Operation *OperationApproval
}

// OperationApproval marks a claimed provisioning operation approved.
type OperationApproval struct {
	ID        string
	DeviceID  string
	Sealed    []byte    // the credentials, encrypted for the device
	DeliverBy time.Time // the device must fetch them before this
	At        time.Time
}

func (*Approval) Domain() *commit.Domain { return approvalDomain }

func writeApprovals(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	for _, p := range ops {
		if !p.Change.Live() {
			continue
		}
		a := p.Op.(*Approval)
		if len(a.RegistrationKey) > 0 {
			if err := s.BindRegistrationKey(ctx, a.RegistrationKey, p.Change.DeviceID); err != nil {
				return fmt.Errorf("bind registration key of %s: %w", p.Change.DeviceID, err)
			}
		}
		if a.Operation != nil {
			if err := s.ApproveOperation(ctx, a.Operation); err != nil {
				return fmt.Errorf("approve operation %s: %w", a.Operation.ID, err)
			}
		}
	}
	return nil
}
