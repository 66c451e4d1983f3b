package monitors

import (
	"context"
	"fmt"

	"github.com/devicehub/devicehub/internal/commit"
)

// monitorDomain writes monitor state changes through the write path, so
// that a status change and its monitor_status_changed event are one
// transaction. Ranks: docs/ARCHITECTURE.md, "Adding a domain".
var monitorDomain = &commit.Domain{Name: "monitors", Rank: 42, Write: writeMonitors}

// TxStore is what the monitors' ops need of a commit transaction. The
// transaction of every backend implements it.
type TxStore interface {
	// SetMonitorState writes a monitor's state: status, status reason,
	// last connect, last sent, failing since, updated at. False if the
	// monitor does not exist.
	SetMonitorState(ctx context.Context, m *Monitor) (bool, error)
}

// StateChange writes Monitor's state (not its definition, secrets or
// cursor). A change for a monitor that does not exist fails alone with
// ErrNotFound, and its events are dropped.
type StateChange struct {
	Monitor Monitor
}

// Domain implements commit.Op.
func (*StateChange) Domain() *commit.Domain { return monitorDomain }

func writeMonitors(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	for _, p := range ops {
		if !p.Change.Live() {
			continue
		}
		op := p.Op.(*StateChange)
		ok, err := s.SetMonitorState(ctx, &op.Monitor)
		if err != nil {
			return fmt.Errorf("set monitor %s state: %w", op.Monitor.ID, err)
		}
		if !ok {
			p.Change.Err = fmt.Errorf("monitor %s: %w", op.Monitor.ID, ErrNotFound)
		}
	}
	return nil
}

// Committer submits changes to the write path (*commit.Committer).
type Committer interface {
	Submit(ctx context.Context, ch *commit.Change) error
}
