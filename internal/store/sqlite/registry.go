package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// deviceRegistryColumns are the registry columns of devices (migration
// 00002), read after deviceColumns.
const deviceRegistryColumns = `, location, firmware_version, hardware_version, management_ip`

// deviceExtra receives deviceRegistryColumns.
type deviceExtra struct {
	loc        sql.NullString
	fw, hw, ip string
}

func (x *deviceExtra) dest() []any { return []any{&x.loc, &x.fw, &x.hw, &x.ip} }

func (x *deviceExtra) apply(d *registry.Device) error {
	d.FirmwareVersion, d.HardwareVersion, d.ManagementIP = x.fw, x.hw, x.ip
	if x.loc.Valid && x.loc.String != "" && x.loc.String != "null" {
		d.Location = &registry.Location{}
		if err := json.Unmarshal([]byte(x.loc.String), d.Location); err != nil {
			return fmt.Errorf("decode location of %s: %w", d.ID, err)
		}
	}
	return nil
}

// credentialColumns are the registry columns of credentials, read by
// AllCredentials after its own.
const credentialColumns = `, c.prev_password_hash, c.prev_api_key_hash, c.prev_until, c.revoked_at IS NOT NULL, c.cert_fingerprint`

type credentialExtra struct {
	prevUntil sql.NullInt64
}

func (x *credentialExtra) dest(c *registry.Credentials) []any {
	return []any{&c.PrevPasswordHash, &c.PrevAPIKeyHash, &x.prevUntil, &c.Revoked, &c.CertFingerprint}
}

func (x *credentialExtra) apply(c *registry.Credentials) {
	if x.prevUntil.Valid {
		t := micros(x.prevUntil.Int64)
		c.PrevUntil = &t
	}
}

// CreateGroup creates a group, or fails with registry.ErrGroupExists.
func (s *Store) CreateGroup(ctx context.Context, g registry.Group) error {
	res, err := s.w.ExecContext(ctx, `INSERT INTO device_groups (id, name, created_at, updated_at) VALUES (?,?,?,?) ON CONFLICT (id) DO NOTHING`,
		g.ID, g.Name, g.CreatedAt.UnixMicro(), g.UpdatedAt.UnixMicro())
	if err != nil {
		return fmt.Errorf("create group %s: %w", g.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return registry.ErrGroupExists
	}
	return nil
}

// RenameGroup renames a group, or fails with registry.ErrGroupNotFound.
func (s *Store) RenameGroup(ctx context.Context, id, name string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE device_groups SET name = ?, updated_at = ? WHERE id = ?`, name, at.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("rename group %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return registry.ErrGroupNotFound
	}
	return nil
}

const groupQuery = `SELECT g.id, g.name, g.created_at, g.updated_at, (SELECT count(*) FROM devices d WHERE d.grp = g.id) FROM device_groups g`

func scanGroup(sc interface{ Scan(...any) error }) (registry.Group, error) {
	var g registry.Group
	var created, updated int64
	err := sc.Scan(&g.ID, &g.Name, &created, &updated, &g.Devices)
	g.CreatedAt, g.UpdatedAt = micros(created), micros(updated)
	return g, err
}

// GetGroup returns a group with its device count.
func (s *Store) GetGroup(ctx context.Context, id string) (*registry.Group, error) {
	g, err := scanGroup(s.r.QueryRowContext(ctx, groupQuery+` WHERE g.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get group %s: %w", id, registry.ErrGroupNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get group %s: %w", id, err)
	}
	return &g, nil
}

// ListGroups lists every group by id.
func (s *Store) ListGroups(ctx context.Context) ([]registry.Group, error) {
	rows, err := s.r.QueryContext(ctx, groupQuery+` ORDER BY g.id`)
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	defer rows.Close()
	out := []registry.Group{}
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			return nil, fmt.Errorf("list groups: %w", err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return out, nil
}

// commitRegistry writes the registry parts of a batch (see
// commit.RegistryChange), after the batch's NewDevices and messages.
func (w *writeState) commitRegistry(ctx context.Context, batch []*commit.Change, now int64) error {
	for _, ch := range batch {
		if ch.Err != nil || ch.Duplicate {
			continue
		}
		if nd := ch.NewDevice; nd != nil && nd.Replace {
			// Re-provisioning ends an overlap and a revocation.
			if _, err := w.tx.ExecContext(ctx, `UPDATE credentials SET prev_password_hash = NULL, prev_api_key_hash = NULL,
				prev_until = NULL, revoked_at = NULL WHERE device_id = ?`, ch.DeviceID); err != nil {
				return fmt.Errorf("reset credentials of %s: %w", ch.DeviceID, err)
			}
		}
		if ch.Registry != nil {
			if err := w.registryChange(ctx, ch, now); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *writeState) exists(ctx context.Context, id string) (bool, error) {
	if _, ok := w.key(id); ok {
		return true, nil
	}
	var k int64
	err := w.tx.QueryRowContext(ctx, `SELECT key FROM devices WHERE id = ?`, id).Scan(&k)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up device %s: %w", id, err)
	}
	w.known[id] = k
	return true, nil
}

func (w *writeState) registryChange(ctx context.Context, ch *commit.Change, now int64) error {
	r, id := ch.Registry, ch.DeviceID
	if r.Fields != nil || r.Credentials != nil || r.RetireOld || r.Cert != nil {
		ok, err := w.exists(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			ch.Err = commit.ErrDeviceNotFound
			return nil
		}
	}
	for _, d := range r.Import {
		ok, err := w.exists(ctx, d.ID)
		if err != nil {
			return err
		}
		if ok {
			ch.Err = fmt.Errorf("%w: %s", commit.ErrDeviceExists, d.ID)
			return nil
		}
	}
	for _, g := range r.Groups {
		if _, err := w.tx.ExecContext(ctx, `INSERT INTO device_groups (id, name, created_at, updated_at) VALUES (?,?,?,?) ON CONFLICT (id) DO NOTHING`,
			g.ID, g.Name, now, now); err != nil {
			return fmt.Errorf("create group %s: %w", g.ID, err)
		}
	}
	for i := range r.Import {
		d := &r.Import[i]
		if _, ok := w.key(d.ID); ok {
			ch.Err = fmt.Errorf("%w: %s", commit.ErrDeviceExists, d.ID)
			return errors.New("import: a device appears twice") // the service refuses this before
		}
		if err := w.provision(ctx, d.ID, &d.NewDevice, now); err != nil {
			return err
		}
		if d.Fields != nil {
			if err := w.updateFields(ctx, d.ID, d.Fields, now); err != nil {
				return err
			}
		}
	}
	if r.Fields != nil {
		if err := w.updateFields(ctx, id, r.Fields, now); err != nil {
			return err
		}
	}
	if c := r.Credentials; c != nil {
		var err error
		if c.Revoke {
			_, err = w.tx.ExecContext(ctx, `UPDATE credentials SET password_hash = x'', api_key_hash = x'', prev_password_hash = NULL,
				prev_api_key_hash = NULL, prev_until = NULL, revoked_at = ? WHERE device_id = ?`, now, id)
		} else {
			keep, until := !c.OldUntil.IsZero(), any(nil)
			if keep {
				until = c.OldUntil.UnixMicro()
			}
			_, err = w.tx.ExecContext(ctx, `UPDATE credentials SET
				prev_password_hash = CASE WHEN ? AND revoked_at IS NULL THEN password_hash END,
				prev_api_key_hash = CASE WHEN ? AND revoked_at IS NULL THEN api_key_hash END,
				prev_until = CASE WHEN revoked_at IS NULL THEN ? END,
				mqtt_username = ?, password_hash = ?, api_key_hash = ?, revoked_at = NULL, created_at = ?
				WHERE device_id = ?`, keep, keep, until, c.MQTTUsername, c.PasswordHash, c.APIKeyHash, now, id)
		}
		if err != nil {
			return fmt.Errorf("change credentials of %s: %w", id, err)
		}
	}
	if r.RetireOld {
		if _, err := w.tx.ExecContext(ctx, `UPDATE credentials SET prev_password_hash = NULL, prev_api_key_hash = NULL, prev_until = NULL
			WHERE device_id = ?`, id); err != nil {
			return fmt.Errorf("retire old credentials of %s: %w", id, err)
		}
	}
	if r.Cert != nil {
		var fp any
		if len(r.Cert.Fingerprint) > 0 {
			fp = r.Cert.Fingerprint
		}
		if _, err := w.tx.ExecContext(ctx, `UPDATE credentials SET cert_fingerprint = ? WHERE device_id = ?`, fp, id); err != nil {
			return fmt.Errorf("pin certificate of %s: %w", id, err)
		}
	}
	if len(r.RegistrationKey) > 0 {
		if _, err := w.tx.ExecContext(ctx, `INSERT INTO registration_keys (key_hash, device_id, created_at) VALUES (?,?,?) ON CONFLICT DO NOTHING`,
			r.RegistrationKey, id, now); err != nil {
			return fmt.Errorf("bind registration key of %s: %w", id, err)
		}
	}
	if op := r.Operation; op != nil {
		if _, err := w.tx.ExecContext(ctx, `UPDATE provisioning_operations SET status = 'approved', device_id = ?, sealed = ?,
			expires_at = ?, decided_at = ? WHERE id = ?`,
			op.DeviceID, op.Sealed, op.DeliverBy.UnixMicro(), op.At.UnixMicro(), op.ID); err != nil {
			return fmt.Errorf("approve operation %s: %w", op.ID, err)
		}
	}
	return nil
}

// updateFields sets the fields of f that are not nil.
func (w *writeState) updateFields(ctx context.Context, id string, f *commit.DeviceFields, now int64) error {
	var set []string
	var args []any
	add := func(col string, v any) {
		set = append(set, col+" = ?")
		args = append(args, v)
	}
	if f.Name != nil {
		add("name", *f.Name)
	}
	if f.Group != nil {
		add("grp", *f.Group)
	}
	if f.Tags != nil {
		tags := []byte("[]")
		if len(*f.Tags) > 0 {
			var err error
			if tags, err = json.Marshal(*f.Tags); err != nil {
				return fmt.Errorf("encode tags of %s: %w", id, err)
			}
		}
		add("tags", string(tags))
	}
	if f.Location != nil {
		add("location", nullJSON(f.Location))
	}
	if f.Metadata != nil {
		add("metadata", nullJSON(f.Metadata))
	}
	if f.FirmwareVersion != nil {
		add("firmware_version", *f.FirmwareVersion)
	}
	if f.HardwareVersion != nil {
		add("hardware_version", *f.HardwareVersion)
	}
	if f.ManagementIP != nil {
		add("management_ip", *f.ManagementIP)
	}
	if f.Disabled != nil {
		add("disabled", *f.Disabled)
	}
	if len(set) == 0 {
		return nil
	}
	add("updated_at", now)
	args = append(args, id)
	if _, err := w.tx.ExecContext(ctx, `UPDATE devices SET `+strings.Join(set, ", ")+` WHERE id = ?`, args...); err != nil {
		return fmt.Errorf("update device %s: %w", id, err)
	}
	return nil
}

// nullJSON binds JSON as text, and "null" as NULL.
func nullJSON(b []byte) any {
	if string(b) == "null" {
		return nil
	}
	return string(b)
}
