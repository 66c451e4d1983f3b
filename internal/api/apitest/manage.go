package apitest

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/registry"
)

// The fake registry's management operations (api.Registry) are methods of
// Devices, over the same devices.

// Update patches a device's registry fields.
func (d *Devices) Update(_ context.Context, id string, req registry.UpdateRequest) (*registry.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev, ok := d.devices[id]
	if !ok {
		return nil, fmt.Errorf("update %s: %w", id, registry.ErrNotFound)
	}
	if req.Name != nil {
		dev.Name = *req.Name
	}
	if req.Group != nil {
		if *req.Group != "" && !registry.ValidGroupID(*req.Group) {
			return nil, fmt.Errorf("%w: group %q", registry.ErrInvalid, *req.Group)
		}
		dev.Group = *req.Group
		d.ensureGroupLocked(dev.Group)
	}
	if req.Tags != nil {
		dev.Tags = slices.Clone(*req.Tags)
	}
	if req.Location != nil {
		if *req.Location == (registry.Location{}) {
			dev.Location = nil
		} else {
			l := *req.Location
			dev.Location = &l
		}
	}
	if req.Metadata != nil {
		dev.Metadata = req.Metadata
		if len(req.Metadata) == 0 {
			dev.Metadata = nil
		}
	}
	if req.FirmwareVersion != nil {
		dev.FirmwareVersion = *req.FirmwareVersion
	}
	if req.HardwareVersion != nil {
		dev.HardwareVersion = *req.HardwareVersion
	}
	if req.ManagementIP != nil {
		dev.ManagementIP = *req.ManagementIP
	}
	d.devices[id] = dev
	return &dev, nil
}

// Disable disables a device.
func (d *Devices) Disable(_ context.Context, id, _ string) error { return d.setDisabled(id, true) }

// Enable enables a device.
func (d *Devices) Enable(_ context.Context, id string) error { return d.setDisabled(id, false) }

func (d *Devices) setDisabled(id string, v bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev, ok := d.devices[id]
	if !ok {
		return fmt.Errorf("disable %s: %w", id, registry.ErrNotFound)
	}
	dev.Disabled = v
	d.devices[id] = dev
	return nil
}

// Revoke removes a device's API keys.
func (d *Devices) Revoke(_ context.Context, id, _ string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.devices[id]; !ok {
		return fmt.Errorf("revoke %s: %w", id, registry.ErrNotFound)
	}
	for k, v := range d.keys {
		if v == id {
			delete(d.keys, k)
		}
	}
	return nil
}

// Rotate gives a device new credentials; Overlaps records the overlaps
// asked.
func (d *Devices) Rotate(_ context.Context, id string, overlap time.Duration) (registry.RotateResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.devices[id]; !ok {
		return registry.RotateResult{}, fmt.Errorf("rotate %s: %w", id, registry.ErrNotFound)
	}
	d.Overlaps = append(d.Overlaps, overlap)
	d.n++
	c := events.Credentials{MQTTUsername: id, MQTTPassword: fmt.Sprintf("pw-%d", d.n), APIKey: fmt.Sprintf("key-%s-%d", id, d.n)}
	d.keys[c.APIKey] = id
	res := registry.RotateResult{Credentials: c}
	if overlap > 0 {
		until := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).Add(overlap)
		res.OldValidUntil = &until
	}
	return res, nil
}

// PinCertificate records a device's pinned certificate fingerprint.
func (d *Devices) PinCertificate(_ context.Context, id string, fp [32]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.devices[id]; !ok {
		return fmt.Errorf("pin %s: %w", id, registry.ErrNotFound)
	}
	if d.Certs == nil {
		d.Certs = map[string][32]byte{}
	}
	d.Certs[id] = fp
	return nil
}

func (d *Devices) ensureGroupLocked(id string) {
	if id == "" {
		return
	}
	if d.groups == nil {
		d.groups = map[string]registry.Group{}
	}
	if _, ok := d.groups[id]; !ok {
		t := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
		d.groups[id] = registry.Group{ID: id, Name: id, CreatedAt: t, UpdatedAt: t}
	}
}

// CreateGroup creates a group.
func (d *Devices) CreateGroup(_ context.Context, req registry.CreateGroupRequest) (*registry.Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !registry.ValidGroupID(req.ID) {
		return nil, fmt.Errorf("%w: group id %q", registry.ErrInvalid, req.ID)
	}
	if _, ok := d.groups[req.ID]; ok {
		return nil, fmt.Errorf("create group %s: %w", req.ID, registry.ErrGroupExists)
	}
	d.ensureGroupLocked(req.ID)
	g := d.groups[req.ID]
	if req.Name != "" {
		g.Name = req.Name
	}
	d.groups[req.ID] = g
	return &g, nil
}

// RenameGroup renames a group.
func (d *Devices) RenameGroup(_ context.Context, id, name string) (*registry.Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.groups[id]
	if !ok {
		return nil, fmt.Errorf("rename group %s: %w", id, registry.ErrGroupNotFound)
	}
	g.Name = name
	d.groups[id] = g
	g.Devices = d.countLocked(id)
	return &g, nil
}

func (d *Devices) countLocked(group string) int {
	n := 0
	for _, dev := range d.devices {
		if dev.Group == group {
			n++
		}
	}
	return n
}

// GetGroup returns a group with its device count.
func (d *Devices) GetGroup(_ context.Context, id string) (*registry.Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.groups[id]
	if !ok {
		return nil, fmt.Errorf("group %s: %w", id, registry.ErrGroupNotFound)
	}
	g.Devices = d.countLocked(id)
	return &g, nil
}

// ListGroups lists the groups by id.
func (d *Devices) ListGroups(context.Context) ([]registry.Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]registry.Group, 0, len(d.groups))
	for _, g := range d.groups {
		g.Devices = d.countLocked(g.ID)
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ListGroupDevices lists a group's devices.
func (d *Devices) ListGroupDevices(ctx context.Context, id string, opts registry.ListOptions) ([]registry.Device, error) {
	if _, err := d.GetGroup(ctx, id); err != nil {
		return nil, err
	}
	opts.Group = id
	return d.List(ctx, opts)
}

// ImportCSV imports "id,type" lines after a header; a line with an
// unknown type or a known id is refused.
func (d *Devices) ImportCSV(ctx context.Context, r io.Reader, opts registry.ImportOptions) (*registry.ImportReport, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "id,type" {
		return nil, fmt.Errorf("%w: csv header: want id,type", registry.ErrInvalid)
	}
	var devs []registry.ImportDevice
	for _, l := range lines[1:] {
		id, typ, _ := strings.Cut(strings.TrimSpace(l), ",")
		devs = append(devs, registry.ImportDevice{ID: id, Type: typ})
	}
	return d.importDevices(ctx, devs, opts, 2)
}

// ImportJSON imports a JSON file (registry.DecodeImportJSON).
func (d *Devices) ImportJSON(ctx context.Context, b []byte, opts registry.ImportOptions) (*registry.ImportReport, error) {
	f, err := registry.DecodeImportJSON(b)
	if err != nil {
		return nil, err
	}
	return d.importDevices(ctx, f.Devices, opts, 1)
}

func (d *Devices) importDevices(ctx context.Context, devs []registry.ImportDevice, opts registry.ImportOptions, first int) (*registry.ImportReport, error) {
	rep := &registry.ImportReport{Lines: make([]registry.ImportLine, len(devs))}
	for i, dev := range devs {
		l := &rep.Lines[i]
		l.Line, l.ID = first+i, dev.ID
		_, err := d.Types.Get(dev.Type)
		d.mu.Lock()
		_, exists := d.devices[dev.ID]
		d.mu.Unlock()
		switch {
		case err != nil:
			l.Status, l.Reason = registry.ImportRefused, fmt.Sprintf("type %q: %v", dev.Type, err)
		case exists:
			l.Status, l.Reason = registry.ImportRefused, "device "+dev.ID+" exists already"
		default:
			l.Status = registry.ImportCreated
		}
		if l.Status == registry.ImportRefused {
			rep.Refused++
		}
	}
	if rep.Refused > 0 && !opts.Partial {
		for i := range rep.Lines {
			if rep.Lines[i].Status == registry.ImportCreated {
				rep.Lines[i].Status = registry.ImportNotCreated
			}
		}
		return rep, fmt.Errorf("%w: %d of %d lines", registry.ErrImportRefused, rep.Refused, len(devs))
	}
	for i, dev := range devs {
		if rep.Lines[i].Status != registry.ImportCreated {
			continue
		}
		c, err := d.Provision(ctx, registry.ProvisionRequest{ID: dev.ID, Type: dev.Type, Group: dev.Group})
		if err != nil {
			return nil, err
		}
		rep.Lines[i].Credentials = &c
		rep.Created++
	}
	return rep, nil
}
