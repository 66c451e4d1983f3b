package commit

import (
	"context"
	"errors"
	"fmt"
)

// Fence names a lease and the token its holder took (internal/lease). A
// change that carries one is written only if the token is still the
// lease's current, unexpired token, checked in the batch's own
// transaction; otherwise the change alone fails with ErrFenced. Cluster
// mode fences the writes of single-owner work, so that a former owner
// that was paused past its lease (a long GC pause, a frozen VM) cannot
// write over its successor.
type Fence struct {
	Lease string
	Token int64
}

// ErrFenced: a fenced write whose lease has passed to another holder (or
// expired).
var ErrFenced = errors.New("fenced: the lease's token is no longer current (another node took over)")

type fenceKey struct{}

// WithFence returns ctx carrying f: the changes submitted with it (and
// the stores' own fenced writes, such as monitor cursors) are fenced.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceOf returns the fence ctx carries.
func FenceOf(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok
}

// FenceChecker is implemented by the transactions of backends that keep
// leases (PostgreSQL).
type FenceChecker interface {
	// FenceHeld reports whether f's token is its lease's current,
	// unexpired token, and keeps the lease from changing hands until the
	// transaction ends.
	FenceHeld(ctx context.Context, f Fence) (bool, error)
}

// checkFences fails the fenced changes of batch whose lease passed on;
// each fence is checked once per batch.
func checkFences(ctx context.Context, tx Tx, batch []*Change) error {
	var held map[Fence]bool
	for _, ch := range batch {
		if ch.Fence == nil || !ch.Live() {
			continue
		}
		ok, seen := held[*ch.Fence]
		if !seen {
			fc, isFC := tx.(FenceChecker)
			if !isFC {
				return fmt.Errorf("fenced change (lease %s) on a backend without leases (%T)", ch.Fence.Lease, tx)
			}
			var err error
			if ok, err = fc.FenceHeld(ctx, *ch.Fence); err != nil {
				return fmt.Errorf("check lease %s: %w", ch.Fence.Lease, err)
			}
			if held == nil {
				held = map[Fence]bool{}
			}
			held[*ch.Fence] = ok
		}
		if !ok {
			ch.Err = ErrFenced
		}
	}
	return nil
}
