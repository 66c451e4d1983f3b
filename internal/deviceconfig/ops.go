package deviceconfig

import (
	"context"
	"fmt"

	"github.com/devicehub/devicehub/internal/commit"
)

// configDomain writes configuration management's ops (see commit.Op).
// Ranks: see docs/ARCHITECTURE.md, "Adding a domain".
var configDomain = &commit.Domain{Name: "configuration", Rank: 41, Write: writeOps}

// TxStore is what configuration management needs of a commit
// transaction. The transaction of every backend implements it.
type TxStore interface {
	PutTemplate(ctx context.Context, t *Template) error
	DeleteTemplate(ctx context.Context, id string) error
	PutGroupConfig(ctx context.Context, g *GroupConfig) error
	PutDeviceConfig(ctx context.Context, c *DeviceConfig) error
	// AddConfigHistory appends a rendered configuration to its device's
	// history and keeps only the newest keep entries.
	AddConfigHistory(ctx context.Context, h *HistoryEntry, keep int) error
	PutManagement(ctx context.Context, m *Management) error
	// SetObserverCursor stores how far Observe followed the event log (it
	// never moves back).
	SetObserverCursor(ctx context.Context, seq int64) error
}

// Op is one write of configuration management; every part is optional.
// Device and Management need the change's device to exist.
type Op struct {
	Template       *Template
	DeleteTemplate string
	Group          *GroupConfig
	Device         *DeviceConfig
	History        *HistoryEntry
	Keep           int // history entries kept per device
	Management     *Management
	ObserverCursor int64 // > 0: the Seq of the last event Observe handled
}

// Domain implements commit.Op.
func (*Op) Domain() *commit.Domain { return configDomain }

// NeedsDevice implements commit.DeviceNeeder.
func (o *Op) NeedsDevice() bool { return o.Device != nil || o.Management != nil || o.History != nil }

func writeOps(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	for _, p := range ops {
		if !p.Change.Live() {
			continue
		}
		o := p.Op.(*Op)
		if o.Template != nil {
			if err := s.PutTemplate(ctx, o.Template); err != nil {
				return fmt.Errorf("put template %s: %w", o.Template.ID, err)
			}
		}
		if o.DeleteTemplate != "" {
			if err := s.DeleteTemplate(ctx, o.DeleteTemplate); err != nil {
				return fmt.Errorf("delete template %s: %w", o.DeleteTemplate, err)
			}
		}
		if o.Group != nil {
			if err := s.PutGroupConfig(ctx, o.Group); err != nil {
				return fmt.Errorf("put group config %s: %w", o.Group.GroupID, err)
			}
		}
		if o.Device != nil {
			if err := s.PutDeviceConfig(ctx, o.Device); err != nil {
				return fmt.Errorf("put config of %s: %w", o.Device.DeviceID, err)
			}
		}
		if o.History != nil {
			keep := o.Keep
			if keep <= 0 {
				keep = 1
			}
			if err := s.AddConfigHistory(ctx, o.History, keep); err != nil {
				return fmt.Errorf("config history of %s: %w", o.History.DeviceID, err)
			}
		}
		if o.Management != nil {
			if err := s.PutManagement(ctx, o.Management); err != nil {
				return fmt.Errorf("management of %s: %w", o.Management.DeviceID, err)
			}
		}
		if o.ObserverCursor > 0 {
			if err := s.SetObserverCursor(ctx, o.ObserverCursor); err != nil {
				return fmt.Errorf("config observer cursor: %w", err)
			}
		}
	}
	return nil
}
