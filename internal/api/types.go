package api

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/devicetype"
)

// DeviceType is a declared device type as the API shows it, with
// durations as Go duration strings.
type DeviceType struct {
	Name               string                            `json:"name" example:"WeatherStation"`
	HeartbeatInterval  string                            `json:"heartbeat_interval,omitempty" doc:"How often devices of the type send a heartbeat (Go duration)." example:"1m0s"`
	HeartbeatTimeout   string                            `json:"heartbeat_timeout,omitempty" doc:"Silence after which a device is set offline (Go duration)." example:"1m30s"`
	Fields             map[string]devicetype.Field       `json:"fields" doc:"The declared reading fields."`
	AllowUnknownFields bool                              `json:"allow_unknown_fields"`
	Commands           []string                          `json:"commands"`
	CommandParams      map[string]devicetype.CommandSpec `json:"command_params,omitempty" doc:"The declared parameters of the commands that have any (the rules of the reading fields); a command without an entry takes any payload."`
	RateLimit          *devicetype.RateLimit             `json:"rate_limit,omitempty"`
	MaxPayloadBytes    int                               `json:"max_payload_bytes,omitempty"`
}

// DeviceTypeList is the answer of GET /api/v1/device-types.
type DeviceTypeList struct {
	DeviceTypes []DeviceType `json:"device_types"`
}

type deviceTypesOutput struct{ Body DeviceTypeList }

func (a *API) registerDeviceTypes() {
	register(a, permViewer, huma.Operation{
		OperationID: "listDeviceTypes", Method: http.MethodGet, Path: "/api/v1/device-types", Tags: []string{"devices"},
		Summary: "List device types",
	}, a.deviceTypes)
}

func (a *API) deviceTypes(ctx context.Context, _ *struct{}) (*deviceTypesOutput, error) {
	if a.deps.Types == nil {
		return nil, errNotImplemented
	}
	types := a.deps.Types.List()
	out := make([]DeviceType, 0, len(types))
	for _, t := range types {
		v := DeviceType{Name: t.Name, Fields: t.Fields, AllowUnknownFields: t.AllowUnknownFields,
			Commands: t.Commands, CommandParams: t.CommandParams, RateLimit: t.RateLimit, MaxPayloadBytes: t.MaxPayloadBytes}
		if t.HeartbeatInterval > 0 {
			v.HeartbeatInterval = t.HeartbeatInterval.String()
		}
		if d := t.Timeout(); d > 0 {
			v.HeartbeatTimeout = d.String()
		}
		if v.Fields == nil {
			v.Fields = map[string]devicetype.Field{}
		}
		if v.Commands == nil {
			v.Commands = []string{}
		}
		out = append(out, v)
	}
	return &deviceTypesOutput{Body: DeviceTypeList{DeviceTypes: out}}, nil
}
