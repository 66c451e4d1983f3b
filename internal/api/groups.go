package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/registry"
)

func (a *API) registerGroups() {
	register(a, permOperator, huma.Operation{
		OperationID: "createGroup", Method: http.MethodPost, Path: "/api/v1/groups", Tags: []string{"groups"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Create a group",
	}, a.createGroup)
	register(a, permViewer, huma.Operation{
		OperationID: "listGroups", Method: http.MethodGet, Path: "/api/v1/groups", Tags: []string{"groups"},
		Summary: "List groups", Description: "Groups by id, with how many devices each holds.",
	}, a.listGroups)
	register(a, permViewer, huma.Operation{
		OperationID: "getGroup", Method: http.MethodGet, Path: "/api/v1/groups/{id}", Tags: []string{"groups"},
		Summary: "Get a group",
	}, a.getGroup)
	register(a, permOperator, huma.Operation{
		OperationID: "renameGroup", Method: http.MethodPatch, Path: "/api/v1/groups/{id}", Tags: []string{"groups"},
		Summary: "Rename a group", Description: "Its id, and so its devices, stay.",
	}, a.renameGroup)
	register(a, permViewer, huma.Operation{
		OperationID: "listGroupDevices", Method: http.MethodGet, Path: "/api/v1/groups/{id}/devices", Tags: []string{"groups"},
		Summary:     "List a group's devices",
		Description: "Devices by id, one page at a time: pass a page's next as after for the next page.",
	}, a.listGroupDevices)
}

// Group is a device group.
type Group struct {
	ID        string    `json:"id" example:"roof"`
	Name      string    `json:"name" example:"Roof sensors"`
	Devices   int       `json:"devices" doc:"How many devices are in the group."`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func groupOut(g *registry.Group) Group {
	return Group{ID: g.ID, Name: g.Name, Devices: g.Devices, CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt}
}

// CreateGroupRequest is the body of POST /api/v1/groups.
type CreateGroupRequest struct {
	ID   string `json:"id" minLength:"1" maxLength:"128" pattern:"^[A-Za-z0-9._:-]+$" doc:"Group id; never changes." example:"roof"`
	Name string `json:"name,omitempty" maxLength:"256" doc:"Display name; default the id."`
}

// GroupAnswer is the answer of the operations on one group.
type GroupAnswer struct {
	Group Group `json:"group"`
}

type groupOutput struct{ Body GroupAnswer }

type createGroupInput struct{ Body CreateGroupRequest }

func (a *API) createGroup(ctx context.Context, in *createGroupInput) (*groupOutput, error) {
	setTarget(ctx, in.Body.ID)
	if a.deps.Groups == nil {
		return nil, errNotImplemented
	}
	g, err := a.deps.Groups.CreateGroup(ctx, registry.CreateGroupRequest{ID: in.Body.ID, Name: in.Body.Name})
	if err != nil {
		return nil, err
	}
	return &groupOutput{Body: GroupAnswer{Group: groupOut(g)}}, nil
}

// GroupList is the answer of GET /api/v1/groups.
type GroupList struct {
	Groups []Group `json:"groups"`
}

type groupListOutput struct{ Body GroupList }

func (a *API) listGroups(ctx context.Context, _ *struct{}) (*groupListOutput, error) {
	if a.deps.Groups == nil {
		return nil, errNotImplemented
	}
	gs, err := a.deps.Groups.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	out := GroupList{Groups: make([]Group, 0, len(gs))}
	for i := range gs {
		out.Groups = append(out.Groups, groupOut(&gs[i]))
	}
	return &groupListOutput{Body: out}, nil
}

// GroupIDInput is the group id in an operation's path.
type GroupIDInput struct {
	ID string `path:"id" doc:"Group id." example:"roof"`
}

func (a *API) getGroup(ctx context.Context, in *GroupIDInput) (*groupOutput, error) {
	if a.deps.Groups == nil {
		return nil, errNotImplemented
	}
	g, err := a.deps.Groups.GetGroup(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &groupOutput{Body: GroupAnswer{Group: groupOut(g)}}, nil
}

// RenameGroupRequest is the body of PATCH /api/v1/groups/{id}.
type RenameGroupRequest struct {
	Name string `json:"name" minLength:"1" maxLength:"256" doc:"The new display name."`
}

type renameGroupInput struct {
	GroupIDInput
	Body RenameGroupRequest
}

func (a *API) renameGroup(ctx context.Context, in *renameGroupInput) (*groupOutput, error) {
	if a.deps.Groups == nil {
		return nil, errNotImplemented
	}
	g, err := a.deps.Groups.RenameGroup(ctx, in.ID, in.Body.Name)
	if err != nil {
		return nil, err
	}
	return &groupOutput{Body: GroupAnswer{Group: groupOut(g)}}, nil
}

// GroupDevicesInput pages GET /api/v1/groups/{id}/devices.
type GroupDevicesInput struct {
	GroupIDInput
	After string `query:"after" doc:"Cursor: list devices after this id (the previous page's next)."`
	Limit int    `query:"limit" minimum:"1" maximum:"1000" doc:"Page size; default 100."`
}

func (a *API) listGroupDevices(ctx context.Context, in *GroupDevicesInput) (*deviceListOutput, error) {
	if a.deps.Groups == nil {
		return nil, errNotImplemented
	}
	limit := in.Limit
	if limit == 0 {
		limit = defaultLimit
	}
	devs, err := a.deps.Groups.ListGroupDevices(ctx, in.ID, registry.ListOptions{After: in.After, Limit: limit + 1})
	if err != nil {
		return nil, err
	}
	out := DeviceList{Devices: make([]Device, 0, min(len(devs), limit))}
	if len(devs) > limit {
		devs = devs[:limit]
		out.Next = devs[limit-1].ID
	}
	for i := range devs {
		out.Devices = append(out.Devices, deviceOut(&devs[i]))
	}
	return &deviceListOutput{Body: out}, nil
}
