package firmware

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// work is what one pass decided: changes to commit, in order, and the
// notices to publish once they are committed.
type work struct {
	changes []*commit.Change
	notices []outMsg
	done    []string // rollouts that finished: dropped from memory after commit
}

type outMsg struct {
	topic   string
	payload []byte
}

// Run is the scheduler: it starts devices, times them out and applies the
// abort and completion rules every Tick, until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Tick)
	defer t.Stop()
	for {
		s.refresh(ctx)
		s.flush(ctx, s.pass(s.now()))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wake:
		}
	}
}

// flush enqueues w's changes (in order, under mu, so that changes of one
// device are committed in the order they were decided), waits for them
// and then publishes the notices.
func (s *Service) flush(ctx context.Context, w *work) {
	if w == nil || (len(w.changes) == 0 && len(w.notices) == 0) {
		return
	}
	s.mu.Lock()
	tickets := make([]*commit.Ticket, 0, len(w.changes))
	var err error
	for _, ch := range w.changes {
		var t *commit.Ticket
		if t, err = s.d.Committer.Enqueue(ctx, ch); err != nil {
			break
		}
		tickets = append(tickets, t)
	}
	s.mu.Unlock()
	for _, t := range tickets {
		if werr := t.Wait(ctx); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		s.log.Error("firmware state not stored; notices held back", "err", err)
		return
	}
	for _, n := range w.notices {
		if err := s.d.Publisher.Publish(n.topic, n.payload, false, 1); err != nil {
			s.log.Warn("firmware notice not published", "topic", n.topic, "err", err)
		}
	}
	if len(w.done) > 0 {
		s.mu.Lock()
		for _, id := range w.done {
			if a, ok := s.active[id]; ok && a.r.Status.Final() {
				delete(s.active, id)
			}
		}
		s.mu.Unlock()
	}
}

// pass looks at every active rollout once.
func (s *Service) pass(now time.Time) *work {
	w := &work{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.active {
		s.alive(a, now, w)
		s.expire(a, now, w)
		s.resend(a, now, w)
		s.check(a, now, w)
		s.start(a, now, w)
		s.check(a, now, w)
	}
	return w
}

// alive notes every AliveEvery that the scheduler works on a, with the
// updates whose clocks Load shifted past the hub's downtime (mu held).
func (s *Service) alive(a *active, now time.Time, w *work) {
	if a.r.Status.Final() || (now.Sub(a.r.AliveAt) < s.opts.AliveEvery && len(a.shifted) == 0) {
		return
	}
	a.r.AliveAt = now
	r := a.r
	op := &Op{Rollout: &r}
	for _, id := range a.shifted {
		if u := a.byDevice[id]; u != nil {
			op.Updates = append(op.Updates, *u)
		}
	}
	a.shifted = nil
	w.changes = append(w.changes, &commit.Change{Ops: []commit.Op{op}})
}

// expire applies the timeouts and the health gate to a's devices in
// progress whose next deadline passed.
func (s *Service) expire(a *active, now time.Time, w *work) {
	for len(a.deadlines) > 0 && !now.Before(a.deadlines[0].at) {
		e := heap.Pop(&a.deadlines).(dlEntry)
		u := a.byDevice[e.id]
		if u == nil || e.gen != a.gen[e.id] || !u.State.InProgress() {
			continue // the update moved on since
		}
		s.expireOne(a, u, now, w)
		if e.gen == a.gen[e.id] {
			// Not past it by the rule's own comparison (equal times):
			// looked at again at the next pass.
			heap.Push(&a.deadlines, dlEntry{now.Add(time.Nanosecond), e.id, e.gen})
		}
	}
}

// expireOne applies the timeouts and the health gate to u.
func (s *Service) expireOne(a *active, u *DeviceUpdate, now time.Time, w *work) {
	sp := a.r.Spec
	switch {
	case u.StartedAt != nil && now.Sub(*u.StartedAt) > sp.TotalTimeout:
		s.move(a, u, TimedOut, fmt.Sprintf("no update within the total timeout of %s", sp.TotalTimeout), 0, now, w)
	case u.State == Rebooting || u.State == Confirming:
		switch {
		case u.ConfirmedAt != nil && now.Sub(*u.ConfirmedAt) >= sp.Settle:
			s.move(a, u, Updated, fmt.Sprintf("version %s confirmed and running for %s", a.art.Version, sp.Settle), 100, now, w)
		case u.ConfirmedAt == nil && u.RebootAt != nil && now.Sub(*u.RebootAt) > sp.HealthWindow:
			s.move(a, u, Failed, fmt.Sprintf("health gate: version %s not confirmed within %s of the reboot", a.art.Version, sp.HealthWindow), 0, now, w)
		}
	case now.Sub(u.StateSince) > sp.StepTimeout:
		s.move(a, u, TimedOut, fmt.Sprintf("no progress from %s within the step timeout of %s", u.State, sp.StepTimeout), 0, now, w)
	}
}

// resend publishes the notices that are due again.
func (s *Service) resend(a *active, now time.Time, w *work) {
	for len(a.dueQ) > 0 && !a.dueQ[0].at.After(now) {
		e := heap.Pop(&a.dueQ).(dlEntry)
		id := e.id
		if t, ok := a.due[id]; !ok || !t.Equal(e.at) {
			continue // rescheduled or dropped since
		}
		u := a.byDevice[id]
		switch u.State {
		case Notified:
			a.setDue(id, now.Add(s.opts.NoticeResend))
		case Downloading, Downloaded, Verifying, Installing:
			delete(a.due, id)
		default:
			delete(a.due, id)
			continue
		}
		w.notices = append(w.notices, outMsg{noticeTopic(id), s.notice(a, u)})
	}
}

// rate is a's current bound of devices started per minute (0: none).
func (a *active) rate() int {
	sp := a.r.Spec
	if sp.MaxPerMinute == 0 {
		return 0
	}
	r := float64(sp.MaxPerMinute)
	if ri := sp.RateIncrease; ri != nil {
		n := a.count[Updated]
		r *= math.Pow(ri.Factor, float64(n/ri.AfterSuccesses))
		if ri.MaxPerMinute > 0 {
			r = min(r, float64(ri.MaxPerMinute))
		}
		r = min(r, 1e6)
	}
	return int(r)
}

// start notifies the queued devices whose turn came: in the current
// phase, within the rate, inside the window, while the rollout runs.
func (s *Service) start(a *active, now time.Time, w *work) {
	if a.r.Status != RolloutRunning || !inWindow(a.r.Spec.Window, now) {
		return
	}
	// The current phase is the lowest one with a device not finished.
	phase := a.currentPhase()
	if phase < 0 {
		return
	}
	budget := math.MaxInt
	if r := a.rate(); r > 0 {
		cut := now.Add(-time.Minute)
		i := 0
		for i < len(a.starts) && !a.starts[i].After(cut) {
			i++
		}
		a.starts = a.starts[i:]
		budget = r - len(a.starts)
	}
	q := &a.queued[phase]
	var held []qEntry
	for budget > 0 && q.Len() > 0 {
		e := heap.Pop(q).(qEntry)
		u := a.byDevice[e.id]
		if u == nil || u.State != Queued || u.Phase != phase {
			continue // started or finished since it was queued
		}
		if other, busy := s.inProgress[u.DeviceID]; busy && other != a {
			held = append(held, e) // updated by another rollout now; its turn comes after
			continue
		}
		if v := a.versions[u.DeviceID]; v != "" && v == a.art.Version {
			s.move(a, u, Skipped, "already on version "+v, 0, now, w)
			continue
		}
		s.move(a, u, Notified, "", 0, now, w)
		w.notices = append(w.notices, outMsg{noticeTopic(u.DeviceID), s.notice(a, u)})
		a.setDue(u.DeviceID, now.Add(s.opts.NoticeResend))
		a.starts = append(a.starts, now)
		budget--
	}
	for _, e := range held {
		heap.Push(q, e)
	}
}

// check applies the abort and completion rules to a.
func (s *Service) check(a *active, now time.Time, w *work) {
	if a.r.Status.Final() {
		return
	}
	finished, failures, open := a.finishedCounts()
	firstPhaseFailed := a.phase0Failed > 0
	sp := a.r.Spec
	if a.r.Status == RolloutRunning {
		f, n := failures-a.r.BaseFailures, finished-a.r.BaseFinished
		switch {
		case sp.AbortOnFirstPhaseFailure && firstPhaseFailed && a.r.BaseFailures == 0:
			s.setStatus(a, RolloutAborted, "a device of the first phase failed", now, w)
		case sp.AbortFailurePercent > 0 && n > 0 && n >= sp.AbortMinDevices && float64(f)*100 >= sp.AbortFailurePercent*float64(n):
			s.setStatus(a, RolloutAborted, fmt.Sprintf("%d of %d finished devices failed (abort at %g%% after %d)", f, n, sp.AbortFailurePercent, sp.AbortMinDevices), now, w)
		}
	}
	if open == 0 && (a.r.Status == RolloutRunning) && !sp.IncludeLate {
		s.setStatus(a, RolloutCompleted, fmt.Sprintf("%d updated or skipped, %d failed", len(a.updates)-failures, failures), now, w)
	}
}

// setStatus changes a's status (mu held).
func (s *Service) setStatus(a *active, st RolloutStatus, reason string, now time.Time, w *work) {
	old := a.r.Status
	if old == st {
		return
	}
	a.r.Status, a.r.Reason, a.r.UpdatedAt = st, reason, now
	r := a.r
	ev, err := rolloutEvent(&r, old, reason)
	if err != nil {
		s.log.Error("rollout event", "err", err)
		return
	}
	w.changes = append(w.changes, &commit.Change{Ops: []commit.Op{&Op{Rollout: &r}}, Events: []commit.Event{ev}})
	if st.Final() {
		w.done = append(w.done, r.ID)
	}
	s.log.Info("rollout status changed", "rollout", r.ID, "status", st, "old_status", old, "reason", reason)
}

// move changes a device's update to st (mu held), with a retry when the
// rollout allows one.
func (s *Service) move(a *active, u *DeviceUpdate, st State, msg string, progress int, now time.Time, w *work) {
	old := u.State
	a.setState(u, st)
	u.Message, u.StateSince, u.UpdatedAt = msg, now, now
	if progress > 0 || st == Queued || st == Notified {
		u.Progress = progress
	}
	switch st {
	case Notified:
		t := now
		u.StartedAt, u.RebootAt, u.ConfirmedAt = &t, nil, nil
	case Rebooting:
		if u.RebootAt == nil {
			t := now
			u.RebootAt = &t
		}
	}
	hist := []HistoryEntry{{RolloutID: a.r.ID, DeviceID: u.DeviceID, State: st, Attempt: u.Attempt, Message: msg, At: now}}
	evs := []commit.Event{s.updateEvent(a, u, old)}
	sp := a.r.Spec
	if ((st == Failed && sp.RetryFailed) || (st == TimedOut && sp.RetryTimedOut)) && u.Attempt < sp.Retries && a.r.Status != RolloutCanceled {
		u.Attempt++
		a.setState(u, Queued)
		u.Message, u.Progress, u.StartedAt, u.RebootAt, u.ConfirmedAt = fmt.Sprintf("retry %d of %d after %s", u.Attempt, sp.Retries, st), 0, nil, nil, nil
		hist = append(hist, HistoryEntry{RolloutID: a.r.ID, DeviceID: u.DeviceID, State: Queued, Attempt: u.Attempt, Message: u.Message, At: now})
		evs = append(evs, s.updateEvent(a, u, st))
	}
	a.track(u)
	if u.State.InProgress() {
		s.inProgress[u.DeviceID] = a
	} else if s.inProgress[u.DeviceID] == a {
		delete(s.inProgress, u.DeviceID)
	}
	w.changes = append(w.changes, &commit.Change{DeviceID: u.DeviceID, Ops: []commit.Op{&Op{Updates: []DeviceUpdate{*u}, History: hist}}, Events: evs})
}

func (s *Service) updateEvent(a *active, u *DeviceUpdate, old State) commit.Event {
	ev, err := commit.NewEvent(events.Event{Type: events.FirmwareUpdateStatusChanged, Time: u.UpdatedAt, DeviceID: u.DeviceID, DeviceType: u.DeviceType,
		Args: &events.FirmwareUpdateStatus{RolloutID: a.r.ID, State: string(u.State), OldState: string(old), Version: a.art.Version,
			Attempt: u.Attempt, Message: u.Message, Progress: u.Progress}})
	if err != nil {
		s.log.Error("firmware event", "err", err) // the args are plain structs: cannot happen
	}
	return ev
}

// StaleAttempt is the message log code of a report of an earlier attempt
// than the device's current one: recorded, nothing changed.
const StaleAttempt = "stale_attempt"

// RecordStatus takes a device's status report; msg (its message log
// record) is written in the same change. It returns once committed. A
// report that names another attempt than the device's current one in the
// rollout changes nothing but the message log (StaleAttempt).
func (s *Service) RecordStatus(ctx context.Context, deviceID, deviceType string, rep Report, msg commit.Op) error {
	var fields *registry.DeviceFields
	if rep.Version != "" || rep.HardwareVersion != "" {
		d, err := s.d.Devices.Get(ctx, deviceID)
		if err != nil {
			return fmt.Errorf("firmware status of %s: %w", deviceID, err)
		}
		f := &registry.DeviceFields{}
		if rep.Version != "" && rep.Version != d.FirmwareVersion {
			v := rep.Version
			f.FirmwareVersion = &v
		}
		if rep.HardwareVersion != "" && rep.HardwareVersion != d.HardwareVersion {
			v := rep.HardwareVersion
			f.HardwareVersion = &v
		}
		if f.FirmwareVersion != nil || f.HardwareVersion != nil {
			fields = f
		}
	}
	if s.clustered() {
		// The owner applies it from the event log (cluster.go).
		return s.reportElsewhere(ctx, deviceID, deviceType, rep, msg, fields)
	}
	now := s.now()
	w := &work{}
	s.mu.Lock()
	a, u, stale := s.updateOf(deviceID, rep)
	if stale {
		// A late report of an earlier attempt (or of one this hub never
		// sent): kept in the message log, and nothing else.
		if m, ok := msg.(*readings.Message); ok {
			m.Code = StaleAttempt
			m.Reason = fmt.Sprintf("report of attempt %d of rollout %s; the current attempt is %d: recorded, nothing changed", *rep.Attempt, a.r.ID, u.Attempt)
		}
		s.log.Info("stale firmware report ignored", "device_id", deviceID, "rollout", a.r.ID, "attempt", *rep.Attempt, "current_attempt", u.Attempt, "status", rep.Status)
	}
	if u != nil && !stale && u.State.InProgress() && rep.Status != "" {
		s.apply(a, u, rep, now, w)
		s.check(a, now, w)
	}
	// The message log record, the registry fields and the first device
	// change go in one change; the rest follow it.
	first := &commit.Change{DeviceID: deviceID}
	if msg != nil {
		first.Ops = append(first.Ops, msg)
	}
	if fields != nil {
		first.Ops = append(first.Ops, &registry.Update{Fields: fields})
	}
	if len(w.changes) > 0 && w.changes[0].DeviceID == deviceID {
		first.Ops = append(first.Ops, w.changes[0].Ops...)
		first.Events = w.changes[0].Events
		w.changes = w.changes[1:]
	}
	var tickets []*commit.Ticket
	var err error
	for _, ch := range append([]*commit.Change{first}, w.changes...) {
		if len(ch.Ops) == 0 {
			continue
		}
		var t *commit.Ticket
		if t, err = s.d.Committer.Enqueue(ctx, ch); err != nil {
			break
		}
		tickets = append(tickets, t)
	}
	s.mu.Unlock()
	for _, t := range tickets {
		if werr := t.Wait(ctx); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return fmt.Errorf("record firmware status of %s: %w", deviceID, err)
	}
	if first.Err != nil {
		return first.Err
	}
	if len(w.done) > 0 {
		s.flush(ctx, &work{done: w.done})
	}
	s.poke()
	return nil
}

// apply moves u by a device's report (mu held).
func (s *Service) apply(a *active, u *DeviceUpdate, rep Report, now time.Time, w *work) {
	defer a.track(u) // its times may have changed without a move
	switch rep.Status {
	case Failed:
		msg := rep.Message
		if msg == "" {
			msg = "the device reported a failure"
		}
		s.move(a, u, Failed, msg, 0, now, w)
	case Confirming, Updated:
		if rep.Version != a.art.Version {
			s.move(a, u, Failed, fmt.Sprintf("the device runs version %s, not %s", rep.Version, a.art.Version), 0, now, w)
			return
		}
		if u.RebootAt == nil {
			t := now
			u.RebootAt = &t
		}
		if rep.Status == Updated && u.ConfirmedAt == nil {
			t := now
			u.ConfirmedAt = &t
		}
		if u.State != Confirming || rep.Status == Updated {
			msg := rep.Message
			if msg == "" && rep.Status == Updated {
				msg = "confirmed by the device; settling"
			}
			s.move(a, u, Confirming, msg, 100, now, w)
		}
	default:
		if u.State == rep.Status && rep.Progress == u.Progress {
			return
		}
		if u.State == rep.Status {
			// Progress within a step: stored, and it restarts the step timeout.
			u.Progress, u.StateSince, u.UpdatedAt = rep.Progress, now, now
			if rep.Message != "" {
				u.Message = rep.Message
			}
			w.changes = append(w.changes, &commit.Change{DeviceID: u.DeviceID, Ops: []commit.Op{&Op{Updates: []DeviceUpdate{*u}}}})
			return
		}
		s.move(a, u, rep.Status, rep.Message, rep.Progress, now, w)
	}
}

// Observe follows the device events the service needs: a device that
// connects while its update is pending gets its notice again; a device
// that disconnects while it settles fails the health gate.
func (s *Service) Observe(ctx context.Context, e events.Event) {
	w := &work{}
	s.mu.Lock()
	a := s.inProgress[e.DeviceID]
	if a == nil {
		s.mu.Unlock()
		return
	}
	u := a.byDevice[e.DeviceID]
	now := s.now()
	switch e.Type {
	case events.DeviceConnected:
		switch u.State {
		case Notified, Downloading, Downloaded, Verifying, Installing:
			a.setDue(u.DeviceID, now.Add(s.opts.ConnectDelay))
		}
	case events.DeviceDisconnected:
		if u.State == Confirming && u.ConfirmedAt != nil {
			s.move(a, u, Failed, fmt.Sprintf("health gate: disconnected %s after confirming, before the settle time of %s",
				now.Sub(*u.ConfirmedAt).Round(time.Millisecond), a.r.Spec.Settle), 0, now, w)
			s.check(a, now, w)
		}
	}
	s.mu.Unlock()
	s.flush(ctx, w)
}

// ObservedTypes are the event types Observe follows.
var ObservedTypes = []events.Type{events.DeviceConnected, events.DeviceDisconnected}

// Pause stops starting devices of a running rollout.
func (s *Service) Pause(ctx context.Context, id string) (*Progress, error) {
	return s.control(ctx, ControlPause, id, func(a *active, now time.Time, w *work) error {
		if a.r.Status != RolloutRunning {
			return fmt.Errorf("rollout %s is %s: %w", id, a.r.Status, ErrConflict)
		}
		s.setStatus(a, RolloutPaused, "paused by an operator", now, w)
		return nil
	})
}

// Resume runs a paused or aborted rollout again; the abort rule counts
// from here.
func (s *Service) Resume(ctx context.Context, id string) (*Progress, error) {
	return s.control(ctx, ControlResume, id, func(a *active, now time.Time, w *work) error {
		if a.r.Status != RolloutPaused && a.r.Status != RolloutAborted {
			return fmt.Errorf("rollout %s is %s: %w", id, a.r.Status, ErrConflict)
		}
		finished, failures := 0, 0
		for _, u := range a.updates {
			if u.State.failure() {
				failures++
			}
			if u.State.failure() || u.State == Updated {
				finished++
			}
		}
		a.r.BaseFinished, a.r.BaseFailures = finished, failures
		s.setStatus(a, RolloutRunning, "resumed by an operator", now, w)
		return nil
	})
}

// Cancel ends a rollout: devices not finished are canceled, and those in
// progress told so.
func (s *Service) Cancel(ctx context.Context, id string) (*Progress, error) {
	return s.control(ctx, ControlCancel, id, func(a *active, now time.Time, w *work) error {
		s.setStatus(a, RolloutCanceled, "canceled by an operator", now, w)
		for _, u := range a.updates {
			if u.State.Terminal() {
				continue
			}
			if u.State.InProgress() {
				b := []byte(fmt.Sprintf(`{"rollout_id":%q,"cancel":true}`, a.r.ID))
				w.notices = append(w.notices, outMsg{noticeTopic(u.DeviceID), b})
			}
			s.move(a, u, Canceled, "the rollout was canceled", 0, now, w)
		}
		return nil
	})
}

func (s *Service) control(ctx context.Context, op ControlOp, id string, fn func(a *active, now time.Time, w *work) error) (*Progress, error) {
	if !s.local() {
		// The owner decides (cluster mode): it alone writes rollouts.
		return s.d.Remote.Control(ctx, op, id)
	}
	w := &work{}
	s.mu.Lock()
	a, ok := s.active[id]
	if !ok {
		s.mu.Unlock()
		r, err := s.d.Store.GetRollout(ctx, id)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("rollout %s is %s: %w", id, r.Status, ErrConflict)
	}
	if err := fn(a, s.now(), w); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	p := a.progress()
	s.mu.Unlock()
	s.flush(ctx, w)
	s.poke()
	return p, nil
}

// refresh adds the devices that joined the target of rollouts that
// include late joiners.
func (s *Service) refresh(ctx context.Context) {
	now := s.now()
	type job struct {
		id  string
		sp  Spec
		art Artifact
	}
	var jobs []job
	s.mu.Lock()
	for _, a := range s.active {
		if a.r.Spec.IncludeLate && !a.r.Status.Final() && now.Sub(a.refreshed) >= s.opts.RefreshEvery {
			a.refreshed = now
			jobs = append(jobs, job{a.r.ID, a.r.Spec, a.art})
		}
	}
	s.mu.Unlock()
	for _, j := range jobs {
		devs, err := s.resolve(ctx, j.sp, j.art)
		if err != nil {
			s.log.Warn("rollout target not listed", "rollout", j.id, "err", err)
			continue
		}
		var add []DeviceUpdate
		s.mu.Lock()
		a, ok := s.active[j.id]
		if ok {
			last := max(len(a.r.Spec.Phases)-1, 0)
			for _, d := range devs {
				if _, known := a.byDevice[d.ID]; known {
					continue
				}
				u := &DeviceUpdate{RolloutID: a.r.ID, DeviceID: d.ID, DeviceType: d.Type, Order: len(a.updates), Phase: last,
					State: Queued, StateSince: now, UpdatedAt: now, Message: "joined the target after the start"}
				a.add(u)
				a.versions[d.ID] = d.FirmwareVersion
				add = append(add, *u)
			}
		}
		var t *commit.Ticket
		if len(add) > 0 {
			t, err = s.d.Committer.Enqueue(ctx, &commit.Change{Ops: []commit.Op{&Op{Updates: add}}})
		}
		s.mu.Unlock()
		if t != nil && err == nil {
			err = t.Wait(ctx)
		}
		if err != nil {
			s.log.Error("late joiners not stored", "rollout", j.id, "err", err)
		} else if len(add) > 0 {
			s.log.Info("devices joined a rollout", "rollout", j.id, "devices", len(add))
		}
	}
}
