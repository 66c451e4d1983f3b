package deviceconfig

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// Job is a background re-render of the devices a template or group change
// affects. Changed counts the devices whose checksum changed (each got one
// config_modified); Failed those that could not be rendered or stored.
type Job struct {
	ID         string     `json:"id"`
	What       string     `json:"what"`
	Action     string     `json:"action"`
	Affected   int        `json:"affected"`
	Done       int        `json:"done"`
	Changed    int        `json:"changed"`
	Failed     int        `json:"failed"`
	Status     string     `json:"status"` // queued, running, done, failed
	Error      string     `json:"error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`

	devices map[string]bool
}

// Job statuses.
const (
	JobQueued  = "queued"
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// ErrJobNotFound: no job has this id (jobs are kept in memory, the last
// maxJobs of them).
var ErrJobNotFound = errors.New("job not found")

const maxJobs = 256

type jobs struct {
	mu    sync.Mutex
	byID  map[string]*Job
	order []string
	queue chan *Job
}

func newJobs() *jobs { return &jobs{byID: map[string]*Job{}, queue: make(chan *Job, maxJobs)} }

func (js *jobs) start(what, action string, devices []string) *Job {
	b := make([]byte, 8)
	rand.Read(b)
	j := &Job{ID: "job-" + hex.EncodeToString(b), What: what, Action: action, Affected: len(devices), Status: JobQueued,
		CreatedAt: time.Now().UTC(), devices: make(map[string]bool, len(devices))}
	for _, id := range devices {
		j.devices[id] = true
	}
	js.mu.Lock()
	js.byID[j.ID] = j
	js.order = append(js.order, j.ID)
	if len(js.order) > maxJobs {
		delete(js.byID, js.order[0])
		js.order = js.order[1:]
	}
	js.mu.Unlock()
	if len(devices) == 0 {
		js.finish(j, nil)
		return j.snapshot(&js.mu)
	}
	select {
	case js.queue <- j:
	default:
		js.finish(j, errors.New("too many re-render jobs queued"))
	}
	return j.snapshot(&js.mu)
}

func (j *Job) snapshot(mu *sync.Mutex) *Job {
	mu.Lock()
	defer mu.Unlock()
	c := *j
	c.devices = nil
	return &c
}

func (js *jobs) finish(j *Job, err error) {
	js.mu.Lock()
	defer js.mu.Unlock()
	now := time.Now().UTC()
	j.FinishedAt = &now
	j.Status = JobDone
	if err != nil {
		j.Status, j.Error = JobFailed, err.Error()
	}
}

// Job returns a job's progress.
func (s *Service) Job(id string) (*Job, error) {
	s.jobs.mu.Lock()
	j, ok := s.jobs.byID[id]
	s.jobs.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	return j.snapshot(&s.jobs.mu), nil
}

// Wait blocks until the job finished or ctx is done, and returns it.
func (s *Service) WaitJob(ctx context.Context, id string) (*Job, error) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		j, err := s.Job(id)
		if err != nil || j.FinishedAt != nil {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-t.C:
		}
	}
}

// runJob re-renders the job's devices, a chunk at a time: under wmu it
// reads a page of configurations, renders those of the job, commits the
// changed ones (one change each, group-committed together) and then
// notifies their devices.
func (s *Service) runJob(ctx context.Context, j *Job) {
	s.jobs.mu.Lock()
	j.Status = JobRunning
	s.jobs.mu.Unlock()
	q := ListQuery{Limit: s.opts.JobChunk}
	for {
		n, more, err := s.jobChunk(ctx, j, &q)
		if err != nil {
			s.log.Error("re-render job", "job", j.ID, "what", j.What, "err", err)
			s.jobs.finish(j, err)
			return
		}
		_ = n
		if !more {
			break
		}
	}
	s.jobs.finish(j, nil)
	s.log.Info("re-render job done", "job", j.ID, "what", j.What, "affected", j.Affected, "changed", j.Changed, "failed", j.Failed)
}

func (s *Service) jobChunk(ctx context.Context, j *Job, q *ListQuery) (int, bool, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	rows, err := s.d.Store.ListDeviceConfigs(ctx, *q)
	if err != nil {
		return 0, false, err
	}
	more := len(rows) == q.Limit
	if more {
		q.After = rows[len(rows)-1].DeviceID
	}
	type pending struct {
		t   *commit.Ticket
		res *Result
	}
	var ps []pending
	done, failed := 0, 0
	for i := range rows {
		r := &rows[i]
		if !j.devices[r.DeviceID] {
			continue
		}
		done++
		cur := r.DeviceConfig
		next := cur.Clone()
		out, err := s.render(r.Device, next)
		if err != nil {
			// The edit was checked against every device; a device
			// changed since may still fail: it keeps its configuration.
			s.log.Warn("re-render", "job", j.ID, "device_id", r.DeviceID, "err", err)
			failed++
			continue
		}
		ch, res, err := s.buildChange(r.Device, &cur, next, out, j.Action)
		if err != nil {
			return 0, false, err
		}
		if ch == nil {
			continue
		}
		t, err := s.d.Committer.Enqueue(ctx, ch)
		if err != nil {
			return 0, false, err
		}
		ps = append(ps, pending{t, res})
	}
	changed := 0
	var firstErr error
	for _, p := range ps {
		if err := p.t.Wait(ctx); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		s.committed(p.res.Config)
		if p.res.Changed {
			changed++
			s.notify(p.res.Config)
		}
	}
	s.jobs.mu.Lock()
	j.Done += done
	j.Changed += changed
	j.Failed += failed
	s.jobs.mu.Unlock()
	if firstErr != nil && errors.Is(firstErr, commit.ErrClosed) {
		return done, false, firstErr
	}
	return done, more, nil
}
