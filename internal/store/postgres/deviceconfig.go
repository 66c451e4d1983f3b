package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/deviceconfig"
)

var _ deviceconfig.Store = (*Store)(nil)

func utc(t time.Time) time.Time { return t.UTC() }

func docText(v any) (string, error) {
	b, err := deviceconfig.EncodeDoc(v)
	return string(b), err
}

// ListTemplates implements deviceconfig.Store.
func (s *Store) ListTemplates(ctx context.Context) ([]deviceconfig.Template, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, config, defaults::text, is_default, required, types::text, version, created_at, updated_at
		FROM config_templates ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var out []deviceconfig.Template
	for rows.Next() {
		var t deviceconfig.Template
		var cfg, defs, types string
		var created, updated time.Time
		if err := rows.Scan(&t.ID, &t.Name, &cfg, &defs, &t.Default, &t.Required, &types, &t.Version, &created, &updated); err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		if t.Config, err = deviceconfig.DecodeDoc([]byte(cfg)); err != nil {
			return nil, fmt.Errorf("template %s config: %w", t.ID, err)
		}
		if err := json.Unmarshal([]byte(defs), &t.Defaults); err != nil {
			return nil, fmt.Errorf("template %s defaults: %w", t.ID, err)
		}
		if err := json.Unmarshal([]byte(types), &t.Types); err != nil {
			return nil, fmt.Errorf("template %s types: %w", t.ID, err)
		}
		t.CreatedAt, t.UpdatedAt = utc(created), utc(updated)
		out = append(out, t)
	}
	return out, rows.Err()
}

// ListGroupConfigs implements deviceconfig.Store.
func (s *Store) ListGroupConfigs(ctx context.Context) ([]deviceconfig.GroupConfig, error) {
	rows, err := s.pool.Query(ctx, `SELECT group_id, templates::text, vars::text, updated_at FROM config_groups ORDER BY group_id`)
	if err != nil {
		return nil, fmt.Errorf("list group configs: %w", err)
	}
	defer rows.Close()
	var out []deviceconfig.GroupConfig
	for rows.Next() {
		var g deviceconfig.GroupConfig
		var tpl, vars string
		var updated time.Time
		if err := rows.Scan(&g.GroupID, &tpl, &vars, &updated); err != nil {
			return nil, fmt.Errorf("list group configs: %w", err)
		}
		if err := json.Unmarshal([]byte(tpl), &g.Templates); err != nil {
			return nil, fmt.Errorf("group %s templates: %w", g.GroupID, err)
		}
		if err := json.Unmarshal([]byte(vars), &g.Vars); err != nil {
			return nil, fmt.Errorf("group %s vars: %w", g.GroupID, err)
		}
		g.UpdatedAt = utc(updated)
		out = append(out, g)
	}
	return out, rows.Err()
}

const deviceConfigCols = `c.device_id, c.backend, c.templates, c.vars::text, c.overrides, c.status, c.error, c.status_since,
	c.checksum, c.applied_checksum, c.created_at, c.updated_at`

func scanDeviceConfig(sc interface{ Scan(...any) error }, extra ...any) (*deviceconfig.DeviceConfig, error) {
	var c deviceconfig.DeviceConfig
	var tpl, vars, over, status string
	var since, created, updated time.Time
	dst := append([]any{&c.DeviceID, &c.Backend, &tpl, &vars, &over, &status, &c.Error, &since,
		&c.Checksum, &c.AppliedChecksum, &created, &updated}, extra...)
	if err := sc.Scan(dst...); err != nil {
		return nil, err
	}
	if err := decodeConfigCols(&c, tpl, vars, over); err != nil {
		return nil, err
	}
	c.Status = deviceconfig.Status(status)
	c.StatusSince, c.CreatedAt, c.UpdatedAt = utc(since), utc(created), utc(updated)
	return &c, nil
}

func decodeConfigCols(c *deviceconfig.DeviceConfig, tpl, vars, over string) error {
	if err := json.Unmarshal([]byte(tpl), &c.Templates); err != nil {
		return fmt.Errorf("config of %s: templates: %w", c.DeviceID, err)
	}
	if err := json.Unmarshal([]byte(vars), &c.Vars); err != nil {
		return fmt.Errorf("config of %s: vars: %w", c.DeviceID, err)
	}
	o, err := deviceconfig.DecodeDoc([]byte(over))
	if err != nil {
		return fmt.Errorf("config of %s: overrides: %w", c.DeviceID, err)
	}
	c.Overrides = o
	return nil
}

// GetDeviceConfig implements deviceconfig.Store.
func (s *Store) GetDeviceConfig(ctx context.Context, deviceID string) (*deviceconfig.DeviceConfig, error) {
	var rendered []byte
	c, err := scanDeviceConfig(s.pool.QueryRow(ctx, `SELECT `+deviceConfigCols+`, c.rendered FROM device_configs c WHERE c.device_id = $1`, deviceID), &rendered)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("config of %s: %w", deviceID, deviceconfig.ErrNoConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("config of %s: %w", deviceID, err)
	}
	c.Rendered = rendered
	return c, nil
}

// ListDeviceConfigs implements deviceconfig.Store.
func (s *Store) ListDeviceConfigs(ctx context.Context, q deviceconfig.ListQuery) ([]deviceconfig.Row, error) {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	query := `SELECT ` + deviceConfigCols + `, coalesce(d.name, ''), coalesce(d.type, ''), coalesce(d.grp, ''), coalesce(d.management_ip, '')
		FROM device_configs c LEFT JOIN devices d ON d.id = c.device_id WHERE c.device_id > $1`
	args := []any{q.After}
	if q.Status != "" {
		args = append(args, string(q.Status))
		query += fmt.Sprintf(` AND c.status = $%d`, len(args))
	}
	if q.NotApplied {
		query += ` AND c.status <> 'applied'`
	}
	args = append(args, q.Limit)
	query += fmt.Sprintf(` ORDER BY c.device_id LIMIT $%d`, len(args))
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list device configs: %w", err)
	}
	defer rows.Close()
	var out []deviceconfig.Row
	for rows.Next() {
		var d deviceconfig.DeviceInfo
		c, err := scanDeviceConfig(rows, &d.Name, &d.Type, &d.Group, &d.ManagementIP)
		if err != nil {
			return nil, fmt.Errorf("list device configs: %w", err)
		}
		d.ID = c.DeviceID
		out = append(out, deviceconfig.Row{DeviceConfig: *c, Device: d})
	}
	return out, rows.Err()
}

// ConfigDevice implements deviceconfig.Store.
func (s *Store) ConfigDevice(ctx context.Context, deviceID string) (deviceconfig.DeviceInfo, error) {
	d := deviceconfig.DeviceInfo{ID: deviceID}
	err := s.pool.QueryRow(ctx, `SELECT name, type, grp, management_ip FROM devices WHERE id = $1`, deviceID).
		Scan(&d.Name, &d.Type, &d.Group, &d.ManagementIP)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("device %s: %w", deviceID, deviceconfig.ErrDeviceNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("device %s: %w", deviceID, err)
	}
	return d, nil
}

// ConfigHistory implements deviceconfig.Store.
func (s *Store) ConfigHistory(ctx context.Context, deviceID string) ([]deviceconfig.HistoryEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, checksum, backend, rendered, templates, vars::text, overrides, created_at
		FROM device_config_history WHERE device_id = $1 ORDER BY id DESC`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("config history of %s: %w", deviceID, err)
	}
	defer rows.Close()
	var out []deviceconfig.HistoryEntry
	for rows.Next() {
		h := deviceconfig.HistoryEntry{DeviceID: deviceID}
		var tpl, vars, over string
		var created time.Time
		if err := rows.Scan(&h.ID, &h.Checksum, &h.Backend, &h.Rendered, &tpl, &vars, &over, &created); err != nil {
			return nil, fmt.Errorf("config history of %s: %w", deviceID, err)
		}
		c := deviceconfig.DeviceConfig{DeviceID: deviceID}
		if err := decodeConfigCols(&c, tpl, vars, over); err != nil {
			return nil, err
		}
		h.Templates, h.Vars, h.Overrides, h.CreatedAt = c.Templates, c.Vars, c.Overrides, utc(created)
		out = append(out, h)
	}
	return out, rows.Err()
}

// GetManagement implements deviceconfig.Store.
func (s *Store) GetManagement(ctx context.Context, deviceID string) (*deviceconfig.Management, error) {
	m := deviceconfig.Management{DeviceID: deviceID}
	var working *bool
	var updated time.Time
	err := s.pool.QueryRow(ctx, `SELECT is_working, failure_reason, updated_at FROM device_management WHERE device_id = $1`, deviceID).
		Scan(&working, &m.FailureReason, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("management of %s: %w", deviceID, err)
	}
	m.IsWorking = working
	m.UpdatedAt = utc(updated)
	return &m, nil
}

// The writes of configuration management, inside a commit transaction.

func putTemplate(ctx context.Context, tx pgx.Tx, t *deviceconfig.Template) error {
	cfg, err := docText(t.Config)
	if err != nil {
		return err
	}
	defs, err := docText(nonNilVars(t.Defaults))
	if err != nil {
		return err
	}
	types, err := docText(nonNilList(t.Types))
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO config_templates (id, name, config, defaults, is_default, required, types, version, created_at, updated_at)
		VALUES ($1,$2,$3,$4::jsonb,$5,$6,$7::jsonb,$8,$9,$10) ON CONFLICT (id) DO UPDATE SET name = excluded.name, config = excluded.config,
		defaults = excluded.defaults, is_default = excluded.is_default, required = excluded.required, types = excluded.types,
		version = excluded.version, updated_at = excluded.updated_at`,
		t.ID, t.Name, cfg, defs, t.Default, t.Required, types, t.Version, t.CreatedAt, t.UpdatedAt)
	return err
}

func deleteTemplate(ctx context.Context, tx pgx.Tx, id string) error {
	_, err := tx.Exec(ctx, `DELETE FROM config_templates WHERE id = $1`, id)
	return err
}

func putGroupConfig(ctx context.Context, tx pgx.Tx, g *deviceconfig.GroupConfig) error {
	tpl, err := docText(nonNilList(g.Templates))
	if err != nil {
		return err
	}
	vars, err := docText(nonNilVars(g.Vars))
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO config_groups (group_id, templates, vars, updated_at) VALUES ($1,$2::jsonb,$3::jsonb,$4)
		ON CONFLICT (group_id) DO UPDATE SET templates = excluded.templates, vars = excluded.vars, updated_at = excluded.updated_at`,
		g.GroupID, tpl, vars, g.UpdatedAt)
	return err
}

func configCols(c *deviceconfig.DeviceConfig) (tpl, vars, over string, err error) {
	if tpl, err = docText(nonNilList(c.Templates)); err != nil {
		return
	}
	if vars, err = docText(nonNilVars(c.Vars)); err != nil {
		return
	}
	o := c.Overrides
	if o == nil {
		o = map[string]any{}
	}
	over, err = docText(o)
	return
}

func putDeviceConfig(ctx context.Context, tx pgx.Tx, c *deviceconfig.DeviceConfig) error {
	tpl, vars, over, err := configCols(c)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO device_configs (device_id, backend, templates, vars, overrides, status, error,
		status_since, checksum, rendered, applied_checksum, created_at, updated_at) VALUES ($1,$2,$3,$4::jsonb,$5,$6,$7,$8,$9,$10,$11,$12,$13)
		ON CONFLICT (device_id) DO UPDATE SET backend = excluded.backend, templates = excluded.templates, vars = excluded.vars,
		overrides = excluded.overrides, status = excluded.status, error = excluded.error, status_since = excluded.status_since,
		checksum = excluded.checksum, rendered = excluded.rendered, applied_checksum = excluded.applied_checksum,
		updated_at = excluded.updated_at`,
		c.DeviceID, c.Backend, tpl, vars, over, string(c.Status), c.Error, c.StatusSince, c.Checksum,
		c.Rendered, c.AppliedChecksum, c.CreatedAt, c.UpdatedAt)
	return err
}

func addConfigHistory(ctx context.Context, tx pgx.Tx, h *deviceconfig.HistoryEntry, keep int) error {
	c := deviceconfig.DeviceConfig{Templates: h.Templates, Vars: h.Vars, Overrides: h.Overrides}
	tpl, vars, over, err := configCols(&c)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO device_config_history (device_id, checksum, backend, rendered, templates, vars, overrides, created_at)
		VALUES ($1,$2,$3,$4,$5,$6::jsonb,$7,$8)`, h.DeviceID, h.Checksum, h.Backend, h.Rendered, tpl, vars, over, h.CreatedAt); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `DELETE FROM device_config_history WHERE device_id = $1 AND id NOT IN
		(SELECT id FROM device_config_history WHERE device_id = $2 ORDER BY id DESC LIMIT $3)`, h.DeviceID, h.DeviceID, keep)
	return err
}

// ObserverCursor implements deviceconfig.Store.
func (s *Store) ObserverCursor(ctx context.Context) (int64, bool, error) {
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT seq FROM config_observer WHERE id = 1`).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("config observer cursor: %w", err)
	}
	return seq, true, nil
}

func putManagement(ctx context.Context, tx pgx.Tx, m *deviceconfig.Management) error {
	var w any
	if m.IsWorking != nil {
		w = *m.IsWorking
	}
	_, err := tx.Exec(ctx, `INSERT INTO device_management (device_id, is_working, failure_reason, updated_at) VALUES ($1,$2,$3,$4)
		ON CONFLICT (device_id) DO UPDATE SET is_working = excluded.is_working, failure_reason = excluded.failure_reason,
		updated_at = excluded.updated_at`, m.DeviceID, w, m.FailureReason, m.UpdatedAt)
	return err
}

func nonNilVars(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNilList(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
