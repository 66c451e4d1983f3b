package firmware

import (
	"context"
	"errors"
	"fmt"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// Cluster mode (Deps.Remote set). One node at a time runs the scheduler
// (the holder of job/firmware, "the owner"): it alone keeps rollouts in
// memory and writes their state, so that no two nodes decide about one
// device or one rollout. The other nodes:
//
//   - store a rollout started through them; the owner learns of it from
//     its rollout_status_changed event and loads it from the store
//     (Follow);
//   - pass a pause, resume or cancel to the owner (Remote), which applies
//     it and answers; with no owner reachable the request fails
//     (ErrUnavailable) rather than write what the owner would overwrite;
//   - commit a device's status report with a firmware_status_reported
//     event, which the owner applies from the event log (Follow): every
//     report exactly once and in commit order, whichever node the device is
//     on, across a change of owner (the owner stores the Seq of the last
//     report it applied in the same change as what the report changed,
//     and a new owner follows the log from there);
//   - read rollouts from the store.

// ErrUnavailable: in cluster mode, no node running the rollout scheduler
// answered (it is moving to another node): try again.
var ErrUnavailable = errors.New("the rollout scheduler is not reachable now")

// ControlOp is an operator's change of a rollout that the owner applies.
type ControlOp string

// The control operations.
const (
	ControlPause  ControlOp = "pause"
	ControlResume ControlOp = "resume"
	ControlCancel ControlOp = "cancel"
)

// Remote passes a control to the node running the scheduler and returns
// its answer (the errors of Pause, Resume and Cancel, or ErrUnavailable).
type Remote interface {
	Control(ctx context.Context, op ControlOp, rolloutID string) (*Progress, error)
}

// CursorTxStore stores how far the owner followed the event log (cluster
// mode: the PostgreSQL transaction implements it).
type CursorTxStore interface {
	SetFirmwareCursor(ctx context.Context, seq int64) error
}

// FollowedTypes are the events the owner follows in cluster mode (Follow).
var FollowedTypes = []events.Type{events.RolloutStatusChanged, events.FirmwareStatusReported, events.DeviceConnected, events.DeviceDisconnected}

// clustered reports whether rollouts are run by one node of several.
func (s *Service) clustered() bool { return s.d.Remote != nil }

// local reports whether this node holds the rollouts: always outside
// cluster mode, while it runs the scheduler in it.
func (s *Service) local() bool { return !s.clustered() || s.owner.Load() }

// Lead makes this node the owner until ctx is done (cluster mode: the
// caller holds job/firmware and has loaded the rollouts with Load).
// Controls passed through Remote are applied here meanwhile.
func (s *Service) Lead(ctx context.Context) {
	s.owner.Store(true)
	<-ctx.Done()
	s.owner.Store(false)
}

// Control applies a control passed on by another node (Remote); it
// returns ErrUnavailable when this node is not the owner (any more).
func (s *Service) Control(ctx context.Context, op ControlOp, rolloutID string) (*Progress, error) {
	if !s.local() {
		return nil, ErrUnavailable
	}
	switch op {
	case ControlPause:
		return s.Pause(ctx, rolloutID)
	case ControlResume:
		return s.Resume(ctx, rolloutID)
	case ControlCancel:
		return s.Cancel(ctx, rolloutID)
	}
	return nil, fmt.Errorf("%w: control %q", ErrInvalid, op)
}

// SaveCursor stores that the owner followed the event log up to seq (its
// reports applied). Fenced by ctx's lease like the owner's other writes.
func (s *Service) SaveCursor(ctx context.Context, seq int64) error {
	if err := s.d.Committer.Submit(ctx, &commit.Change{Ops: []commit.Op{&Op{Cursor: seq}}}); err != nil {
		return fmt.Errorf("save firmware cursor: %w", err)
	}
	return nil
}

// Follow takes the owner's events, in Seq order (FollowedTypes): a rollout
// started through another node is loaded, a report is applied, and a
// device's connect or disconnect observed.
func (s *Service) Follow(ctx context.Context, e events.Event) {
	switch e.Type {
	case events.RolloutStatusChanged:
		if rs, ok := e.Args.(*events.RolloutStatus); ok {
			if err := s.adopt(ctx, rs.RolloutID); err != nil && ctx.Err() == nil {
				s.log.Error("rollout started through another node not loaded", "rollout", rs.RolloutID, "err", err)
			}
		}
	case events.FirmwareStatusReported:
		if fr, ok := e.Args.(*events.FirmwareReport); ok {
			s.applyReport(ctx, e, fr)
		}
	case events.DeviceConnected, events.DeviceDisconnected:
		s.Observe(ctx, e)
	}
}

// adopt loads a rollout this node does not hold and that is not finished.
func (s *Service) adopt(ctx context.Context, id string) error {
	s.mu.Lock()
	_, known := s.active[id]
	s.mu.Unlock()
	if known {
		return nil
	}
	r, err := s.d.Store.GetRollout(ctx, id)
	if err != nil {
		return err
	}
	if r.Status.Final() {
		return nil
	}
	if err := s.loadRollout(ctx, *r); err != nil {
		return err
	}
	s.log.Info("rollout loaded from the store", "rollout", id, "status", r.Status)
	s.poke()
	return nil
}

// reportElsewhere commits a device's report (cluster mode): msg, the
// device's versions (fields) and the firmware_status_reported event that
// the owner applies.
func (s *Service) reportElsewhere(ctx context.Context, deviceID, deviceType string, rep Report, msg commit.Op, fields *registry.DeviceFields) error {
	ch := &commit.Change{DeviceID: deviceID}
	if msg != nil {
		ch.Ops = append(ch.Ops, msg)
	}
	if fields != nil {
		ch.Ops = append(ch.Ops, &registry.Update{Fields: fields})
	}
	if rep.Status != "" || rep.Version != "" {
		ev, err := commit.NewEvent(events.Event{Type: events.FirmwareStatusReported, Time: s.now(), DeviceID: deviceID, DeviceType: deviceType,
			Args: &events.FirmwareReport{RolloutID: rep.RolloutID, Attempt: rep.Attempt, Status: string(rep.Status), Version: rep.Version,
				Progress: rep.Progress, Message: rep.Message}})
		if err != nil {
			return fmt.Errorf("firmware status of %s: %w", deviceID, err)
		}
		ch.Events = append(ch.Events, ev)
	}
	if len(ch.Ops) == 0 && len(ch.Events) == 0 {
		return nil
	}
	if err := s.d.Committer.Submit(ctx, ch); err != nil {
		return fmt.Errorf("record firmware status of %s: %w", deviceID, err)
	}
	return ch.Err
}

// applyReport applies a reported status on the owner: what it changes and
// the cursor (the report's Seq) are one change, so the report counts once
// even if the owner dies right after.
func (s *Service) applyReport(ctx context.Context, e events.Event, fr *events.FirmwareReport) {
	rep := Report{RolloutID: fr.RolloutID, Attempt: fr.Attempt, Status: State(fr.Status), Version: fr.Version, Progress: fr.Progress, Message: fr.Message}
	w := &work{}
	s.mu.Lock()
	a, u, stale := s.updateOf(e.DeviceID, rep)
	if stale {
		s.log.Info("stale firmware report ignored", "device_id", e.DeviceID, "rollout", a.r.ID, "attempt", *rep.Attempt, "current_attempt", u.Attempt, "status", rep.Status)
	}
	if u != nil && !stale && u.State.InProgress() && rep.Status != "" {
		now := s.now()
		s.apply(a, u, rep, now, w)
		s.check(a, now, w)
	}
	var t *commit.Ticket
	var err error
	if len(w.changes) > 0 {
		ch := &commit.Change{DeviceID: e.DeviceID}
		for _, c := range w.changes {
			ch.Ops = append(ch.Ops, c.Ops...)
			ch.Events = append(ch.Events, c.Events...)
		}
		ch.Ops = append(ch.Ops, &Op{Cursor: e.Seq})
		t, err = s.d.Committer.Enqueue(ctx, ch)
	}
	s.mu.Unlock()
	if t != nil && err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("firmware report not applied", "device_id", e.DeviceID, "seq", e.Seq, "err", err)
		}
		return
	}
	if len(w.done) > 0 {
		s.flush(ctx, &work{done: w.done})
	}
	s.poke()
}

// updateOf finds the update a report is about (mu held): the named
// rollout's, or the one in progress; stale reports name another attempt
// than the update's current one.
func (s *Service) updateOf(deviceID string, rep Report) (*active, *DeviceUpdate, bool) {
	a := s.inProgress[deviceID]
	if rep.RolloutID != "" {
		a = s.active[rep.RolloutID]
	}
	if a == nil {
		return nil, nil, false
	}
	u := a.byDevice[deviceID]
	if rep.Version != "" {
		a.versions[deviceID] = rep.Version
	}
	return a, u, u != nil && rep.Attempt != nil && *rep.Attempt != u.Attempt
}
