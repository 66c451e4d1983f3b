package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/registry"
)

// registerManage registers the operations that manage one device beyond
// reading it: provisioning it by path, updating its registry fields,
// disabling, enabling, revoking, rotating, pinning a certificate, and the
// bulk import.
func (a *API) registerManage() {
	register(a, permOperator, huma.Operation{
		OperationID: "provisionDeviceByID", Method: http.MethodPost, Path: "/api/v1/devices/{id}/provision", Tags: []string{"devices"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Provision a device by id",
		Description: "Creates the device and answers its credentials: the only time they are shown. With replace, " +
			"re-provisions an existing device: new credentials, the old ones stop working at once and its connection is closed.",
	}, a.provisionByID)
	register(a, permOperator, huma.Operation{
		OperationID: "updateDevice", Method: http.MethodPatch, Path: "/api/v1/devices/{id}", Tags: []string{"devices"},
		Summary:     "Update a device's registry fields",
		Description: "Absent fields are left alone. A group that does not exist yet is created; \"\" takes the device out of its group.",
	}, a.updateDevice)
	register(a, permOperator, huma.Operation{
		OperationID: "disableDevice", Method: http.MethodPost, Path: "/api/v1/devices/{id}/disable", Tags: []string{"devices"},
		Summary:     "Disable a device",
		Description: "Its connection is closed at once, and it may not connect or post data until it is enabled again.",
	}, a.disableDevice)
	register(a, permOperator, huma.Operation{
		OperationID: "enableDevice", Method: http.MethodPost, Path: "/api/v1/devices/{id}/enable", Tags: []string{"devices"},
		Summary: "Enable a disabled device",
	}, a.enableDevice)
	register(a, permOperator, huma.Operation{
		OperationID: "revokeDevice", Method: http.MethodPost, Path: "/api/v1/devices/{id}/revoke", Tags: []string{"devices"},
		Summary: "Revoke a device's credentials",
		Description: "Its credentials stop working at once and its connection is closed; it cannot connect until it is " +
			"provisioned again (replace) or its credentials are rotated.",
	}, a.revokeDevice)
	register(a, permOperator, huma.Operation{
		OperationID: "rotateDevice", Method: http.MethodPost, Path: "/api/v1/devices/{id}/rotate", Tags: []string{"devices"},
		Summary: "Rotate a device's credentials",
		Description: "Answers new credentials (shown once). The old ones stay valid until the device first uses the new ones " +
			"or the overlap ends (default: the hub's provisioning.rotation_overlap; \"0s\": they stop at once).",
	}, a.rotateDevice)
	register(a, permOperator, huma.Operation{
		OperationID: "pinDeviceCertificate", Method: http.MethodPut, Path: "/api/v1/devices/{id}/certificate", Tags: []string{"devices"},
		Summary: "Pin a client certificate to a device",
		Description: "The SHA-256 fingerprint of the certificate's DER bytes, in hex (colons allowed). A TLS client " +
			"presenting it on the MQTT TLS listener authenticates as the device without a password. \"\" removes the pin.",
	}, a.pinCertificate)

	reg := a.huma.OpenAPI().Components.Schemas
	report := reg.Schema(reflect.TypeOf(ImportReport{}), true, "ImportReport")
	errSchema := reg.Schema(reflect.TypeOf(ErrorResponse{}), true, "ErrorResponse")
	register(a, permOperator, huma.Operation{
		OperationID: "importDevices", Method: http.MethodPost, Path: "/api/v1/devices/import", Tags: []string{"devices"},
		Summary: "Import devices from CSV or JSON",
		Description: "The body is CSV (Content-Type text/csv: a header row naming the columns; id and type required; name, group, " +
			"tags separated by ';', firmware_version, hardware_version, management_ip, lat, lon, location, metadata optional) or JSON " +
			"({\"groups\": [...], \"devices\": [...]} or a bare array of devices). The answer reports line by line; created devices " +
			"carry their credentials, shown only this once. By default an import is all or nothing: if a line is refused, nothing " +
			"is created and the answer is 422 with the report. With partial=true the acceptable lines are created.",
		RequestBody: &huma.RequestBody{
			Required: true,
			Content: map[string]*huma.MediaType{
				"text/csv":         {Schema: &huma.Schema{Type: "string"}},
				"application/json": {Schema: &huma.Schema{Type: "object", Description: "{\"groups\": [{\"id\", \"name\"}], \"devices\": [{\"id\", \"type\", ...}]}"}},
			},
		},
		SkipValidateBody: true,
		Responses: map[string]*huma.Response{
			"default": {Description: "Error", Content: map[string]*huma.MediaType{"application/json": {Schema: errSchema}}},
			"422": {Description: "Refused: nothing was created; the report says why for each line.",
				Content: map[string]*huma.MediaType{"application/json": {Schema: report}}},
		},
	}, a.importDevices)
}

// ProvisionByIDRequest is the body of POST /api/v1/devices/{id}/provision.
type ProvisionByIDRequest struct {
	Type     string         `json:"type" minLength:"1" doc:"A declared device type." example:"WeatherStation"`
	Name     string         `json:"name,omitempty" maxLength:"256" doc:"Display name."`
	Group    string         `json:"group,omitempty" maxLength:"128" doc:"Device group (created if missing)."`
	Tags     []string       `json:"tags,omitempty" maxItems:"64" doc:"Tags."`
	Metadata map[string]any `json:"metadata,omitempty" doc:"Free-form metadata."`
	Replace  bool           `json:"replace,omitempty" doc:"Re-provision an existing device: new credentials; the old ones stop working."`
}

type provisionByIDInput struct {
	DeviceIDInput
	Body ProvisionByIDRequest
}

func (a *API) provisionByID(ctx context.Context, in *provisionByIDInput) (*provisionOutput, error) {
	b := in.Body
	return a.provision(ctx, &provisionInput{Body: ProvisionRequest{
		ID: in.ID, Type: b.Type, Name: b.Name, Group: b.Group, Tags: b.Tags, Metadata: b.Metadata, Replace: b.Replace,
	}})
}

// UpdateDeviceRequest is the body of PATCH /api/v1/devices/{id}: absent
// fields are left alone.
type UpdateDeviceRequest struct {
	Name            *string        `json:"name,omitempty" maxLength:"256"`
	Group           *string        `json:"group,omitempty" maxLength:"128" doc:"A group id; \"\" takes the device out of its group."`
	Tags            *[]string      `json:"tags,omitempty" maxItems:"64" doc:"Replaces the tags."`
	Location        *Location      `json:"location,omitempty" doc:"Replaces the location; {\"lat\":0,\"lon\":0} removes it."`
	Metadata        map[string]any `json:"metadata,omitempty" doc:"Replaces the metadata; {} removes it."`
	FirmwareVersion *string        `json:"firmware_version,omitempty" maxLength:"128"`
	HardwareVersion *string        `json:"hardware_version,omitempty" maxLength:"128"`
	ManagementIP    *string        `json:"management_ip,omitempty" doc:"An IPv4 or IPv6 address; \"\" removes it."`
}

type updateDeviceInput struct {
	DeviceIDInput
	Body UpdateDeviceRequest
}

func (a *API) updateDevice(ctx context.Context, in *updateDeviceInput) (*deviceOutput, error) {
	if a.deps.Control == nil {
		return nil, errNotImplemented
	}
	b := in.Body
	req := registry.UpdateRequest{Name: b.Name, Group: b.Group, Tags: b.Tags, Metadata: b.Metadata,
		FirmwareVersion: b.FirmwareVersion, HardwareVersion: b.HardwareVersion, ManagementIP: b.ManagementIP}
	if b.Location != nil {
		req.Location = &registry.Location{Lat: b.Location.Lat, Lon: b.Location.Lon, Description: b.Location.Description}
	}
	d, err := a.deps.Control.Update(ctx, in.ID, req)
	if err != nil {
		return nil, err
	}
	return &deviceOutput{Body: DeviceAnswer{Device: deviceOut(d)}}, nil
}

// ReasonRequest is the optional body of disable and revoke.
type ReasonRequest struct {
	Reason string `json:"reason,omitempty" maxLength:"512" doc:"Why, for the event log."`
}

type reasonInput struct {
	DeviceIDInput
	Body *ReasonRequest
}

func (r *reasonInput) reason() string {
	if r.Body == nil {
		return ""
	}
	return r.Body.Reason
}

// afterChange answers the device as it is after a change.
func (a *API) afterChange(ctx context.Context, id string) (*deviceOutput, error) {
	if a.deps.Devices == nil {
		return nil, errNotImplemented
	}
	d, err := a.deps.Devices.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return &deviceOutput{Body: DeviceAnswer{Device: deviceOut(d)}}, nil
}

func (a *API) disableDevice(ctx context.Context, in *reasonInput) (*deviceOutput, error) {
	if a.deps.Control == nil {
		return nil, errNotImplemented
	}
	if err := a.deps.Control.Disable(ctx, in.ID, in.reason()); err != nil {
		return nil, err
	}
	return a.afterChange(ctx, in.ID)
}

func (a *API) enableDevice(ctx context.Context, in *DeviceIDInput) (*deviceOutput, error) {
	if a.deps.Control == nil {
		return nil, errNotImplemented
	}
	if err := a.deps.Control.Enable(ctx, in.ID); err != nil {
		return nil, err
	}
	return a.afterChange(ctx, in.ID)
}

func (a *API) revokeDevice(ctx context.Context, in *reasonInput) (*deviceOutput, error) {
	if a.deps.Control == nil {
		return nil, errNotImplemented
	}
	if err := a.deps.Control.Revoke(ctx, in.ID, in.reason()); err != nil {
		return nil, err
	}
	return a.afterChange(ctx, in.ID)
}

// RotateRequest is the optional body of POST /api/v1/devices/{id}/rotate.
type RotateRequest struct {
	Overlap string `json:"overlap,omitempty" doc:"How long the old credentials stay valid at most (Go duration); default the hub's provisioning.rotation_overlap." example:"24h"`
}

type rotateInput struct {
	DeviceIDInput
	Body *RotateRequest
}

// Rotated is the answer of a rotation.
type Rotated struct {
	Credentials   Credentials `json:"credentials" doc:"The new credentials: shown only this once."`
	OldValidUntil *time.Time  `json:"old_valid_until,omitempty" doc:"When the old credentials stop working at the latest; absent: they stopped at once."`
}

type rotateOutput struct{ Body Rotated }

func (a *API) rotateDevice(ctx context.Context, in *rotateInput) (*rotateOutput, error) {
	if a.deps.Control == nil {
		return nil, errNotImplemented
	}
	overlap := a.opts.RotationOverlap
	if in.Body != nil && in.Body.Overlap != "" {
		d, err := time.ParseDuration(in.Body.Overlap)
		if err != nil || d < 0 {
			return nil, invalidArg("overlap", "must be a non-negative Go duration such as 1h30m, got %q", in.Body.Overlap)
		}
		overlap = d
	}
	res, err := a.deps.Control.Rotate(ctx, in.ID, overlap)
	if err != nil {
		return nil, err
	}
	c := res.Credentials
	return &rotateOutput{Body: Rotated{
		Credentials:   Credentials{DeviceID: in.ID, MQTTUsername: c.MQTTUsername, MQTTPassword: c.MQTTPassword, APIKey: c.APIKey},
		OldValidUntil: res.OldValidUntil,
	}}, nil
}

// CertificateRequest is the body of PUT /api/v1/devices/{id}/certificate.
type CertificateRequest struct {
	Fingerprint string `json:"fingerprint" maxLength:"128" doc:"SHA-256 of the certificate's DER bytes in hex (colons allowed); \"\" removes the pin." example:"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"`
}

// CertificatePin is the answer of PUT /api/v1/devices/{id}/certificate.
type CertificatePin struct {
	DeviceID    string `json:"device_id"`
	Fingerprint string `json:"fingerprint,omitempty" doc:"The pinned fingerprint in lowercase hex; absent when the pin was removed."`
}

type certificateInput struct {
	DeviceIDInput
	Body CertificateRequest
}

type certificateOutput struct{ Body CertificatePin }

func (a *API) pinCertificate(ctx context.Context, in *certificateInput) (*certificateOutput, error) {
	if a.deps.Control == nil {
		return nil, errNotImplemented
	}
	fp, err := ParseFingerprint(in.Body.Fingerprint)
	if err != nil {
		return nil, invalidArg("fingerprint", "%v", err)
	}
	if err := a.deps.Control.PinCertificate(ctx, in.ID, fp); err != nil {
		return nil, err
	}
	out := CertificatePin{DeviceID: in.ID}
	if fp != ([32]byte{}) {
		out.Fingerprint = hex.EncodeToString(fp[:])
	}
	return &certificateOutput{Body: out}, nil
}

// ParseFingerprint reads a SHA-256 fingerprint in hex, with or without
// colons; "" is the zero fingerprint (no pin).
func ParseFingerprint(s string) ([32]byte, error) {
	var fp [32]byte
	s = strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	if s == "" {
		return fp, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(fp) {
		return fp, errors.New("must be 64 hex digits (a SHA-256)")
	}
	copy(fp[:], b)
	return fp, nil
}

// ImportLine is the outcome of one line of an import.
type ImportLine struct {
	Line        int          `json:"line" doc:"The CSV line (the header is line 1), or the position in the JSON list, from 1."`
	ID          string       `json:"id,omitempty"`
	Status      string       `json:"status" enum:"created,refused,not_created" doc:"not_created: the line was fine, but nothing was created because other lines were refused."`
	Reason      string       `json:"reason,omitempty" doc:"Why the line was refused."`
	Credentials *Credentials `json:"credentials,omitempty" doc:"A created device's credentials: shown only this once."`
}

// ImportReport is the answer of an import, line by line.
type ImportReport struct {
	Created int          `json:"created"`
	Refused int          `json:"refused"`
	Lines   []ImportLine `json:"lines"`
}

// ImportInput is the body of POST /api/v1/devices/import.
type ImportInput struct {
	Partial     bool   `query:"partial" doc:"Create the acceptable lines even if others are refused."`
	ContentType string `header:"Content-Type"`
	RawBody     []byte
}

type importOutput struct {
	Status int
	Body   ImportReport
}

func (a *API) importDevices(ctx context.Context, in *ImportInput) (*importOutput, error) {
	if a.deps.Import == nil {
		return nil, errNotImplemented
	}
	opts := registry.ImportOptions{Partial: in.Partial}
	body := bytes.Clone(in.RawBody)
	var rep *registry.ImportReport
	var err error
	mt, _, _ := mime.ParseMediaType(in.ContentType)
	switch mt {
	case "text/csv":
		rep, err = a.deps.Import.ImportCSV(ctx, bytes.NewReader(body), opts)
	case "application/json", "":
		rep, err = a.deps.Import.ImportJSON(ctx, body, opts)
	default:
		return nil, &Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: "Content-Type must be text/csv or application/json, got " + in.ContentType, Field: "Content-Type"}
	}
	status := http.StatusOK
	if err != nil {
		if rep == nil || !errors.Is(err, registry.ErrImportRefused) {
			return nil, err
		}
		status = http.StatusUnprocessableEntity
	}
	out := ImportReport{Created: rep.Created, Refused: rep.Refused, Lines: make([]ImportLine, 0, len(rep.Lines))}
	for _, l := range rep.Lines {
		v := ImportLine{Line: l.Line, ID: l.ID, Status: l.Status, Reason: l.Reason}
		if c := l.Credentials; c != nil {
			v.Credentials = &Credentials{DeviceID: l.ID, MQTTUsername: c.MQTTUsername, MQTTPassword: c.MQTTPassword, APIKey: c.APIKey}
		}
		out.Lines = append(out.Lines, v)
	}
	return &importOutput{Status: status, Body: out}, nil
}
