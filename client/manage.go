package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Location is where a device is.
type Location struct {
	Lat         float64 `json:"lat"`
	Lon         float64 `json:"lon"`
	Description string  `json:"description,omitempty"`
}

// ProvisionDeviceByID provisions the device id (or, with Replace,
// re-provisions it: new credentials, the old ones stop working at once)
// with POST /api/v1/devices/{id}/provision; req.ID is ignored.
func (c *Client) ProvisionDeviceByID(ctx context.Context, id string, req ProvisionRequest) (*Provisioned, error) {
	body := struct {
		Type     string         `json:"type"`
		Name     string         `json:"name,omitempty"`
		Group    string         `json:"group,omitempty"`
		Tags     []string       `json:"tags,omitempty"`
		Metadata map[string]any `json:"metadata,omitempty"`
		Replace  bool           `json:"replace,omitempty"`
	}{req.Type, req.Name, req.Group, req.Tags, req.Metadata, req.Replace}
	var out Provisioned
	if err := c.do(ctx, http.MethodPost, devicePath(id)+"/provision", nil, body, &out); err != nil {
		return nil, fmt.Errorf("provision %s: %w", id, err)
	}
	return &out, nil
}

func devicePath(id string) string { return "/api/v1/devices/" + url.PathEscape(id) }

// UpdateRequest patches a device's registry fields; nil fields are left
// alone.
type UpdateRequest struct {
	Name  *string   `json:"name,omitempty"`
	Group *string   `json:"group,omitempty"` // "" takes the device out of its group
	Tags  *[]string `json:"tags,omitempty"`
	// Location replaces the location; a zero Location removes it.
	Location *Location `json:"location,omitempty"`
	// Metadata replaces the metadata; an empty map removes it.
	Metadata        map[string]any `json:"metadata,omitempty"`
	FirmwareVersion *string        `json:"firmware_version,omitempty"`
	HardwareVersion *string        `json:"hardware_version,omitempty"`
	ManagementIP    *string        `json:"management_ip,omitempty"` // "" removes it
}

type deviceAnswer struct {
	Device Device `json:"device"`
}

// UpdateDevice changes a device's registry fields and returns the device.
func (c *Client) UpdateDevice(ctx context.Context, id string, req UpdateRequest) (*Device, error) {
	var out deviceAnswer
	if err := c.do(ctx, http.MethodPatch, devicePath(id), nil, req, &out); err != nil {
		return nil, fmt.Errorf("update %s: %w", id, err)
	}
	return &out.Device, nil
}

func (c *Client) deviceAction(ctx context.Context, id, action string, body any) (*Device, error) {
	var out deviceAnswer
	if err := c.do(ctx, http.MethodPost, devicePath(id)+"/"+action, nil, body, &out); err != nil {
		return nil, fmt.Errorf("%s %s: %w", action, id, err)
	}
	return &out.Device, nil
}

type reasonBody struct {
	Reason string `json:"reason,omitempty"`
}

// DisableDevice disables a device: its connection is closed at once and it
// may not connect until enabled.
func (c *Client) DisableDevice(ctx context.Context, id, reason string) (*Device, error) {
	return c.deviceAction(ctx, id, "disable", reasonBody{reason})
}

// EnableDevice enables a disabled device.
func (c *Client) EnableDevice(ctx context.Context, id string) (*Device, error) {
	return c.deviceAction(ctx, id, "enable", nil)
}

// RevokeDevice revokes a device's credentials.
func (c *Client) RevokeDevice(ctx context.Context, id, reason string) (*Device, error) {
	return c.deviceAction(ctx, id, "revoke", reasonBody{reason})
}

// Rotated is the outcome of a credential rotation.
type Rotated struct {
	Credentials Credentials `json:"credentials"`
	// OldValidUntil is when the old credentials stop working at the
	// latest; nil: they stopped at once.
	OldValidUntil *time.Time `json:"old_valid_until,omitempty"`
}

// RotateDevice gives a device new credentials. overlap nil takes the hub's
// default; 0 ends the old credentials at once.
func (c *Client) RotateDevice(ctx context.Context, id string, overlap *time.Duration) (*Rotated, error) {
	var body any
	if overlap != nil {
		body = map[string]string{"overlap": overlap.String()}
	}
	var out Rotated
	if err := c.do(ctx, http.MethodPost, devicePath(id)+"/rotate", nil, body, &out); err != nil {
		return nil, fmt.Errorf("rotate %s: %w", id, err)
	}
	return &out, nil
}

// PinCertificate pins a client certificate's SHA-256 fingerprint (hex) to
// a device; "" removes the pin. It returns the pinned fingerprint.
func (c *Client) PinCertificate(ctx context.Context, id, fingerprint string) (string, error) {
	var out struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := c.do(ctx, http.MethodPut, devicePath(id)+"/certificate", nil, map[string]string{"fingerprint": fingerprint}, &out); err != nil {
		return "", fmt.Errorf("pin certificate of %s: %w", id, err)
	}
	return out.Fingerprint, nil
}

// ImportLine is the outcome of one line of an import.
type ImportLine struct {
	Line        int          `json:"line"`
	ID          string       `json:"id,omitempty"`
	Status      string       `json:"status"` // created, refused, not_created
	Reason      string       `json:"reason,omitempty"`
	Credentials *Credentials `json:"credentials,omitempty"`
}

// ImportReport says line by line what an import did.
type ImportReport struct {
	Created int          `json:"created"`
	Refused int          `json:"refused"`
	Lines   []ImportLine `json:"lines"`
}

// ErrImportRefused is returned (with the report) when an all-or-nothing
// import created nothing because lines were refused.
var ErrImportRefused = errors.New("import refused")

// ImportDevices imports devices from CSV (contentType text/csv) or JSON
// (application/json). With partial, acceptable lines are created even if
// others are refused. A refused import returns the report and an error
// wrapping ErrImportRefused and the API's 422.
func (c *Client) ImportDevices(ctx context.Context, body []byte, contentType string, partial bool) (*ImportReport, error) {
	u := c.base + "/api/v1/devices/import"
	if partial {
		u += "?partial=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnprocessableEntity:
		var rep ImportReport
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			return nil, fmt.Errorf("import: decode answer: %w", err)
		}
		return &rep, fmt.Errorf("%w: %d of %d lines refused: %w", ErrImportRefused, rep.Refused, len(rep.Lines),
			&Error{Status: resp.StatusCode, Code: "import_refused", Message: "import refused"})
	case resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("import: %w", readError(resp))
	}
	var rep ImportReport
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return nil, fmt.Errorf("import: decode answer: %w", err)
	}
	return &rep, nil
}

// Group is a device group.
type Group struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Devices   int       `json:"devices"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type groupAnswer struct {
	Group Group `json:"group"`
}

func groupPath(id string) string { return "/api/v1/groups/" + url.PathEscape(id) }

// CreateGroup creates a group; name "" is the id.
func (c *Client) CreateGroup(ctx context.Context, id, name string) (*Group, error) {
	var out groupAnswer
	body := map[string]string{"id": id}
	if name != "" {
		body["name"] = name
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/groups", nil, body, &out); err != nil {
		return nil, fmt.Errorf("create group %s: %w", id, err)
	}
	return &out.Group, nil
}

// RenameGroup changes a group's name.
func (c *Client) RenameGroup(ctx context.Context, id, name string) (*Group, error) {
	var out groupAnswer
	if err := c.do(ctx, http.MethodPatch, groupPath(id), nil, map[string]string{"name": name}, &out); err != nil {
		return nil, fmt.Errorf("rename group %s: %w", id, err)
	}
	return &out.Group, nil
}

// GetGroup returns a group.
func (c *Client) GetGroup(ctx context.Context, id string) (*Group, error) {
	var out groupAnswer
	if err := c.do(ctx, http.MethodGet, groupPath(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get group %s: %w", id, err)
	}
	return &out.Group, nil
}

// ListGroups lists the groups with their device counts.
func (c *Client) ListGroups(ctx context.Context) ([]Group, error) {
	var out struct {
		Groups []Group `json:"groups"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/groups", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return out.Groups, nil
}

// GroupDevices returns one page of a group's devices; after is the Next
// of the previous page.
func (c *Client) GroupDevices(ctx context.Context, id, after string, limit int) (*DeviceList, error) {
	q := url.Values{}
	set(q, "after", after)
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out DeviceList
	if err := c.do(ctx, http.MethodGet, groupPath(id)+"/devices", q, nil, &out); err != nil {
		return nil, fmt.Errorf("devices of group %s: %w", id, err)
	}
	return &out, nil
}
