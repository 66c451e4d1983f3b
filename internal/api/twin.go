package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/twin"
)

// Twin reads and sets device twins (*twin.Service).
type Twin interface {
	Get(ctx context.Context, deviceID string) (*twin.Twin, error)
	SetDesiredIf(ctx context.Context, deviceID string, values map[string]any, expected int64) (*twin.Twin, error)
	PatchDesired(ctx context.Context, deviceID string, patch map[string]any, expected int64) (*twin.Twin, error)
}

const versionDoc = "The desired version the change is based on (as read), in the body's version or in If-Match " +
	"(the ETag of GET .../twin). A stale version is refused with 412 version_conflict and the current version " +
	"(current_version), and nothing changes; no version at all is refused with 428 precondition_required, so " +
	"that no writer overwrites a change it has not seen."

func (a *API) registerTwin() {
	register(a, permViewer, huma.Operation{
		OperationID: "getTwin", Method: http.MethodGet, Path: "/api/v1/devices/{id}/twin", Tags: []string{"twin"},
		Summary: "Get a device's twin",
		Description: "Its desired properties with their version (also the ETag), its reported properties with the " +
			"time each key was last reported, and the delta: the desired keys whose reported value differs or " +
			"was never reported.",
	}, a.getTwin)
	register(a, permOperator, huma.Operation{
		OperationID: "setDesiredProperties", Method: http.MethodPut, Path: "/api/v1/devices/{id}/twin/desired", Tags: []string{"twin"},
		Summary: "Replace a device's desired properties",
		Description: "Replaces them whole and adds one to their version; the device receives {\"version\", \"values\"} " +
			"retained on devices/{id}/twin/desired. " + versionDoc,
	}, a.setDesired)
	register(a, permOperator, huma.Operation{
		OperationID: "patchDesiredProperties", Method: http.MethodPatch, Path: "/api/v1/devices/{id}/twin/desired", Tags: []string{"twin"},
		Summary: "Change a device's desired properties with a JSON merge patch",
		Description: "Applies patch, a JSON merge patch (RFC 7396: an object merges, null removes a key, anything " +
			"else replaces), and adds one to the version. " + versionDoc,
	}, a.patchDesired)
}

// TwinProperties are one side of a twin.
type TwinProperties struct {
	Version   int64          `json:"version" doc:"Desired: the version, one more at every change. Reported: how many patches were merged."`
	Values    map[string]any `json:"values"`
	UpdatedAt *time.Time     `json:"updated_at,omitempty"`
	// KeyTimes is the reported side's time of each key.
	KeyTimes map[string]time.Time `json:"key_times,omitempty" doc:"Reported: when each top-level key was last reported."`
}

// DeltaEntry is one desired key the reported properties do not match.
type DeltaEntry struct {
	Desired  any  `json:"desired"`
	Reported any  `json:"reported,omitempty" doc:"Absent when the key was never reported."`
	Never    bool `json:"never_reported,omitempty"`
}

// DeviceTwin is a device's twin.
type DeviceTwin struct {
	DeviceID string                `json:"device_id" example:"ws-1"`
	Desired  TwinProperties        `json:"desired"`
	Reported TwinProperties        `json:"reported"`
	Delta    map[string]DeltaEntry `json:"delta" doc:"The desired keys whose reported value differs, or that were never reported; empty when the device is in step."`
}

// TwinAnswer is the answer of the twin operations.
type TwinAnswer struct {
	Twin DeviceTwin `json:"twin"`
}

type twinOutput struct {
	ETag string `header:"ETag" doc:"The desired version, quoted; send it back in If-Match."`
	Body TwinAnswer
}

func twinOut(t *twin.Twin) *twinOutput {
	d, r := t.Desired, t.Reported
	if d == nil {
		d = map[string]any{}
	}
	if r == nil {
		r = map[string]any{}
	}
	delta := map[string]DeltaEntry{}
	for _, k := range t.Delta() {
		rv, ok := r[k]
		delta[k] = DeltaEntry{Desired: d[k], Reported: rv, Never: !ok}
	}
	return &twinOutput{ETag: strconv.Quote(strconv.FormatInt(t.DesiredVersion, 10)), Body: TwinAnswer{Twin: DeviceTwin{
		DeviceID: t.DeviceID,
		Desired:  TwinProperties{Version: t.DesiredVersion, Values: d, UpdatedAt: t.DesiredAt},
		Reported: TwinProperties{Version: t.ReportedVersion, Values: r, UpdatedAt: t.ReportedAt, KeyTimes: t.ReportedTimes},
		Delta:    delta,
	}}}
}

func (a *API) getTwin(ctx context.Context, in *DeviceIDInput) (*twinOutput, error) {
	if a.deps.Twin == nil {
		return nil, errNotImplemented
	}
	t, err := a.deps.Twin.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return twinOut(t), nil
}

// IfMatchInput is the version a twin write is based on, as If-Match.
type IfMatchInput struct {
	IfMatch string `header:"If-Match" doc:"The desired version the change is based on: the ETag of GET .../twin (\"3\" or 3)." example:"\"3\""`
}

// baseVersion returns the version a write states: the body's, else
// If-Match's; 428 when neither says.
func baseVersion(body *int64, ifMatch string) (int64, error) {
	if body != nil {
		return *body, nil
	}
	s := strings.TrimSpace(ifMatch)
	if s == "" {
		return 0, &Error{Status: http.StatusPreconditionRequired, Code: "precondition_required", Field: "version",
			Message: "version: state the desired version the change is based on (body version, or If-Match with the ETag of GET .../twin)"}
	}
	s = strings.Trim(strings.TrimPrefix(s, "W/"), `"`)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, invalidArg("If-Match", "must be a desired version such as \"3\", got %q", ifMatch)
	}
	return v, nil
}

// SetDesiredRequest is the body of PUT /api/v1/devices/{id}/twin/desired.
type SetDesiredRequest struct {
	Values  map[string]any `json:"values" doc:"The desired properties, whole." example:"{\"interval\": 30}"`
	Version *int64         `json:"version,omitempty" minimum:"0" doc:"The desired version the change is based on (or If-Match)."`
	// ExpectedVersion is the former name of Version.
	ExpectedVersion *int64 `json:"expected_version,omitempty" minimum:"0" doc:"The former name of version."`
}

type setDesiredInput struct {
	DeviceIDInput
	IfMatchInput
	Body SetDesiredRequest
}

func (a *API) setDesired(ctx context.Context, in *setDesiredInput) (*twinOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Twin == nil {
		return nil, errNotImplemented
	}
	v := in.Body.Version
	if v == nil {
		v = in.Body.ExpectedVersion
	}
	base, err := baseVersion(v, in.IfMatch)
	if err != nil {
		return nil, err
	}
	t, err := a.deps.Twin.SetDesiredIf(ctx, in.ID, in.Body.Values, base)
	if err != nil {
		return nil, err
	}
	return twinOut(t), nil
}

// PatchDesiredRequest is the body of PATCH /api/v1/devices/{id}/twin/desired.
type PatchDesiredRequest struct {
	Patch   map[string]any `json:"patch" doc:"A JSON merge patch (RFC 7396) of the desired properties." example:"{\"interval\": 60, \"led\": null}"`
	Version *int64         `json:"version,omitempty" minimum:"0" doc:"The desired version the change is based on (or If-Match)."`
}

type patchDesiredInput struct {
	DeviceIDInput
	IfMatchInput
	Body PatchDesiredRequest
}

func (a *API) patchDesired(ctx context.Context, in *patchDesiredInput) (*twinOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Twin == nil {
		return nil, errNotImplemented
	}
	base, err := baseVersion(in.Body.Version, in.IfMatch)
	if err != nil {
		return nil, err
	}
	t, err := a.deps.Twin.PatchDesired(ctx, in.ID, in.Body.Patch, base)
	if err != nil {
		return nil, err
	}
	return twinOut(t), nil
}
