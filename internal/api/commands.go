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
	Wait(ctx context.Context, id string, d time.Duration) (*commands.Command, error)
	Cancel(ctx context.Context, id, by string) (*commands.Command, error)
	StartJob(ctx context.Context, req commands.JobRequest) (*commands.Job, error)
	GetJob(ctx context.Context, id string) (*commands.Job, commands.JobSummary, error)
	JobCommands(ctx context.Context, id, status, after string, limit int) ([]commands.Command, error)
}

// MaxWait bounds ?wait=. It stays below the HTTP server's write timeout
// (config refuses an http.write_timeout under config.MinWriteTimeout), so
// that the answer of a wait that ran out is still written.
const MaxWait = 50 * time.Second

func (a *API) registerCommands() {
	register(a, permOperator, huma.Operation{
		OperationID: "sendCommand", Method: http.MethodPost, Path: "/api/v1/devices/{id}/commands", Tags: []string{"commands"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Send a command to a device",
		Description: "Stores the command. If the device is connected it is handed to the broker at once (sent), published " +
			"to devices/{id}/commands/{command_id} at QoS 1; otherwise it is queued and handed over when the device " +
			"connects, oldest first, and again every 30s until the device acknowledges it (delivered) or it expires. " +
			"The command must be one the device type declares, its payload must satisfy the command's declared " +
			"parameters.\n\ndelivered means the device's MQTT client sent the PUBACK of that publish. A device must " +
			"subscribe to devices/{id}/commands/+ at QoS 1 for that (the SDKs do): MQTT delivers a message at the " +
			"lower of the publish's and the subscription's QoS, so a device subscribed at QoS 0 receives its " +
			"commands without acknowledging them; they stay sent (handed to the broker), are handed over again " +
			"every 30s until its answer finishes them (devices dedupe by command id), and never become delivered." +
			"\n\nWith ?wait= (at most 50s, below the HTTP write timeout) the answer waits for the command to " +
			"finish: 201 once finished, 202 with the current state when the wait ran out.",
	}, a.sendCommand)
	register(a, permViewer, huma.Operation{
		OperationID: "listCommands", Method: http.MethodGet, Path: "/api/v1/devices/{id}/commands", Tags: []string{"commands"},
		Summary: "List a device's commands", Description: "Newest first.",
	}, a.listCommands)
	register(a, permViewer, huma.Operation{
		OperationID: "getCommand", Method: http.MethodGet, Path: "/api/v1/commands/{command_id}", Tags: []string{"commands"},
		Summary: "Get a command", Description: "With its status, its times and, once the device answered, its result. " +
			"With ?wait= (at most 50s) the answer waits for the command to finish (200 either way).",
	}, a.getCommand)
	register(a, permOperator, huma.Operation{
		OperationID: "cancelCommand", Method: http.MethodPost, Path: "/api/v1/commands/{command_id}/cancel", Tags: []string{"commands"},
		Summary: "Cancel a command",
		Description: "A queued, sent or delivered command becomes canceled (device_command_canceled) and is no longer " +
			"handed to the device; an answer from the device is then refused (command_finished, reported on " +
			"devices/{id}/errors). The device is not told: a device that already has the command may still " +
			"carry it out (cancel is the hub's record, and stops resends and the result). A finished command " +
			"is left as it is: 409 command_finished.",
	}, a.cancelCommand)
	register(a, permOperator, huma.Operation{
		OperationID: "sendFleetCommand", Method: http.MethodPost, Path: "/api/v1/fleet/commands", Tags: []string{"commands"},
		DefaultStatus: http.StatusAccepted,
		Summary:       "Send a command to many devices",
		Description: "Starts a fleet job: the command goes to the listed device ids, or to every device the filters " +
			"select (group, type, tag, online only; all that are given). The answer comes at once with the job id; " +
			"the job fans out in the background in bounded chunks. Follow it with GET /api/v1/fleet/commands/{job_id}. " +
			"Devices whose type does not declare the command, or whose parameters refuse the payload, are counted refused.",
	}, a.sendFleetCommand)
	register(a, permViewer, huma.Operation{
		OperationID: "getFleetCommand", Method: http.MethodGet, Path: "/api/v1/fleet/commands/{job_id}", Tags: []string{"commands"},
		Summary:     "Get a fleet job with its summary",
		Description: "The job (running while it fans out, then done) and how many of its commands are in each status.",
	}, a.getFleetCommand)
	register(a, permViewer, huma.Operation{
		OperationID: "listFleetCommandDevices", Method: http.MethodGet, Path: "/api/v1/fleet/commands/{job_id}/devices", Tags: []string{"commands"},
		Summary:     "List a fleet job's commands, by device",
		Description: "Pages by device id: pass the answer's next as after.",
	}, a.listFleetCommandDevices)
}

// Command is a command sent to a device.
type Command struct {
	ID          string     `json:"id" example:"cmd_187c2d1e9a4b5c60a1b2c3d4"`
	DeviceID    string     `json:"device_id" example:"ws-1"`
	Command     string     `json:"command" example:"reboot"`
	Payload     any        `json:"payload,omitempty" doc:"The payload sent with the command, any JSON value."`
	Status      string     `json:"status" enum:"queued,sent,delivered,succeeded,failed,expired,canceled" doc:"queued: not handed to the broker yet (the device is offline); sent: handed to the broker, not acknowledged by the device; delivered: the device's MQTT client acknowledged it (PUBACK); succeeded or failed: the device's answer; expired: no answer in time; canceled: an operator canceled it."`
	Result      any        `json:"result,omitempty" doc:"The device's result, any JSON value."`
	Sends       int        `json:"sends" doc:"How often it was handed to the broker."`
	Resends     int        `json:"resends" doc:"How often it was handed to the broker again (sends - 1)."`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	FirstSentAt *time.Time `json:"first_sent_at,omitempty" doc:"When it was first handed to the broker."`
	SentAt      *time.Time `json:"sent_at,omitempty" doc:"When it was last handed to the broker (the last resend)."`
	DeliveredAt *time.Time `json:"delivered_at,omitempty" doc:"When the device acknowledged it."`
	FinishedAt  *time.Time `json:"finished_at,omitempty" doc:"When it succeeded, failed, expired or was canceled."`
	UpdatedAt   time.Time  `json:"updated_at"`
	JobID       string     `json:"job_id,omitempty" doc:"The fleet job that sent it."`
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
		Result: rawValue(c.Result), Sends: c.Sends, Resends: c.Resends(), CreatedAt: c.CreatedAt, ExpiresAt: c.ExpiresAt,
		FirstSentAt: c.FirstSentAt, SentAt: c.SentAt, DeliveredAt: c.DeliveredAt, FinishedAt: c.FinishedAt,
		UpdatedAt: c.UpdatedAt, JobID: c.JobID,
	}
}

// SendCommandRequest is the body of POST /api/v1/devices/{id}/commands.
type SendCommandRequest struct {
	Command   string `json:"command" minLength:"1" maxLength:"128" doc:"A command the device type declares." example:"reboot"`
	Payload   any    `json:"payload,omitempty" doc:"Any JSON value, handed to the device as is; an object of the declared parameters when the command declares some."`
	ExpiresIn string `json:"expires_in,omitempty" doc:"How long the device has to answer (Go duration, 1s to 7 days); default 1h." example:"10m"`
}

// CommandAnswer is the answer of the operations on one command.
type CommandAnswer struct {
	Command Command `json:"command"`
}

type commandOutput struct{ Body CommandAnswer }

type sendCommandOutput struct {
	Status int
	Body   CommandAnswer
}

// WaitInput is the ?wait= parameter of the command operations.
type WaitInput struct {
	Wait string `query:"wait" doc:"Hold the answer until the command finished or this long passed (Go duration, up to 50s: below the HTTP write timeout)." example:"10s"`
}

func (w WaitInput) duration() (time.Duration, error) {
	if w.Wait == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(w.Wait)
	if err != nil || d < 0 || d > MaxWait {
		return 0, invalidArg("wait", "must be a Go duration from 0s to %s such as 10s, got %q", MaxWait, w.Wait)
	}
	return d, nil
}

type sendCommandInput struct {
	DeviceIDInput
	WaitInput
	Body SendCommandRequest
}

func (a *API) sendCommand(ctx context.Context, in *sendCommandInput) (*sendCommandOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Commands == nil {
		return nil, errNotImplemented
	}
	wait, err := in.duration()
	if err != nil {
		return nil, err
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
	status := http.StatusCreated
	if wait > 0 {
		w, err := a.deps.Commands.Wait(ctx, c.ID, wait)
		if err != nil {
			return nil, err
		}
		c = w
		if c.FinishedAt == nil {
			status = http.StatusAccepted
		}
	}
	return &sendCommandOutput{Status: status, Body: CommandAnswer{Command: commandOut(c)}}, nil
}

// CommandList is the answer of GET /api/v1/devices/{id}/commands.
type CommandList struct {
	Commands []Command `json:"commands"`
}

type commandListOutput struct{ Body CommandList }

type listCommandsInput struct {
	DeviceIDInput
	Status string `query:"status" enum:"queued,sent,delivered,succeeded,failed,expired,canceled," doc:"Only commands with this status."`
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

// CommandIDInput is the command id in the path.
type CommandIDInput struct {
	CommandID string `path:"command_id" doc:"Command id." example:"cmd_187c2d1e9a4b5c60a1b2c3d4"`
}

type getCommandInput struct {
	CommandIDInput
	WaitInput
}

func (a *API) getCommand(ctx context.Context, in *getCommandInput) (*commandOutput, error) {
	if a.deps.Commands == nil {
		return nil, errNotImplemented
	}
	wait, err := in.duration()
	if err != nil {
		return nil, err
	}
	var c *commands.Command
	if wait > 0 {
		c, err = a.deps.Commands.Wait(ctx, in.CommandID, wait)
	} else {
		c, err = a.deps.Commands.Get(ctx, in.CommandID)
	}
	if err != nil {
		return nil, err
	}
	return &commandOutput{Body: CommandAnswer{Command: commandOut(c)}}, nil
}

func (a *API) cancelCommand(ctx context.Context, in *CommandIDInput) (*commandOutput, error) {
	if a.deps.Commands == nil {
		return nil, errNotImplemented
	}
	by := ""
	if tok := infoFrom(ctx).token; tok != nil {
		by = tok.ID
	}
	c, err := a.deps.Commands.Cancel(ctx, in.CommandID, by)
	if err != nil {
		return nil, err
	}
	setTarget(ctx, c.DeviceID)
	return &commandOutput{Body: CommandAnswer{Command: commandOut(c)}}, nil
}

// FleetTarget selects the devices of a fleet command.
type FleetTarget struct {
	DeviceIDs  []string `json:"device_ids,omitempty" maxItems:"10000" doc:"These devices (not with filters)."`
	Group      string   `json:"group,omitempty" doc:"Devices of this group."`
	Type       string   `json:"type,omitempty" doc:"Devices of this type."`
	Tag        string   `json:"tag,omitempty" doc:"Devices with this tag."`
	OnlineOnly bool     `json:"online_only,omitempty" doc:"Only devices connected when the job reaches them."`
}

// SendFleetCommandRequest is the body of POST /api/v1/fleet/commands.
type SendFleetCommandRequest struct {
	Command   string      `json:"command" minLength:"1" maxLength:"128" example:"reboot"`
	Payload   any         `json:"payload,omitempty" doc:"Any JSON value; an object of the declared parameters when the command declares some."`
	ExpiresIn string      `json:"expires_in,omitempty" doc:"How long each device has to answer (Go duration, 1s to 7 days); default 1h." example:"10m"`
	Target    FleetTarget `json:"target"`
}

// FleetJob is a fleet command.
type FleetJob struct {
	ID         string      `json:"id" example:"job_187c2d1e9a4b5c60a1b2c3d4"`
	Command    string      `json:"command"`
	Payload    any         `json:"payload,omitempty"`
	ExpiresIn  string      `json:"expires_in"`
	Target     FleetTarget `json:"target"`
	Status     string      `json:"status" enum:"running,done" doc:"running: fanning out; done: every target has its command or was refused."`
	Targets    int         `json:"targets" doc:"Devices matched so far."`
	Refused    int         `json:"refused" doc:"Matched devices the command could not go to."`
	Refusal    string      `json:"refusal,omitempty" doc:"The first refusal's reason."`
	CreatedAt  time.Time   `json:"created_at"`
	FinishedAt *time.Time  `json:"finished_at,omitempty" doc:"When the fan-out ended."`
}

// FleetJobSummary counts a fleet job's commands by status.
type FleetJobSummary struct {
	Queued    int `json:"queued"`
	Sent      int `json:"sent"`
	Delivered int `json:"delivered"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Expired   int `json:"expired"`
	Canceled  int `json:"canceled"`
}

// FleetJobAnswer is the answer of the fleet job operations.
type FleetJobAnswer struct {
	Job     FleetJob         `json:"job"`
	Summary *FleetJobSummary `json:"summary,omitempty"`
}

func jobOut(j *commands.Job) FleetJob {
	t := j.Target
	return FleetJob{ID: j.ID, Command: j.Command, Payload: rawValue(j.Payload), ExpiresIn: j.ExpiresIn.String(),
		Target: FleetTarget{DeviceIDs: t.DeviceIDs, Group: t.Group, Type: t.Type, Tag: t.Tag, OnlineOnly: t.OnlineOnly},
		Status: j.Status, Targets: j.Targets, Refused: j.Refused, Refusal: j.Refusal, CreatedAt: j.CreatedAt, FinishedAt: j.FinishedAt}
}

type fleetJobOutput struct{ Body FleetJobAnswer }

func (a *API) sendFleetCommand(ctx context.Context, in *struct{ Body SendFleetCommandRequest }) (*fleetJobOutput, error) {
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
	t := in.Body.Target
	j, err := a.deps.Commands.StartJob(ctx, commands.JobRequest{Command: in.Body.Command, Payload: payload, ExpiresIn: exp,
		Target: commands.Target{DeviceIDs: t.DeviceIDs, Group: t.Group, Type: t.Type, Tag: t.Tag, OnlineOnly: t.OnlineOnly}})
	if err != nil {
		return nil, err
	}
	setAuditDetail(ctx, "job "+j.ID)
	return &fleetJobOutput{Body: FleetJobAnswer{Job: jobOut(j)}}, nil
}

// JobIDInput is the fleet job id in the path.
type JobIDInput struct {
	JobID string `path:"job_id" doc:"Fleet job id." example:"job_187c2d1e9a4b5c60a1b2c3d4"`
}

func (a *API) getFleetCommand(ctx context.Context, in *JobIDInput) (*fleetJobOutput, error) {
	if a.deps.Commands == nil {
		return nil, errNotImplemented
	}
	j, n, err := a.deps.Commands.GetJob(ctx, in.JobID)
	if err != nil {
		return nil, err
	}
	return &fleetJobOutput{Body: FleetJobAnswer{Job: jobOut(j), Summary: &FleetJobSummary{Queued: n.Queued, Sent: n.Sent,
		Delivered: n.Delivered, Succeeded: n.Succeeded, Failed: n.Failed, Expired: n.Expired, Canceled: n.Canceled}}}, nil
}

// FleetCommandList is a page of a fleet job's commands.
type FleetCommandList struct {
	Commands []Command `json:"commands"`
	Next     string    `json:"next,omitempty" doc:"Pass as after for the next page; absent on the last."`
}

type fleetCommandListOutput struct{ Body FleetCommandList }

type listFleetCommandDevicesInput struct {
	JobIDInput
	Status string `query:"status" enum:"queued,sent,delivered,succeeded,failed,expired,canceled," doc:"Only commands with this status."`
	After  string `query:"after" doc:"Only devices with an id after this one (the previous page's next)."`
	Limit  int    `query:"limit" minimum:"1" maximum:"1000" doc:"At most this many; default 100."`
}

func (a *API) listFleetCommandDevices(ctx context.Context, in *listFleetCommandDevicesInput) (*fleetCommandListOutput, error) {
	if a.deps.Commands == nil {
		return nil, errNotImplemented
	}
	limit := in.Limit
	if limit == 0 {
		limit = 100
	}
	cs, err := a.deps.Commands.JobCommands(ctx, in.JobID, in.Status, in.After, limit)
	if err != nil {
		return nil, err
	}
	out := FleetCommandList{Commands: make([]Command, 0, len(cs))}
	for i := range cs {
		out.Commands = append(out.Commands, commandOut(&cs[i]))
	}
	if len(cs) == limit {
		out.Next = cs[len(cs)-1].DeviceID
	}
	return &fleetCommandListOutput{Body: out}, nil
}
