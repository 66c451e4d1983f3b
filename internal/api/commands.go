package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/commands"
)

// Commands sends commands to devices and reads them (*commands.Service).
type Commands interface {
	Send(ctx context.Context, req commands.SendRequest) (*commands.Command, error)
	Get(ctx context.Context, id string) (*commands.Command, error)
	List(ctx context.Context, opts commands.ListOptions) ([]commands.Command, error)
}

func (a *API) registerCommands() {
	register(a, permOperator, huma.Operation{
		OperationID: "sendCommand", Method: http.MethodPost, Path: "/api/v1/devices/{id}/commands", Tags: []string{"commands"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Send a command to a device",
		Description: "Stores the command and publishes it to devices/{id}/commands/{command_id} (QoS 1) if the device is " +
			"connected; otherwise, and until the device answers, it is published again when the device connects, until it " +
			"expires. The command must be one the device type declares.",
	}, a.sendCommand)
	register(a, permViewer, huma.Operation{
		OperationID: "listCommands", Method: http.MethodGet, Path: "/api/v1/devices/{id}/commands", Tags: []string{"commands"},
		Summary: "List a device's commands", Description: "Newest first.",
	}, a.listCommands)
	register(a, permViewer, huma.Operation{
		OperationID: "getCommand", Method: http.MethodGet, Path: "/api/v1/commands/{command_id}", Tags: []string{"commands"},
		Summary: "Get a command", Description: "With its status and, once the device answered, its result.",
	}, a.getCommand)
}

// Command is a command sent to a device.
type Command struct {
	ID         string     `json:"id" example:"cmd_3f2a9c01b7d4e5f6a7b8c9d0"`
	DeviceID   string     `json:"device_id" example:"ws-1"`
	Command    string     `json:"command" example:"reboot"`
	Payload    any        `json:"payload,omitempty" doc:"The payload sent with the command, any JSON value."`
	Status     string     `json:"status" enum:"pending,sent,succeeded,failed,expired" doc:"pending: not published yet (the device is offline); sent: published, no answer yet; succeeded or failed: the device's answer; expired: no answer in time."`
	Result     any        `json:"result,omitempty" doc:"The device's result, any JSON value."`
	Sends      int        `json:"sends" doc:"How often it was published."`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	SentAt     *time.Time `json:"sent_at,omitempty" doc:"When it was last published."`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

func rawValue(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	return v
}

func commandOut(c *commands.Command) Command {
	return Command{
		ID: c.ID, DeviceID: c.DeviceID, Command: c.Command, Payload: rawValue(c.Payload), Status: c.Status,
		Result: rawValue(c.Result), Sends: c.Sends, CreatedAt: c.CreatedAt, ExpiresAt: c.ExpiresAt,
		SentAt: c.SentAt, FinishedAt: c.FinishedAt, UpdatedAt: c.UpdatedAt,
	}
}

// SendCommandRequest is the body of POST /api/v1/devices/{id}/commands.
type SendCommandRequest struct {
	Command   string `json:"command" minLength:"1" maxLength:"128" doc:"A command the device type declares." example:"reboot"`
	Payload   any    `json:"payload,omitempty" doc:"Any JSON value, handed to the device as is."`
	ExpiresIn string `json:"expires_in,omitempty" doc:"How long the device has to answer (Go duration, 1s to 7 days); default 1h." example:"10m"`
}

// CommandAnswer is the answer of the operations on one command.
type CommandAnswer struct {
	Command Command `json:"command"`
}

type commandOutput struct{ Body CommandAnswer }

type sendCommandInput struct {
	DeviceIDInput
	Body SendCommandRequest
}

func (a *API) sendCommand(ctx context.Context, in *sendCommandInput) (*commandOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Commands == nil {
		return nil, errNotImplemented
	}
	var exp time.Duration
	if in.Body.ExpiresIn != "" {
		d, err := time.ParseDuration(in.Body.ExpiresIn)
		if err != nil || d <= 0 {
			return nil, invalidArg("expires_in", "must be a positive Go duration such as 10m, got %q", in.Body.ExpiresIn)
		}
		exp = d
	}
	var payload json.RawMessage
	if in.Body.Payload != nil {
		b, err := json.Marshal(in.Body.Payload)
		if err != nil {
			return nil, invalidArg("payload", "%v", err)
		}
		payload = b
	}
	c, err := a.deps.Commands.Send(ctx, commands.SendRequest{DeviceID: in.ID, Command: in.Body.Command, Payload: payload, ExpiresIn: exp})
	if err != nil {
		return nil, err
	}
	return &commandOutput{Body: CommandAnswer{Command: commandOut(c)}}, nil
}

// CommandList is the answer of GET /api/v1/devices/{id}/commands.
type CommandList struct {
	Commands []Command `json:"commands"`
}

type commandListOutput struct{ Body CommandList }

type listCommandsInput struct {
	DeviceIDInput
	Status string `query:"status" enum:"pending,sent,succeeded,failed,expired," doc:"Only commands with this status."`
	Limit  int    `query:"limit" minimum:"1" maximum:"1000" doc:"At most this many; default 100."`
}

func (a *API) listCommands(ctx context.Context, in *listCommandsInput) (*commandListOutput, error) {
	if a.deps.Commands == nil {
		return nil, errNotImplemented
	}
	cs, err := a.deps.Commands.List(ctx, commands.ListOptions{DeviceID: in.ID, Status: in.Status, Limit: in.Limit})
	if err != nil {
		return nil, err
	}
	out := CommandList{Commands: make([]Command, 0, len(cs))}
	for i := range cs {
		out.Commands = append(out.Commands, commandOut(&cs[i]))
	}
	return &commandListOutput{Body: out}, nil
}

type getCommandInput struct {
	CommandID string `path:"command_id" doc:"Command id." example:"cmd_3f2a9c01b7d4e5f6a7b8c9d0"`
}

func (a *API) getCommand(ctx context.Context, in *getCommandInput) (*commandOutput, error) {
	if a.deps.Commands == nil {
		return nil, errNotImplemented
	}
	c, err := a.deps.Commands.Get(ctx, in.CommandID)
	if err != nil {
		return nil, err
	}
	return &commandOutput{Body: CommandAnswer{Command: commandOut(c)}}, nil
}
