package apitest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/twin"
)

// Commands is a fake command service over the fake devices: it stores
// commands in memory and sends nothing. It holds two commands of ws-1:
// cmd_1, answered, and cmd_2, delivered.
type Commands struct {
	Devices *Devices

	mu   sync.Mutex
	cmds []commands.Command
	n    int
	jobs []commands.Job
}

func newCommands(d *Devices) *Commands {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Commands{Devices: d, cmds: []commands.Command{{
		ID: "cmd_1", DeviceID: "ws-1", Command: "reboot", Payload: []byte(`{"delay":5}`), Status: commands.StatusSucceeded,
		Result: []byte(`{"uptime":0}`), Sends: 1, CreatedAt: at, ExpiresAt: at.Add(time.Hour), SentAt: &at, FinishedAt: &at, UpdatedAt: at,
	}, {
		ID: "cmd_2", DeviceID: "ws-1", Command: "reboot", Status: commands.StatusDelivered, Sends: 1,
		CreatedAt: at, ExpiresAt: at.Add(time.Hour), FirstSentAt: &at, SentAt: &at, DeliveredAt: &at, UpdatedAt: at, JobID: "job_1",
	}}, jobs: []commands.Job{{ID: "job_1", Command: "reboot", ExpiresIn: time.Hour, Target: commands.Target{DeviceIDs: []string{"ws-1"}},
		Status: commands.JobDone, Targets: 1, CreatedAt: at, FinishedAt: &at}}}
}

// Send stores a pending command after the service's checks.
func (c *Commands) Send(ctx context.Context, req commands.SendRequest) (*commands.Command, error) {
	dev, err := c.Devices.Get(ctx, req.DeviceID)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", commands.ErrDeviceNotFound, req.DeviceID)
	}
	t, err := c.Devices.Types.Get(dev.Type)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(t.Commands, req.Command) {
		return nil, fmt.Errorf("%w: %q", commands.ErrUnknownCommand, req.Command)
	}
	if err := t.ValidateParams(req.Command, req.Payload); err != nil {
		return nil, &commands.ParamError{Command: req.Command, Msg: err.Error(), Rule: "type"}
	}
	if req.ExpiresIn == 0 {
		req.ExpiresIn = time.Hour
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	now := time.Date(2025, 1, 3, 0, 0, c.n, 0, time.UTC)
	cmd := commands.Command{ID: fmt.Sprintf("cmd_new_%d", c.n), DeviceID: req.DeviceID, Command: req.Command, Payload: req.Payload,
		Status: commands.StatusQueued, CreatedAt: now, ExpiresAt: now.Add(req.ExpiresIn), UpdatedAt: now, JobID: req.JobID}
	c.cmds = append(c.cmds, cmd)
	return &cmd, nil
}

// Get returns a command.
func (c *Commands) Get(_ context.Context, id string) (*commands.Command, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range c.cmds {
		if cmd.ID == id {
			return &cmd, nil
		}
	}
	return nil, fmt.Errorf("command %s: %w", id, commands.ErrNotFound)
}

// Wait returns the command as it is: nothing answers in the fake.
func (c *Commands) Wait(ctx context.Context, id string, _ time.Duration) (*commands.Command, error) {
	return c.Get(ctx, id)
}

// StartJob runs a fleet job at once over the listed devices (filters
// select nothing in the fake); the fake holds job_1 (cmd_2's) already.
func (c *Commands) StartJob(ctx context.Context, req commands.JobRequest) (*commands.Job, error) {
	if len(req.Target.DeviceIDs) == 0 && req.Target.Group == "" && req.Target.Type == "" && req.Target.Tag == "" && !req.Target.OnlineOnly {
		return nil, fmt.Errorf("%w: target: name device_ids or a filter", commands.ErrInvalid)
	}
	c.mu.Lock()
	id := fmt.Sprintf("job_%d", len(c.jobs)+1)
	c.mu.Unlock()
	at := time.Date(2025, 1, 3, 2, 0, 0, 0, time.UTC)
	j := commands.Job{ID: id, Command: req.Command, Payload: req.Payload, ExpiresIn: time.Hour, Target: req.Target,
		Status: commands.JobDone, CreatedAt: at, FinishedAt: &at}
	for _, dev := range req.Target.DeviceIDs {
		j.Targets++
		if _, err := c.Send(ctx, commands.SendRequest{DeviceID: dev, Command: req.Command, Payload: req.Payload, JobID: id}); err != nil {
			j.Refused++
		}
	}
	c.mu.Lock()
	c.jobs = append(c.jobs, j)
	c.mu.Unlock()
	return &j, nil
}

// GetJob returns a fleet job and its summary.
func (c *Commands) GetJob(_ context.Context, id string) (*commands.Job, commands.JobSummary, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range c.jobs {
		if j.ID == id {
			var n commands.JobSummary
			for _, cmd := range c.cmds {
				if cmd.JobID == id && cmd.Status == commands.StatusQueued {
					n.Queued++
				}
			}
			return &j, n, nil
		}
	}
	return nil, commands.JobSummary{}, fmt.Errorf("job %s: %w", id, commands.ErrJobNotFound)
}

// JobCommands lists a job's commands by device id.
func (c *Commands) JobCommands(ctx context.Context, id, status, after string, limit int) ([]commands.Command, error) {
	if _, _, err := c.GetJob(ctx, id); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []commands.Command{}
	for _, cmd := range c.cmds {
		if cmd.JobID == id && cmd.DeviceID > after && (status == "" || cmd.Status == status) && len(out) < limit {
			out = append(out, cmd)
		}
	}
	slices.SortFunc(out, func(a, b commands.Command) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	return out, nil
}

// Cancel cancels an unfinished command.
func (c *Commands) Cancel(_ context.Context, id, _ string) (*commands.Command, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.cmds {
		cmd := &c.cmds[i]
		if cmd.ID != id {
			continue
		}
		if cmd.FinishedAt != nil {
			return nil, fmt.Errorf("cancel command %s (%s): %w", id, cmd.Status, commands.ErrFinished)
		}
		at := time.Date(2025, 1, 3, 1, 0, 0, 0, time.UTC)
		cmd.Status, cmd.FinishedAt, cmd.UpdatedAt = commands.StatusCanceled, &at, at
		out := *cmd
		return &out, nil
	}
	return nil, fmt.Errorf("command %s: %w", id, commands.ErrNotFound)
}

// List lists a device's commands, newest first.
func (c *Commands) List(ctx context.Context, o commands.ListOptions) ([]commands.Command, error) {
	if _, err := c.Devices.Get(ctx, o.DeviceID); err != nil {
		return nil, fmt.Errorf("%w: %s", commands.ErrDeviceNotFound, o.DeviceID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []commands.Command{}
	for i := len(c.cmds) - 1; i >= 0; i-- {
		if cmd := c.cmds[i]; cmd.DeviceID == o.DeviceID && (o.Status == "" || cmd.Status == o.Status) {
			out = append(out, cmd)
		}
	}
	return out, nil
}

// Twins is a fake twin service over the fake devices.
type Twins struct {
	Devices *Devices

	mu    sync.Mutex
	twins map[string]*twin.Twin
}

// Get returns a device's twin.
func (tw *Twins) Get(ctx context.Context, id string) (*twin.Twin, error) {
	if _, err := tw.Devices.Get(ctx, id); err != nil {
		return nil, fmt.Errorf("%w: %s", twin.ErrDeviceNotFound, id)
	}
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if t, ok := tw.twins[id]; ok {
		c := *t
		return &c, nil
	}
	return &twin.Twin{DeviceID: id, Desired: map[string]any{}, Reported: map[string]any{}}, nil
}

// SetDesired replaces the desired properties and adds one to the version.
func (tw *Twins) SetDesired(ctx context.Context, id string, values map[string]any) (*twin.Twin, error) {
	t, err := tw.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	at := time.Date(2025, 1, 4, 0, 0, 0, 0, time.UTC)
	t.Desired, t.DesiredVersion, t.DesiredAt = values, t.DesiredVersion+1, &at
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.twins == nil {
		tw.twins = map[string]*twin.Twin{}
	}
	tw.twins[id] = t
	c := *t
	return &c, nil
}

// SetDesiredIf is SetDesired while the version is expected.
func (tw *Twins) SetDesiredIf(ctx context.Context, id string, values map[string]any, expected int64) (*twin.Twin, error) {
	t, err := tw.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.DesiredVersion != expected {
		return nil, fmt.Errorf("set desired: %w", &twin.VersionError{DeviceID: id, Current: t.DesiredVersion, Stated: expected})
	}
	return tw.SetDesired(ctx, id, values)
}

// PatchDesired merges patch into the desired properties at version
// expected.
func (tw *Twins) PatchDesired(ctx context.Context, id string, patch map[string]any, expected int64) (*twin.Twin, error) {
	t, err := tw.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return tw.SetDesiredIf(ctx, id, twin.MergePatch(t.Desired, patch), expected)
}
