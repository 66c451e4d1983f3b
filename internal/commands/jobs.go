package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// A fleet job sends one command to many devices: a list of ids, or the
// devices a filter selects (group, type, tag, online only). Starting a
// job only stores it; the service's job loop resolves the targets page by
// page and stores their commands in chunks of Options.FleetChunk (one
// group commit each), handing each over like any command, so ten thousand
// targets never hold the API call and never flood the commit queue. Jobs
// run one at a time; a job a stopped hub left running resumes at the next
// start, skipping the devices that already have its command.

// Job statuses.
const (
	JobRunning = "running" // the fan-out is in progress
	JobDone    = "done"    // every target has its command (or was refused)
)

// MaxJobDeviceIDs bounds a job's explicit list of device ids.
const MaxJobDeviceIDs = 10000

// Target selects a job's devices: the listed ids, or else the devices
// matching every filter given. At least one must be given.
type Target struct {
	DeviceIDs  []string `json:"device_ids,omitempty"`
	Group      string   `json:"group,omitempty"`
	Type       string   `json:"type,omitempty"`
	Tag        string   `json:"tag,omitempty"`
	OnlineOnly bool     `json:"online_only,omitempty"`
}

// Job is a fleet command.
type Job struct {
	ID         string
	Command    string
	Payload    []byte // JSON, or nil
	ExpiresIn  time.Duration
	Target     Target
	Status     string
	Targets    int    // devices matched so far
	Refused    int    // matched devices the command could not be sent to
	Refusal    string // the first refusal's reason
	CreatedAt  time.Time
	FinishedAt *time.Time
}

// JobSummary counts a job's commands by status.
type JobSummary struct {
	Queued, Sent, Delivered, Succeeded, Failed, Expired, Canceled int
}

// JobStore keeps fleet jobs (written directly: a job is no device's state
// and no signal describes it; its commands go through the commit path).
type JobStore interface {
	CreateCommandJob(ctx context.Context, j *Job) error
	// UpdateCommandJob stores a job's status, counts, refusal and finish
	// time.
	UpdateCommandJob(ctx context.Context, j *Job) error
	// GetCommandJob returns a job or an error wrapping ErrJobNotFound.
	GetCommandJob(ctx context.Context, id string) (*Job, error)
	RunningCommandJobs(ctx context.Context) ([]Job, error)
	// CommandJobCounts counts the job's commands by status.
	CommandJobCounts(ctx context.Context, id string) (map[string]int, error)
	// JobCommands lists the job's commands by device id after after.
	JobCommands(ctx context.Context, id, status, after string, limit int) ([]Command, error)
}

// FleetDevices lists devices for a job's filters (the registry).
type FleetDevices interface {
	List(ctx context.Context, opts registry.ListOptions) ([]registry.Device, error)
}

// ErrJobNotFound: no such fleet job.
var ErrJobNotFound = errors.New("fleet command job not found")

// JobRequest is a fleet command to start.
type JobRequest struct {
	Command   string
	Payload   json.RawMessage
	ExpiresIn time.Duration
	Target    Target
}

// StartJob stores a fleet job and returns it at once; the job loop fans
// it out (see Job).
func (s *Service) StartJob(ctx context.Context, req JobRequest) (*Job, error) {
	if s.d.Jobs == nil || s.d.Fleet == nil {
		return nil, fmt.Errorf("%w: this hub runs no fleet jobs", ErrInvalid)
	}
	t := req.Target
	switch {
	case req.Command == "":
		return nil, fmt.Errorf("%w: command is required", ErrInvalid)
	case len(t.DeviceIDs) > 0 && (t.Group != "" || t.Type != "" || t.Tag != "" || t.OnlineOnly):
		return nil, fmt.Errorf("%w: target: device_ids or filters (group, type, tag, online_only), not both", ErrInvalid)
	case len(t.DeviceIDs) == 0 && t.Group == "" && t.Type == "" && t.Tag == "" && !t.OnlineOnly:
		return nil, fmt.Errorf("%w: target: name device_ids or at least one filter (group, type, tag, online_only)", ErrInvalid)
	case len(t.DeviceIDs) > MaxJobDeviceIDs:
		return nil, fmt.Errorf("%w: target: at most %d device_ids (use a filter)", ErrInvalid, MaxJobDeviceIDs)
	case len(req.Payload) > s.opts.MaxPayloadBytes:
		return nil, fmt.Errorf("%w: payload larger than %d bytes", ErrInvalid, s.opts.MaxPayloadBytes)
	case len(req.Payload) > 0 && !json.Valid(req.Payload):
		return nil, fmt.Errorf("%w: payload is not JSON", ErrInvalid)
	}
	exp := req.ExpiresIn
	switch {
	case exp == 0:
		exp = s.opts.DefaultExpiry
	case exp < time.Second || exp > s.opts.MaxExpiry:
		return nil, fmt.Errorf("%w: expires_in must be from 1s to %s", ErrInvalid, s.opts.MaxExpiry)
	}
	ids := slices.Clone(t.DeviceIDs)
	slices.Sort(ids)
	t.DeviceIDs = slices.Compact(ids)
	j := &Job{ID: "job_" + newID()[4:], Command: req.Command, Payload: compact(req.Payload), ExpiresIn: exp, Target: t,
		Status: JobRunning, CreatedAt: s.now()}
	if err := s.d.Jobs.CreateCommandJob(ctx, j); err != nil {
		return nil, fmt.Errorf("store fleet job: %w", err)
	}
	select {
	case s.jobs <- j.ID:
	default:
		// The loop is busy with enough jobs: it finds this one among the
		// running ones when it has done them.
	}
	return j, nil
}

// GetJob returns a fleet job with the count of its commands by status.
func (s *Service) GetJob(ctx context.Context, id string) (*Job, JobSummary, error) {
	if s.d.Jobs == nil {
		return nil, JobSummary{}, fmt.Errorf("job %s: %w", id, ErrJobNotFound)
	}
	j, err := s.d.Jobs.GetCommandJob(ctx, id)
	if err != nil {
		return nil, JobSummary{}, err
	}
	n, err := s.d.Jobs.CommandJobCounts(ctx, id)
	if err != nil {
		return nil, JobSummary{}, fmt.Errorf("count commands of job %s: %w", id, err)
	}
	return j, JobSummary{Queued: n[StatusQueued], Sent: n[StatusSent], Delivered: n[StatusDelivered], Succeeded: n[StatusSucceeded],
		Failed: n[StatusFailed], Expired: n[StatusExpired], Canceled: n[StatusCanceled]}, nil
}

// JobCommands pages through a job's commands by device id.
func (s *Service) JobCommands(ctx context.Context, id, status, after string, limit int) ([]Command, error) {
	if _, _, err := s.GetJob(ctx, id); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	return s.d.Jobs.JobCommands(ctx, id, status, after, limit)
}

// runJobs runs the jobs left running by a previous start, then each new
// one, until ctx is done.
func (s *Service) runJobs(ctx context.Context) {
	if s.d.Jobs == nil || s.d.Fleet == nil {
		return
	}
	// In a cluster the jobs run on the node holding their lease (RunJobs);
	// a job started through another node is found at the next look.
	var poll <-chan time.Time
	if s.opts.Node != "" {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		poll = t.C
	}
	for {
		js, err := s.d.Jobs.RunningCommandJobs(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("list running fleet jobs", "err", err)
		}
		for i := range js {
			if err := s.runJob(ctx, &js[i]); err != nil && ctx.Err() == nil {
				s.log.Error("fleet job", "job_id", js[i].ID, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.jobs:
		case <-poll:
		}
	}
}

// RunJobs runs the fleet job loop until ctx is done: in cluster mode
// (Options.Node set) Run leaves it to the node that holds the jobs' lease.
func (s *Service) RunJobs(ctx context.Context) error {
	s.runJobs(ctx)
	return nil
}

// runJob fans one job out. A job a previous start began skips the devices
// that have its command already.
func (s *Service) runJob(ctx context.Context, j *Job) error {
	done := map[string]bool{}
	for after := ""; ; {
		cs, err := s.d.Jobs.JobCommands(ctx, j.ID, "", after, 1000)
		if err != nil {
			return err
		}
		for _, c := range cs {
			done[c.DeviceID] = true
		}
		if len(cs) < 1000 {
			break
		}
		after = cs[len(cs)-1].DeviceID
	}
	j.Targets, j.Refused = len(done), 0
	chunk := make([]string, 0, s.opts.FleetChunk)
	flush := func() error {
		err := s.sendChunk(ctx, j, chunk)
		chunk = chunk[:0]
		return err
	}
	add := func(id string) error {
		if done[id] {
			return nil
		}
		j.Targets++
		chunk = append(chunk, id)
		if len(chunk) == cap(chunk) {
			return flush()
		}
		return nil
	}
	if len(j.Target.DeviceIDs) > 0 {
		for _, id := range j.Target.DeviceIDs {
			if err := add(id); err != nil {
				return err
			}
		}
	} else {
		// Every filter, the tag included, is applied by the store's query.
		opts := registry.ListOptions{Group: j.Target.Group, Type: j.Target.Type, Tag: j.Target.Tag, Limit: 1000}
		if j.Target.OnlineOnly {
			on := true
			opts.Connected = &on
		}
		for {
			devs, err := s.d.Fleet.List(ctx, opts)
			if err != nil {
				return fmt.Errorf("list targets: %w", err)
			}
			for _, d := range devs {
				if err := add(d.ID); err != nil {
					return err
				}
			}
			if len(devs) < opts.Limit {
				break
			}
			opts.After = devs[len(devs)-1].ID
		}
	}
	if err := flush(); err != nil {
		return err
	}
	now := s.now()
	j.Status, j.FinishedAt = JobDone, &now
	if err := s.d.Jobs.UpdateCommandJob(ctx, j); err != nil {
		return fmt.Errorf("finish job %s: %w", j.ID, err)
	}
	s.log.Info("fleet job fanned out", "job_id", j.ID, "targets", j.Targets, "refused", j.Refused)
	return nil
}

// sendChunk stores the commands of a chunk of devices together (one
// change each, one group commit) and then hands them over; devices the
// command cannot go to are counted refused.
func (s *Service) sendChunk(ctx context.Context, j *Job, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	now := s.now()
	type pending struct {
		p      *prepared
		t      *commit.Ticket
		direct bool
	}
	ps := make([]pending, 0, len(ids))
	for _, id := range ids {
		p, err := s.prepare(SendRequest{DeviceID: id, Command: j.Command, Payload: j.Payload, ExpiresIn: j.ExpiresIn, JobID: j.ID}, now)
		if err != nil {
			j.Refused++
			if j.Refusal == "" {
				j.Refusal = fmt.Sprintf("%s: %v", id, err)
			}
			continue
		}
		t, direct, err := s.enqueue(ctx, p, now)
		if err != nil {
			return err
		}
		ps = append(ps, pending{p, t, direct})
	}
	for _, x := range ps {
		if err := x.t.Wait(ctx); err != nil {
			return fmt.Errorf("store command of job %s for %s: %w", j.ID, x.p.cmd.DeviceID, err)
		}
		s.stored(x.p, x.direct)
	}
	return s.d.Jobs.UpdateCommandJob(ctx, j)
}
