package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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

// InsertDevice implements registry.TxStore; false when another node
// created the device since the lookup.
func (t *txn) InsertDevice(ctx context.Context, id string, nd *registry.NewDevice) (bool, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	ok, err := insertDevice(ctx, tx, id, nd)
	if ok {
		t.exists[id] = true
	}
	return ok, err
}

func insertDevice(ctx context.Context, tx pgx.Tx, id string, nd *registry.NewDevice) (bool, error) {
	tags, meta, err := deviceJSON(id, nd)
	if err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO devices (id, type, name, grp, tags, metadata, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
		ON CONFLICT (id) DO NOTHING`, id, nd.Type, nd.Name, nd.Group, tags, meta, nd.CreatedAt)
	if err != nil {
		return false, fmt.Errorf("insert device %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, storeCredentials(ctx, tx, id, nd)
}

// ReplaceDevice implements registry.TxStore; false when another node
// removed the device since the lookup.
func (t *txn) ReplaceDevice(ctx context.Context, id string, nd *registry.NewDevice) (bool, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	tags, meta, err := deviceJSON(id, nd)
	if err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, `UPDATE devices SET type = $2, name = $3, grp = $4, tags = $5, metadata = $6, updated_at = $7 WHERE id = $1`,
		id, nd.Type, nd.Name, nd.Group, tags, meta, nd.CreatedAt)
	if err != nil {
		return false, fmt.Errorf("replace device %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	if err := storeCredentials(ctx, tx, id, nd); err != nil {
		return false, err
	}
	// Re-provisioning ends an overlap and a revocation.
	if _, err := tx.Exec(ctx, `UPDATE credentials SET prev_password_hash = NULL, prev_api_key_hash = NULL,
		prev_until = NULL, revoked_at = NULL WHERE device_id = $1`, id); err != nil {
		return false, fmt.Errorf("reset credentials of %s: %w", id, err)
	}
	return true, nil
}

func deviceJSON(id string, nd *registry.NewDevice) (tags, meta []byte, err error) {
	tags = []byte("[]")
	if len(nd.Tags) > 0 {
		if tags, err = json.Marshal(nd.Tags); err != nil {
			return nil, nil, fmt.Errorf("encode tags of %s: %w", id, err)
		}
	}
	if len(nd.Metadata) > 0 {
		meta = nd.Metadata
	}
	return tags, meta, nil
}

func storeCredentials(ctx context.Context, tx pgx.Tx, id string, nd *registry.NewDevice) error {
	_, err := tx.Exec(ctx, `INSERT INTO credentials (device_id, mqtt_username, password_hash, api_key_hash, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (device_id) DO UPDATE SET mqtt_username = excluded.mqtt_username, password_hash = excluded.password_hash,
			api_key_hash = excluded.api_key_hash, created_at = excluded.created_at`,
		id, nd.MQTTUsername, nd.PasswordHash, nd.APIKeyHash, nd.CreatedAt)
	if err != nil {
		return fmt.Errorf("store credentials of %s: %w", id, err)
	}
	return nil
}

// ImportDevices implements registry.TxStore under a savepoint: all of the
// devices, or none when one exists already.
func (t *txn) ImportDevices(ctx context.Context, devs []registry.ImportedDevice) (exists string, err error) {
	tx, err := t.db(ctx)
	if err != nil {
		return "", err
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return "", err
	}
	done := false
	defer func() {
		if !done {
			if rerr := sp.Rollback(ctx); rerr != nil && err == nil {
				err = rerr
			}
		}
	}()
	for i := range devs {
		d := &devs[i]
		ok, err := insertDevice(ctx, sp, d.ID, &d.NewDevice)
		if err != nil {
			return "", err
		}
		if !ok {
			return d.ID, nil
		}
		if d.Fields != nil {
			if err := updateFields(ctx, sp, d.ID, d.Fields, t.now); err != nil {
				return "", err
			}
		}
	}
	if err := sp.Commit(ctx); err != nil {
		return "", err
	}
	done = true
	for _, d := range devs {
		t.exists[d.ID] = true
	}
	return "", nil
}

// CreateGroups implements registry.TxStore.
func (t *txn) CreateGroups(ctx context.Context, groups []registry.NewGroup) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	for _, g := range groups {
		if _, err := tx.Exec(ctx, `INSERT INTO device_groups (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT (id) DO NOTHING`,
			g.ID, g.Name, t.now); err != nil {
			return fmt.Errorf("create group %s: %w", g.ID, err)
		}
	}
	return nil
}

// UpdateDevice implements registry.TxStore.
func (t *txn) UpdateDevice(ctx context.Context, id string, f *registry.DeviceFields) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	return updateFields(ctx, tx, id, f, t.now)
}

// ChangeCredentials implements registry.TxStore.
func (t *txn) ChangeCredentials(ctx context.Context, id string, c *registry.CredentialChange) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	if c.Revoke {
		_, err = tx.Exec(ctx, `UPDATE credentials SET password_hash = '', api_key_hash = '', prev_password_hash = NULL,
			prev_api_key_hash = NULL, prev_until = NULL, revoked_at = $2 WHERE device_id = $1`, id, t.now)
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
			WHERE device_id = $1`, id, keep, until, c.MQTTUsername, c.PasswordHash, c.APIKeyHash, t.now)
	}
	if err != nil {
		return fmt.Errorf("change credentials of %s: %w", id, err)
	}
	return nil
}

// RetireOldCredentials implements registry.TxStore.
func (t *txn) RetireOldCredentials(ctx context.Context, id string) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE credentials SET prev_password_hash = NULL, prev_api_key_hash = NULL, prev_until = NULL
		WHERE device_id = $1`, id); err != nil {
		return fmt.Errorf("retire old credentials of %s: %w", id, err)
	}
	return nil
}

// PinCertificate implements registry.TxStore.
func (t *txn) PinCertificate(ctx context.Context, id string, fp []byte) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE credentials SET cert_fingerprint = $2 WHERE device_id = $1`, id, fp); err != nil {
		return fmt.Errorf("pin certificate of %s: %w", id, err)
	}
	return nil
}

// PatchDevices implements registry.TxStore. The update is queued and sent
// with the events. Devices are updated in id order so that concurrent
// nodes lock rows in the same order and cannot deadlock. A patch that
// only moves last_seen by less than registry.SeenResolution past the
// value this node last wrote for its device is left out
// (registry.SeenCache).
func (t *txn) PatchDevices(ctx context.Context, ids []string, patches []registry.DevicePatch) error {
	ids, patches, t.written = t.seen.Filter(ids, patches, t.written)
	if len(ids) == 0 {
		return nil
	}
	ord := make([]int, len(ids))
	for i := range ord {
		ord[i] = i
	}
	slices.SortFunc(ord, func(a, b int) int { return strings.Compare(ids[a], ids[b]) })
	sorted := make([]string, len(ids))
	ls := make([]*time.Time, len(ids))
	st := make([]*string, len(ids))
	cn := make([]*bool, len(ids))
	mt := make([]*string, len(ids))
	sg := make([]*int64, len(ids))
	nd := make([]*string, len(ids))
	for i, j := range ord {
		p := &patches[j]
		sorted[i], ls[i], st[i], cn[i], nd[i] = ids[j], p.LastSeen, p.Status, p.Connected, p.Node
		if p.Metrics != nil {
			m := string(p.Metrics)
			mt[i] = &m
		}
		if p.Session != 0 {
			g := int64(p.Session)
			sg[i] = &g
		}
	}
	t.queued.Queue(`UPDATE devices d SET
			last_seen = coalesce(u.ls, d.last_seen),
			status = coalesce(u.st, d.status),
			connected = coalesce(u.cn, d.connected),
			metrics = coalesce(u.mt::jsonb, d.metrics),
			session_gen = coalesce(u.sg, d.session_gen),
			node = coalesce(u.nd, d.node),
			updated_at = now()
		FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bool[], $5::text[], $6::bigint[], $7::text[]) AS u(id, ls, st, cn, mt, sg, nd)
		WHERE d.id = u.id AND (u.sg IS NULL OR d.session_gen IS NULL OR u.sg >= d.session_gen)`, sorted, ls, st, cn, mt, sg, nd)
	return nil
}

// DeviceSessions implements registry.TxStore. It locks the rows as the
// patch's UPDATE would (FOR NO KEY UPDATE, which leaves inserts that
// reference the device free) and in the same id order, only earlier, so
// that a newer session committed by another node waits until this
// batch's verdict on its older one is committed.
func (t *txn) DeviceSessions(ctx context.Context, ids []string) ([]uint64, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return nil, err
	}
	at := make(map[string]int, len(ids))
	for i, id := range ids {
		at[id] = i
	}
	gens := make([]uint64, len(ids))
	rows, err := tx.Query(ctx, `SELECT id, coalesce(session_gen, 0) FROM devices WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, ids)
	if err != nil {
		return nil, err
	}
	var id string
	var g int64
	_, err = pgx.ForEachRow(rows, []any{&id, &g}, func() error {
		gens[at[id]] = uint64(g)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return gens, nil
}

// updateFields sets the fields of f that are not nil.
func updateFields(ctx context.Context, tx pgx.Tx, id string, f *registry.DeviceFields, now time.Time) error {
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
