package registry

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// ErrImportRefused: at least one line of an all-or-nothing import was
// refused, so nothing was created; the report says why for each line.
var ErrImportRefused = errors.New("import refused")

// MaxImportDevices bounds one import.
const MaxImportDevices = 10000

// ImportDevice is one device of an import (a CSV row or a JSON object).
type ImportDevice struct {
	ID              string         `json:"id"`
	Type            string         `json:"type"`
	Name            string         `json:"name,omitempty"`
	Group           string         `json:"group,omitempty"`
	Tags            []string       `json:"tags,omitempty"`
	Location        *Location      `json:"location,omitempty"`
	Metadata        map[string]any `json:"metadata,omitempty"`
	FirmwareVersion string         `json:"firmware_version,omitempty"`
	HardwareVersion string         `json:"hardware_version,omitempty"`
	ManagementIP    string         `json:"management_ip,omitempty"`

	line int
}

// ImportFile is the JSON form of an import: groups to create (with their
// names) and devices. A bare JSON array of devices is accepted too.
type ImportFile struct {
	Groups  []CreateGroupRequest `json:"groups,omitempty"`
	Devices []ImportDevice       `json:"devices"`
}

// Import outcomes of a line.
const (
	ImportCreated = "created"
	ImportRefused = "refused"
	// ImportNotCreated: the line was fine, but the import created nothing
	// because other lines were refused.
	ImportNotCreated = "not_created"
)

// ImportLine is the outcome of one line. Line counts from 1: the CSV line
// (the header is line 1), or the position of the device in the JSON list.
type ImportLine struct {
	Line        int                 `json:"line"`
	ID          string              `json:"id,omitempty"`
	Status      string              `json:"status"`
	Reason      string              `json:"reason,omitempty"`
	Credentials *events.Credentials `json:"credentials,omitempty"` // for created devices: shown once
}

// ImportReport says, line by line, what an import created and what it
// refused and why.
type ImportReport struct {
	Created int          `json:"created"`
	Refused int          `json:"refused"`
	Lines   []ImportLine `json:"lines"`
}

// ImportOptions tune an import.
type ImportOptions struct {
	// Partial creates the acceptable lines even if others are refused.
	// By default an import is all or nothing.
	Partial bool
}

// DecodeImportCSV reads devices from CSV with a header row naming the
// columns: id and type are required; name, group, tags (separated by ";"),
// firmware_version, hardware_version, management_ip, lat, lon,
// location (a description) and metadata (a JSON object) are optional.
func DecodeImportCSV(r io.Reader) ([]ImportDevice, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: csv header: %v", ErrInvalid, err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch h {
		case "id", "type", "name", "group", "tags", "firmware_version", "hardware_version", "management_ip",
			"lat", "lon", "location", "metadata":
		default:
			return nil, fmt.Errorf("%w: csv header: unknown column %q", ErrInvalid, h)
		}
		if _, dup := col[h]; dup {
			return nil, fmt.Errorf("%w: csv header: column %q twice", ErrInvalid, h)
		}
		col[h] = i
	}
	for _, need := range []string{"id", "type"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%w: csv header: no %q column", ErrInvalid, need)
		}
	}
	var out []ImportDevice
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			line := 0
			if errors.As(err, &pe) {
				line = pe.Line
			}
			return nil, fmt.Errorf("%w: csv line %d: %v", ErrInvalid, line, err)
		}
		line, _ := cr.FieldPos(0) // a record has at least one field
		if len(out) >= MaxImportDevices {
			return nil, fmt.Errorf("%w: more than %d devices", ErrInvalid, MaxImportDevices)
		}
		get := func(name string) string {
			i, ok := col[name]
			if !ok || i >= len(rec) {
				return ""
			}
			return strings.TrimSpace(rec[i])
		}
		d := ImportDevice{
			ID: get("id"), Type: get("type"), Name: get("name"), Group: get("group"),
			FirmwareVersion: get("firmware_version"), HardwareVersion: get("hardware_version"),
			ManagementIP: get("management_ip"), line: line,
		}
		if t := get("tags"); t != "" {
			for _, tag := range strings.Split(t, ";") {
				d.Tags = append(d.Tags, strings.TrimSpace(tag))
			}
		}
		// Cell errors are kept for validation, so that they are reported
		// with the line instead of failing the whole file.
		d.Metadata, d.Location = map[string]any{}, nil
		if m := get("metadata"); m != "" {
			if err := json.Unmarshal([]byte(m), &d.Metadata); err != nil {
				d.Metadata = map[string]any{badCell: "metadata is not a JSON object"}
			}
		}
		if len(d.Metadata) == 0 {
			d.Metadata = nil
		}
		lat, lon, desc := get("lat"), get("lon"), get("location")
		if lat != "" || lon != "" || desc != "" {
			la, err1 := strconv.ParseFloat(lat, 64)
			lo, err2 := strconv.ParseFloat(lon, 64)
			if err1 != nil || err2 != nil {
				la, lo = 1000, 1000 // out of range: refused with the line
			}
			d.Location = &Location{Lat: la, Lon: lo, Description: desc}
		}
		out = append(out, d)
	}
	return out, nil
}

// badCell marks metadata that could not be read from a CSV cell.
const badCell = "\x00bad"

// DecodeImportJSON reads an ImportFile, or a bare array of devices.
func DecodeImportJSON(b []byte) (ImportFile, error) {
	var f ImportFile
	trimmed := bytes.TrimSpace(b)
	var err error
	if len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(trimmed, &f.Devices)
	} else {
		err = json.Unmarshal(trimmed, &f)
	}
	if err != nil {
		return ImportFile{}, fmt.Errorf("%w: json: %v", ErrInvalid, err)
	}
	if len(f.Devices) > MaxImportDevices {
		return ImportFile{}, fmt.Errorf("%w: more than %d devices", ErrInvalid, MaxImportDevices)
	}
	for i := range f.Devices {
		f.Devices[i].line = i + 1
	}
	return f, nil
}

// ImportCSV imports devices from CSV (see DecodeImportCSV).
func (s *Service) ImportCSV(ctx context.Context, r io.Reader, opts ImportOptions) (*ImportReport, error) {
	devs, err := DecodeImportCSV(r)
	if err != nil {
		return nil, err
	}
	return s.Import(ctx, ImportFile{Devices: devs}, opts)
}

// ImportJSON imports devices from JSON (see DecodeImportJSON).
func (s *Service) ImportJSON(ctx context.Context, b []byte, opts ImportOptions) (*ImportReport, error) {
	f, err := DecodeImportJSON(b)
	if err != nil {
		return nil, err
	}
	return s.Import(ctx, f, opts)
}

// Import validates every device of f first, then creates them all (and
// their groups) in one transaction, or nothing: with ErrImportRefused when
// a line was refused (unless opts.Partial), or with the store's error. The
// report is returned in both cases. Each created device fires
// device_provisioned (via operator) with its credentials, which the report
// carries too: the only time they are seen.
func (s *Service) Import(ctx context.Context, f ImportFile, opts ImportOptions) (*ImportReport, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	rep := &ImportReport{Lines: make([]ImportLine, len(f.Devices))}
	groups := map[string]NewGroup{}
	for _, g := range f.Groups {
		if !ValidGroupID(g.ID) {
			return nil, fmt.Errorf("%w: group id %q: must be %s", ErrInvalid, g.ID, IDRule)
		}
		name := g.Name
		if name == "" {
			name = g.ID
		}
		if err := checkText("group name", name, 256); err != nil {
			return nil, err
		}
		groups[g.ID] = NewGroup{ID: g.ID, Name: name}
	}
	now := s.now().UTC()
	up := &Update{}
	ch := &commit.Change{Ops: []commit.Op{up}}
	seen := map[string]int{}
	type pending struct {
		i     int
		creds events.Credentials
	}
	var ok []pending
	for i, d := range f.Devices {
		l := &rep.Lines[i]
		l.Line, l.ID = d.line, d.ID
		if l.Line == 0 {
			l.Line = i + 1
		}
		nd, creds, err := s.importOne(d, now)
		if err == nil {
			if first, dup := seen[d.ID]; dup {
				err = fmt.Errorf("device %s is on line %d already", d.ID, rep.Lines[first].Line)
			}
		}
		if err != nil {
			l.Status, l.Reason = ImportRefused, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")
			rep.Refused++
			continue
		}
		seen[d.ID] = i
		if d.Group != "" {
			if _, ok := groups[d.Group]; !ok {
				groups[d.Group] = NewGroup{ID: d.Group, Name: d.Group}
			}
		}
		up.Import = append(up.Import, nd)
		ok = append(ok, pending{i, creds})
		ev, err := commit.NewEvent(events.Event{Type: events.DeviceProvisioned, Time: now, DeviceID: d.ID, DeviceType: d.Type,
			Args: &events.Provisioned{Via: events.ViaOperator, Credentials: &creds}})
		if err != nil {
			return nil, err
		}
		ch.Events = append(ch.Events, ev)
	}
	if rep.Refused > 0 && !opts.Partial {
		for _, p := range ok {
			rep.Lines[p.i].Status, rep.Lines[p.i].Reason = ImportNotCreated, "other lines were refused"
		}
		return rep, fmt.Errorf("%w: %d of %d lines", ErrImportRefused, rep.Refused, len(f.Devices))
	}
	if len(ok) == 0 && len(groups) == 0 {
		return rep, nil
	}
	for _, g := range groups {
		up.Groups = append(up.Groups, g)
	}
	if err := s.sub.Submit(ctx, ch); err != nil {
		for _, p := range ok {
			rep.Lines[p.i].Status, rep.Lines[p.i].Reason = ImportNotCreated, "the import failed"
		}
		return rep, fmt.Errorf("import: %w", storeErr(err))
	}
	s.mu.Lock()
	for _, nd := range up.Import {
		e := &entry{typ: nd.Type, username: nd.MQTTUsername}
		copy(e.pw[:], nd.PasswordHash)
		copy(e.key[:], nd.APIKeyHash)
		s.setLocked(nd.ID, e)
	}
	s.mu.Unlock()
	for _, p := range ok {
		c := p.creds
		rep.Lines[p.i].Status, rep.Lines[p.i].Credentials = ImportCreated, &c
		rep.Created++
	}
	s.log.Info("devices imported", "created", rep.Created, "refused", rep.Refused)
	return rep, nil
}

// importOne validates one device and builds its creation.
func (s *Service) importOne(d ImportDevice, now time.Time) (ImportedDevice, events.Credentials, error) {
	if !ValidID(d.ID) {
		return ImportedDevice{}, events.Credentials{}, fmt.Errorf("invalid device id %q: must be %s", d.ID, IDRule)
	}
	if _, err := s.types.Get(d.Type); err != nil {
		return ImportedDevice{}, events.Credentials{}, fmt.Errorf("type %q: %v", d.Type, err)
	}
	if _, exists := s.DeviceType(d.ID); exists {
		return ImportedDevice{}, events.Credentials{}, fmt.Errorf("device %s exists already", d.ID)
	}
	if _, bad := d.Metadata[badCell]; bad {
		return ImportedDevice{}, events.Credentials{}, errors.New("metadata is not a JSON object")
	}
	req := ProvisionRequest{ID: d.ID, Type: d.Type, Name: d.Name, Group: d.Group, Tags: d.Tags, Location: d.Location,
		FirmwareVersion: d.FirmwareVersion, HardwareVersion: d.HardwareVersion, ManagementIP: d.ManagementIP}
	fields, _, err := provisionFields(req)
	if err != nil {
		return ImportedDevice{}, events.Credentials{}, err
	}
	var meta []byte
	if d.Metadata != nil {
		if meta, err = json.Marshal(d.Metadata); err != nil {
			return ImportedDevice{}, events.Credentials{}, fmt.Errorf("metadata: %v", err)
		}
	}
	creds, pw, key := newCredentials(d.ID)
	nd := ImportedDevice{ID: d.ID, NewDevice: NewDevice{
		Type: d.Type, Name: d.Name, Group: d.Group, Tags: d.Tags, Metadata: meta,
		MQTTUsername: creds.MQTTUsername, PasswordHash: pw[:], APIKeyHash: key[:], CreatedAt: now,
	}}
	nd.Fields = fields
	return nd, creds, nil
}
