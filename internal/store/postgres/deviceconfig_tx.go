package postgres

import (
	"context"

	"github.com/devicehub/devicehub/internal/deviceconfig"
)

var _ deviceconfig.TxStore = (*txn)(nil)

// PutTemplate implements deviceconfig.TxStore.
func (t *txn) PutTemplate(ctx context.Context, tp *deviceconfig.Template) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	return putTemplate(ctx, tx, tp)
}

// DeleteTemplate implements deviceconfig.TxStore.
func (t *txn) DeleteTemplate(ctx context.Context, id string) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	return deleteTemplate(ctx, tx, id)
}

// PutGroupConfig implements deviceconfig.TxStore.
func (t *txn) PutGroupConfig(ctx context.Context, g *deviceconfig.GroupConfig) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	return putGroupConfig(ctx, tx, g)
}

// PutDeviceConfig implements deviceconfig.TxStore.
func (t *txn) PutDeviceConfig(ctx context.Context, c *deviceconfig.DeviceConfig) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	return putDeviceConfig(ctx, tx, c)
}

// AddConfigHistory implements deviceconfig.TxStore.
func (t *txn) AddConfigHistory(ctx context.Context, h *deviceconfig.HistoryEntry, keep int) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	return addConfigHistory(ctx, tx, h, keep)
}

// SetObserverCursor implements deviceconfig.TxStore.
func (t *txn) SetObserverCursor(ctx context.Context, seq int64) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO config_observer (id, seq) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET seq = GREATEST(config_observer.seq, excluded.seq)`, seq)
	return err
}

// PutManagement implements deviceconfig.TxStore.
func (t *txn) PutManagement(ctx context.Context, m *deviceconfig.Management) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	return putManagement(ctx, tx, m)
}
