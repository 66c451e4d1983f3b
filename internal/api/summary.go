package api

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/registry"
)

// DeviceCounter counts the devices by type and state (the store).
type DeviceCounter = registry.Counter

func (a *API) registerSummary() {
	register(a, permViewer, huma.Operation{
		OperationID: "fleetSummary", Method: http.MethodGet, Path: "/api/v1/fleet/summary", Tags: []string{"devices"},
		Summary: "Count the devices by state and type",
		Description: "The fleet at a glance, from one grouped query: how many devices are online (connected), offline, " +
			"in error, disabled, by status and by type, and the rows they are summed from.",
	}, a.fleetSummary)
}

// FleetSummary is the answer of GET /api/v1/fleet/summary.
type FleetSummary struct {
	Total    int64 `json:"total"`
	Online   int64 `json:"online" doc:"Connected and not disabled."`
	Offline  int64 `json:"offline" doc:"Not connected, not disabled, status not error."`
	Error    int64 `json:"error" doc:"Status error, not disabled."`
	Disabled int64 `json:"disabled"`
	// ByStatus and ByType count every device once.
	ByStatus map[string]int64       `json:"by_status"`
	ByType   map[string]int64       `json:"by_type"`
	Rows     []registry.DeviceCount `json:"rows" doc:"Devices per (type, status, connected, disabled)."`
}

type fleetSummaryOutput struct{ Body FleetSummary }

func (a *API) fleetSummary(ctx context.Context, _ *struct{}) (*fleetSummaryOutput, error) {
	if a.deps.Counter == nil {
		return nil, errNotImplemented
	}
	rows, err := a.deps.Counter.CountDevices(ctx)
	if err != nil {
		return nil, err
	}
	out := FleetSummary{ByStatus: map[string]int64{}, ByType: map[string]int64{}, Rows: rows}
	for _, r := range rows {
		out.Total += r.Devices
		out.ByStatus[r.Status] += r.Devices
		out.ByType[r.Type] += r.Devices
		switch {
		case r.Disabled:
			out.Disabled += r.Devices
		case r.Status == "error":
			out.Error += r.Devices
		case r.Connected:
			out.Online += r.Devices
		default:
			out.Offline += r.Devices
		}
	}
	return &fleetSummaryOutput{Body: out}, nil
}

// PresenceHistory reads a device's stored presence events (the store).
type PresenceHistory = eventlog.HistoryStore

func (a *API) registerPresence() {
	register(a, permViewer, huma.Operation{
		OperationID: "listPresence", Method: http.MethodGet, Path: "/api/v1/devices/{id}/presence", Tags: []string{"devices"},
		Summary: "List a device's presence history",
		Description: "Its device_connected, device_disconnected (with the reason) and device_status_changed events, " +
			"newest first; pass a page's next as before for the next page.",
	}, a.presence)
}

// PresenceInput selects a page of a device's presence history.
type PresenceInput struct {
	DeviceIDInput
	Before int64 `query:"before" minimum:"0" doc:"Cursor: events with a smaller sequence number (the previous page's next)."`
	Limit  int   `query:"limit" minimum:"1" maximum:"1000" doc:"Page size; default 100."`
}

// PresenceList is the answer of GET /api/v1/devices/{id}/presence.
type PresenceList struct {
	Events []events.Event `json:"events"`
	Next   int64          `json:"next,omitempty" doc:"The cursor of the next page (pass as before); absent on the last page."`
}

type presenceOutput struct{ Body PresenceList }

func (a *API) presence(ctx context.Context, in *PresenceInput) (*presenceOutput, error) {
	if a.deps.History == nil || a.deps.Devices == nil {
		return nil, errNotImplemented
	}
	if _, err := a.deps.Devices.Get(ctx, in.ID); err != nil {
		return nil, err
	}
	limit := in.Limit
	if limit == 0 {
		limit = defaultLimit
	}
	evs, err := a.deps.History.PresenceHistory(ctx, in.ID, in.Before, limit+1)
	if err != nil {
		return nil, err
	}
	out := PresenceList{Events: evs}
	if len(evs) > limit {
		out.Events = evs[:limit]
		out.Next = evs[limit-1].Seq
	}
	if out.Events == nil {
		out.Events = []events.Event{}
	}
	return &presenceOutput{Body: out}, nil
}
