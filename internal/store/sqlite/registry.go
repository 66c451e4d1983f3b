package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

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

// InsertDevice implements registry.TxStore.
func (t *txn) InsertDevice(ctx context.Context, id string, nd *registry.NewDevice) (bool, error) {
	tags, err := deviceTags(id, nd.Tags)
	if err != nil {
		return false, err
	}
	created := nd.CreatedAt.UnixMicro()
	var k int64
	err = t.tx.QueryRowContext(ctx, `INSERT INTO devices (id, type, name, grp, tags, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?) RETURNING key`,
		id, nd.Type, nd.Name, nd.Group, tags, jsonText(nd.Metadata), created, created).Scan(&k)
	if err != nil {
		return false, fmt.Errorf("insert device %s: %w", id, err)
	}
	t.known[id] = k
	return true, t.storeCredentials(ctx, id, nd)
}

// ReplaceDevice implements registry.TxStore.
func (t *txn) ReplaceDevice(ctx context.Context, id string, nd *registry.NewDevice) (bool, error) {
	k, ok := t.key(id)
	if !ok {
		return false, nil
	}
	tags, err := deviceTags(id, nd.Tags)
	if err != nil {
		return false, err
	}
	if _, err := t.tx.ExecContext(ctx, `UPDATE devices SET type = ?, name = ?, grp = ?, tags = ?, metadata = ?, updated_at = ? WHERE key = ?`,
		nd.Type, nd.Name, nd.Group, tags, jsonText(nd.Metadata), nd.CreatedAt.UnixMicro(), k); err != nil {
		return false, fmt.Errorf("replace device %s: %w", id, err)
	}
	if t.s.snap.Load() != nil {
		if t.types == nil {
			t.types = map[string]string{}
		}
		t.types[id] = nd.Type
	}
	if err := t.storeCredentials(ctx, id, nd); err != nil {
		return false, err
	}
	// Re-provisioning ends an overlap and a revocation.
	if _, err := t.tx.ExecContext(ctx, `UPDATE credentials SET prev_password_hash = NULL, prev_api_key_hash = NULL,
		prev_until = NULL, revoked_at = NULL WHERE device_id = ?`, id); err != nil {
		return false, fmt.Errorf("reset credentials of %s: %w", id, err)
	}
	return true, nil
}

// deviceTags encodes the tags of a device.
func deviceTags(id string, tags []string) (string, error) {
	s, err := encodeTags(tags)
	if err != nil {
		return "", fmt.Errorf("encode tags of %s: %w", id, err)
	}
	return s, nil
}

func (t *txn) storeCredentials(ctx context.Context, id string, nd *registry.NewDevice) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO credentials (device_id, mqtt_username, password_hash, api_key_hash, created_at) VALUES (?,?,?,?,?)
		ON CONFLICT (device_id) DO UPDATE SET mqtt_username = excluded.mqtt_username, password_hash = excluded.password_hash,
			api_key_hash = excluded.api_key_hash, created_at = excluded.created_at`,
		id, nd.MQTTUsername, nd.PasswordHash, nd.APIKeyHash, nd.CreatedAt.UnixMicro())
	if err != nil {
		return fmt.Errorf("store credentials of %s: %w", id, err)
	}
	return nil
}

// ImportDevices implements registry.TxStore: nothing is written unless
// every device is new (the single writer makes the check hold).
func (t *txn) ImportDevices(ctx context.Context, devs []registry.ImportedDevice) (string, error) {
	for _, d := range devs {
		ok, err := t.DeviceExists(ctx, d.ID)
		if err != nil {
			return "", err
		}
		if ok {
			return d.ID, nil
		}
	}
	for i := range devs {
		d := &devs[i]
		if _, ok := t.key(d.ID); ok {
			return "", fmt.Errorf("device %s appears twice", d.ID) // the service refuses this before
		}
		if _, err := t.InsertDevice(ctx, d.ID, &d.NewDevice); err != nil {
			return "", err
		}
		if d.Fields != nil {
			if err := t.UpdateDevice(ctx, d.ID, d.Fields); err != nil {
				return "", err
			}
		}
	}
	return "", nil
}

// CreateGroups implements registry.TxStore.
func (t *txn) CreateGroups(ctx context.Context, groups []registry.NewGroup) error {
	for _, g := range groups {
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO device_groups (id, name, created_at, updated_at) VALUES (?,?,?,?) ON CONFLICT (id) DO NOTHING`,
			g.ID, g.Name, t.now, t.now); err != nil {
			return fmt.Errorf("create group %s: %w", g.ID, err)
		}
	}
	return nil
}

// ChangeCredentials implements registry.TxStore.
func (t *txn) ChangeCredentials(ctx context.Context, id string, c *registry.CredentialChange) error {
	var err error
	if c.Revoke {
		_, err = t.tx.ExecContext(ctx, `UPDATE credentials SET password_hash = x'', api_key_hash = x'', prev_password_hash = NULL,
			prev_api_key_hash = NULL, prev_until = NULL, revoked_at = ? WHERE device_id = ?`, t.now, id)
	} else {
		keep, until := !c.OldUntil.IsZero(), any(nil)
		if keep {
			until = c.OldUntil.UnixMicro()
		}
		_, err = t.tx.ExecContext(ctx, `UPDATE credentials SET
			prev_password_hash = CASE WHEN ? AND revoked_at IS NULL THEN password_hash END,
			prev_api_key_hash = CASE WHEN ? AND revoked_at IS NULL THEN api_key_hash END,
			prev_until = CASE WHEN revoked_at IS NULL THEN ? END,
			mqtt_username = ?, password_hash = ?, api_key_hash = ?, revoked_at = NULL, created_at = ?
			WHERE device_id = ?`, keep, keep, until, c.MQTTUsername, c.PasswordHash, c.APIKeyHash, t.now, id)
	}
	if err != nil {
		return fmt.Errorf("change credentials of %s: %w", id, err)
	}
	return nil
}

// RetireOldCredentials implements registry.TxStore.
func (t *txn) RetireOldCredentials(ctx context.Context, id string) error {
	if _, err := t.tx.ExecContext(ctx, `UPDATE credentials SET prev_password_hash = NULL, prev_api_key_hash = NULL, prev_until = NULL
		WHERE device_id = ?`, id); err != nil {
		return fmt.Errorf("retire old credentials of %s: %w", id, err)
	}
	return nil
}

// PinCertificate implements registry.TxStore.
func (t *txn) PinCertificate(ctx context.Context, id string, fp []byte) error {
	var v any
	if len(fp) > 0 {
		v = fp
	}
	if _, err := t.tx.ExecContext(ctx, `UPDATE credentials SET cert_fingerprint = ? WHERE device_id = ?`, v, id); err != nil {
		return fmt.Errorf("pin certificate of %s: %w", id, err)
	}
	return nil
}

// PatchDevices implements registry.TxStore, in one statement. A patch
// that only moves last_seen by less than registry.SeenResolution past the
// value last written for its device is left out (registry.SeenCache).
func (t *txn) PatchDevices(ctx context.Context, ids []string, patches []registry.DevicePatch) error {
	ids, patches, t.seen = t.s.seen.Filter(ids, patches, t.seen)
	if len(ids) == 0 {
		return nil
	}
	args := t.s.args.take(len(ids) * 6)
	for i, id := range ids {
		k, ok := t.key(id)
		if !ok {
			return fmt.Errorf("device %s to patch is not known", id)
		}
		p := &patches[i]
		var ls, st, cn, mt any
		if p.LastSeen != nil {
			ls = p.LastSeen.UnixMicro()
		}
		if p.Status != nil {
			st = *p.Status
		}
		if p.Connected != nil {
			cn = *p.Connected
		}
		if p.Metrics != nil {
			mt = string(p.Metrics)
		}
		args = append(args, k, ls, st, cn, mt, t.now)
	}
	if err := t.s.patch.exec(ctx, t, args); err != nil {
		return err
	}
	// The sessions: only presence changes in cluster mode carry one (and
	// writeStates left out those older than the stored one), so the
	// readings' statement above stays as it was.
	for i, id := range ids {
		if g := patches[i].Session; g != 0 {
			k, _ := t.key(id)
			if _, err := t.tx.ExecContext(ctx, `UPDATE devices SET session_gen = ? WHERE key = ? AND (session_gen IS NULL OR session_gen <= ?)`, int64(g), k, int64(g)); err != nil {
				return fmt.Errorf("store session of %s: %w", id, err)
			}
		}
	}
	return nil
}

// DeviceSessions implements registry.TxStore. The one writer connection
// keeps them from changing.
func (t *txn) DeviceSessions(ctx context.Context, ids []string) ([]uint64, error) {
	gens := make([]uint64, len(ids))
	for i, id := range ids {
		k, ok := t.key(id)
		if !ok {
			return nil, fmt.Errorf("device %s to patch is not known", id)
		}
		var g sql.NullInt64
		if err := t.tx.QueryRowContext(ctx, `SELECT session_gen FROM devices WHERE key = ?`, k).Scan(&g); err != nil {
			return nil, fmt.Errorf("session of %s: %w", id, err)
		}
		gens[i] = uint64(g.Int64)
	}
	return gens, nil
}

// UpdateDevice implements registry.TxStore.
func (t *txn) UpdateDevice(ctx context.Context, id string, f *registry.DeviceFields) error {
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
	add("updated_at", t.now)
	args = append(args, id)
	if _, err := t.tx.ExecContext(ctx, `UPDATE devices SET `+strings.Join(set, ", ")+` WHERE id = ?`, args...); err != nil {
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
