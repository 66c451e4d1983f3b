package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// deviceRegistryColumns are the registry columns of devices (migration
// 00002), read after deviceColumns.
const deviceRegistryColumns = `, location, firmware_version, hardware_version, management_ip`

// deviceExtra receives deviceRegistryColumns.
type deviceExtra struct {
	loc        []byte
	fw, hw, ip string
}

func (x *deviceExtra) dest() []any { return []any{&x.loc, &x.fw, &x.hw, &x.ip} }

func (x *deviceExtra) apply(d *registry.Device) error {
	d.FirmwareVersion, d.HardwareVersion, d.ManagementIP = x.fw, x.hw, x.ip
	if len(x.loc) > 0 && string(x.loc) != "null" {
		d.Location = &registry.Location{}
		if err := json.Unmarshal(x.loc, d.Location); err != nil {
			return fmt.Errorf("decode location of %s: %w", d.ID, err)
		}
	}
	return nil
}

// credentialColumns are the registry columns of credentials, read by
// AllCredentials after its own.
const credentialColumns = `, c.prev_password_hash, c.prev_api_key_hash, c.prev_until, c.revoked_at IS NOT NULL, c.cert_fingerprint`

func credentialDest(c *registry.Credentials) []any {
	return []any{&c.PrevPasswordHash, &c.PrevAPIKeyHash, &c.PrevUntil, &c.Revoked, &c.CertFingerprint}
}

// CreateGroup creates a group, or fails with registry.ErrGroupExists.
func (s *Store) CreateGroup(ctx context.Context, g registry.Group) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO device_groups (id, name, created_at, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`,
		g.ID, g.Name, g.CreatedAt, g.UpdatedAt)
	if err != nil {
		return fmt.Errorf("create group %s: %w", g.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return registry.ErrGroupExists
	}
	return nil
}

// RenameGroup renames a group, or fails with registry.ErrGroupNotFound.
func (s *Store) RenameGroup(ctx context.Context, id, name string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE device_groups SET name = $2, updated_at = $3 WHERE id = $1`, id, name, at)
	if err != nil {
		return fmt.Errorf("rename group %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return registry.ErrGroupNotFound
	}
	return nil
}

const groupQuery = `SELECT g.id, g.name, g.created_at, g.updated_at, (SELECT count(*) FROM devices d WHERE d.grp = g.id) FROM device_groups g`

func scanGroup(row pgx.Row) (registry.Group, error) {
	var g registry.Group
	err := row.Scan(&g.ID, &g.Name, &g.CreatedAt, &g.UpdatedAt, &g.Devices)
	g.CreatedAt, g.UpdatedAt = g.CreatedAt.UTC(), g.UpdatedAt.UTC()
	return g, err
}

// GetGroup returns a group with its device count.
func (s *Store) GetGroup(ctx context.Context, id string) (*registry.Group, error) {
	g, err := scanGroup(s.pool.QueryRow(ctx, groupQuery+` WHERE g.id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("get group %s: %w", id, registry.ErrGroupNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get group %s: %w", id, err)
	}
	return &g, nil
}

// ListGroups lists every group by id.
func (s *Store) ListGroups(ctx context.Context) ([]registry.Group, error) {
	rows, err := s.pool.Query(ctx, groupQuery+` ORDER BY g.id`)
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
// exists is what commitTx knows of the batch's devices.
func commitRegistry(ctx context.Context, tx pgx.Tx, batch []*commit.Change, exists map[string]bool) error {
	now := time.Now().UTC()
	for _, ch := range batch {
		if ch.Err != nil || ch.Duplicate {
			continue
		}
		if nd := ch.NewDevice; nd != nil && nd.Replace {
			// Re-provisioning ends an overlap and a revocation.
			if _, err := tx.Exec(ctx, `UPDATE credentials SET prev_password_hash = NULL, prev_api_key_hash = NULL,
				prev_until = NULL, revoked_at = NULL WHERE device_id = $1`, ch.DeviceID); err != nil {
				return fmt.Errorf("reset credentials of %s: %w", ch.DeviceID, err)
			}
		}
		if ch.Registry != nil {
			if err := registryChange(ctx, tx, ch, exists, now); err != nil {
				return err
			}
		}
	}
	return nil
}

func deviceExists(ctx context.Context, tx pgx.Tx, id string, exists map[string]bool) (bool, error) {
	if exists[id] {
		return true, nil
	}
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM devices WHERE id = $1`, id).Scan(&one)
	if errNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up device %s: %w", id, err)
	}
	exists[id] = true
	return true, nil
}

func registryChange(ctx context.Context, tx pgx.Tx, ch *commit.Change, exists map[string]bool, now time.Time) error {
	r, id := ch.Registry, ch.DeviceID
	if r.Fields != nil || r.Credentials != nil || r.RetireOld || r.Cert != nil {
		ok, err := deviceExists(ctx, tx, id, exists)
		if err != nil {
			return err
		}
		if !ok {
			ch.Err = commit.ErrDeviceNotFound
			return nil
		}
	}
	if len(r.Import) > 0 {
		done, err := importDevices(ctx, tx, ch, exists)
		if err != nil || !done {
			return err
		}
	}
	for _, g := range r.Groups {
		if _, err := tx.Exec(ctx, `INSERT INTO device_groups (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT (id) DO NOTHING`,
			g.ID, g.Name, now); err != nil {
			return fmt.Errorf("create group %s: %w", g.ID, err)
		}
	}
	if r.Fields != nil {
		if err := updateFields(ctx, tx, id, r.Fields, now); err != nil {
			return err
		}
	}
	if c := r.Credentials; c != nil {
		var err error
		if c.Revoke {
			_, err = tx.Exec(ctx, `UPDATE credentials SET password_hash = '', api_key_hash = '', prev_password_hash = NULL,
				prev_api_key_hash = NULL, prev_until = NULL, revoked_at = $2 WHERE device_id = $1`, id, now)
		} else {
			keep := !c.OldUntil.IsZero()
			var until *time.Time
			if keep {
				until = &c.OldUntil
			}
			_, err = tx.Exec(ctx, `UPDATE credentials SET
				prev_password_hash = CASE WHEN $2 AND revoked_at IS NULL THEN password_hash END,
				prev_api_key_hash = CASE WHEN $2 AND revoked_at IS NULL THEN api_key_hash END,
				prev_until = CASE WHEN revoked_at IS NULL THEN $3::timestamptz END,
				mqtt_username = $4, password_hash = $5, api_key_hash = $6, revoked_at = NULL, created_at = $7
				WHERE device_id = $1`, id, keep, until, c.MQTTUsername, c.PasswordHash, c.APIKeyHash, now)
		}
		if err != nil {
			return fmt.Errorf("change credentials of %s: %w", id, err)
		}
	}
	if r.RetireOld {
		if _, err := tx.Exec(ctx, `UPDATE credentials SET prev_password_hash = NULL, prev_api_key_hash = NULL, prev_until = NULL
			WHERE device_id = $1`, id); err != nil {
			return fmt.Errorf("retire old credentials of %s: %w", id, err)
		}
	}
	if r.Cert != nil {
		var fp []byte
		if len(r.Cert.Fingerprint) > 0 {
			fp = r.Cert.Fingerprint
		}
		if _, err := tx.Exec(ctx, `UPDATE credentials SET cert_fingerprint = $2 WHERE device_id = $1`, id, fp); err != nil {
			return fmt.Errorf("pin certificate of %s: %w", id, err)
		}
	}
	if len(r.RegistrationKey) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO registration_keys (key_hash, device_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			r.RegistrationKey, id, now); err != nil {
			return fmt.Errorf("bind registration key of %s: %w", id, err)
		}
	}
	if op := r.Operation; op != nil {
		if _, err := tx.Exec(ctx, `UPDATE provisioning_operations SET status = 'approved', device_id = $2, sealed = $3,
			expires_at = $4, decided_at = $5 WHERE id = $1`, op.ID, op.DeviceID, op.Sealed, op.DeliverBy, op.At); err != nil {
			return fmt.Errorf("approve operation %s: %w", op.ID, err)
		}
	}
	return nil
}

// importDevices creates the devices of an import under a savepoint: all of
// them, or none (done false, ch.Err set) when one exists already.
func importDevices(ctx context.Context, tx pgx.Tx, ch *commit.Change, exists map[string]bool) (done bool, err error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("import: %w", err)
	}
	defer func() {
		if !done {
			if rerr := sp.Rollback(ctx); rerr != nil && err == nil {
				err = fmt.Errorf("import: %w", rerr)
			}
		}
	}()
	now := time.Now().UTC()
	for i := range ch.Registry.Import {
		d := &ch.Registry.Import[i]
		one := &commit.Change{DeviceID: d.ID, NewDevice: &d.NewDevice}
		if err := provision(ctx, sp, one); err != nil {
			return false, err
		}
		if one.Err != nil {
			ch.Err = fmt.Errorf("%w: %s", one.Err, d.ID)
			return false, nil
		}
		if d.Fields != nil {
			if err := updateFields(ctx, sp, d.ID, d.Fields, now); err != nil {
				return false, err
			}
		}
	}
	if err := sp.Commit(ctx); err != nil {
		return false, fmt.Errorf("import: %w", err)
	}
	for _, d := range ch.Registry.Import {
		exists[d.ID] = true
	}
	return true, nil
}

// updateFields sets the fields of f that are not nil.
func updateFields(ctx context.Context, tx pgx.Tx, id string, f *commit.DeviceFields, now time.Time) error {
	var set []string
	args := []any{id}
	add := func(col string, v any) {
		args = append(args, v)
		set = append(set, col+" = $"+strconv.Itoa(len(args)))
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
		set[len(set)-1] += "::jsonb"
	}
	if f.Location != nil {
		add("location", nullJSON(f.Location))
		set[len(set)-1] += "::jsonb"
	}
	if f.Metadata != nil {
		add("metadata", nullJSON(f.Metadata))
		set[len(set)-1] += "::jsonb"
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
	if _, err := tx.Exec(ctx, `UPDATE devices SET `+strings.Join(set, ", ")+` WHERE id = $1`, args...); err != nil {
		return fmt.Errorf("update device %s: %w", id, err)
	}
	return nil
}

// nullJSON binds JSON as text, and "null" as NULL.
func nullJSON(b []byte) *string {
	if string(b) == "null" {
		return nil
	}
	s := string(b)
	return &s
}
