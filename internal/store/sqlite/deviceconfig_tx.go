package sqlite

import (
	"context"

	"github.com/devicehub/devicehub/internal/deviceconfig"
)

var _ deviceconfig.TxStore = (*txn)(nil)

// PutTemplate implements deviceconfig.TxStore.
func (t *txn) PutTemplate(ctx context.Context, tp *deviceconfig.Template) error {
	tx := t.tx
	return putTemplate(ctx, tx, tp)
}

// DeleteTemplate implements deviceconfig.TxStore.
func (t *txn) DeleteTemplate(ctx context.Context, id string) error {
	tx := t.tx
	return deleteTemplate(ctx, tx, id)
}

// PutGroupConfig implements deviceconfig.TxStore.
func (t *txn) PutGroupConfig(ctx context.Context, g *deviceconfig.GroupConfig) error {
	tx := t.tx
	return putGroupConfig(ctx, tx, g)
}

// PutDeviceConfig implements deviceconfig.TxStore.
func (t *txn) PutDeviceConfig(ctx context.Context, c *deviceconfig.DeviceConfig) error {
	tx := t.tx
	return putDeviceConfig(ctx, tx, c)
}

// AddConfigHistory implements deviceconfig.TxStore.
func (t *txn) AddConfigHistory(ctx context.Context, h *deviceconfig.HistoryEntry, keep int) error {
	tx := t.tx
	return addConfigHistory(ctx, tx, h, keep)
}

// SetObserverCursor implements deviceconfig.TxStore.
func (t *txn) SetObserverCursor(ctx context.Context, seq int64) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO config_observer (id, seq) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET seq = max(config_observer.seq, excluded.seq)`, seq)
	return err
}

// PutManagement implements deviceconfig.TxStore.
func (t *txn) PutManagement(ctx context.Context, m *deviceconfig.Management) error {
	tx := t.tx
	return putManagement(ctx, tx, m)
}
