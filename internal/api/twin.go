package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/twin"
)

// Twin reads and sets device twins (*twin.Service).
type Twin interface {
	Get(ctx context.Context, deviceID string) (*twin.Twin, error)
	SetDesired(ctx context.Context, deviceID string, values map[string]any) (*twin.Twin, error)
	SetDesiredIf(ctx context.Context, deviceID string, values map[string]any, expected int64) (*twin.Twin, error)
}

func (a *API) registerTwin() {
	register(a, permViewer, huma.Operation{
		OperationID: "getTwin", Method: http.MethodGet, Path: "/api/v1/devices/{id}/twin", Tags: []string{"twin"},
		Summary: "Get a device's twin", Description: "Its desired properties with their version, and its reported properties.",
	}, a.getTwin)
	register(a, permOperator, huma.Operation{
		OperationID: "setDesiredProperties", Method: http.MethodPut, Path: "/api/v1/devices/{id}/twin/desired", Tags: []string{"twin"},
		Summary: "Set a device's desired properties",
		Description: "Replaces them whole and adds one to their version; the device receives {\"version\", \"values\"} " +
			"retained on devices/{id}/twin/desired.",
	}, a.setDesired)
}

// TwinProperties are one side of a twin.
type TwinProperties struct {
	Version   int64          `json:"version" doc:"Desired: the version, one more at every change. Reported: how many patches were merged."`
	Values    map[string]any `json:"values"`
	UpdatedAt *time.Time     `json:"updated_at,omitempty"`
}

// DeviceTwin is a device's twin.
type DeviceTwin struct {
	DeviceID string         `json:"device_id" example:"ws-1"`
	Desired  TwinProperties `json:"desired"`
	Reported TwinProperties `json:"reported"`
}

// TwinAnswer is the answer of the twin operations.
type TwinAnswer struct {
	Twin DeviceTwin `json:"twin"`
}

type twinOutput struct{ Body TwinAnswer }

func twinOut(t *twin.Twin) TwinAnswer {
	d, r := t.Desired, t.Reported
	if d == nil {
		d = map[string]any{}
	}
	if r == nil {
		r = map[string]any{}
	}
	return TwinAnswer{Twin: DeviceTwin{
		DeviceID: t.DeviceID,
		Desired:  TwinProperties{Version: t.DesiredVersion, Values: d, UpdatedAt: t.DesiredAt},
		Reported: TwinProperties{Version: t.ReportedVersion, Values: r, UpdatedAt: t.ReportedAt},
	}}
}

func (a *API) getTwin(ctx context.Context, in *DeviceIDInput) (*twinOutput, error) {
	if a.deps.Twin == nil {
		return nil, errNotImplemented
	}
	t, err := a.deps.Twin.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &twinOutput{Body: twinOut(t)}, nil
}

// SetDesiredRequest is the body of PUT /api/v1/devices/{id}/twin/desired.
type SetDesiredRequest struct {
	Values map[string]any `json:"values" doc:"The desired properties, whole." example:"{\"interval\": 30}"`
	// ExpectedVersion makes the change conditional (an editor's version
	// check).
	ExpectedVersion *int64 `json:"expected_version,omitempty" minimum:"0" doc:"Change only if the desired properties are still at this version (the one read); otherwise 409 version_conflict and nothing changes."`
}

type setDesiredInput struct {
	DeviceIDInput
	Body SetDesiredRequest
}

func (a *API) setDesired(ctx context.Context, in *setDesiredInput) (*twinOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Twin == nil {
		return nil, errNotImplemented
	}
	var (
		t   *twin.Twin
		err error
	)
	if in.Body.ExpectedVersion != nil {
		t, err = a.deps.Twin.SetDesiredIf(ctx, in.ID, in.Body.Values, *in.Body.ExpectedVersion)
	} else {
		t, err = a.deps.Twin.SetDesired(ctx, in.ID, in.Body.Values)
	}
	if err != nil {
		return nil, err
	}
	return &twinOutput{Body: twinOut(t)}, nil
}
