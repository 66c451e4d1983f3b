package deviceconfig

import (
	"context"
	"errors"
	"fmt"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// ErrStale: a device reported on a checksum that is not its current one.
// Nothing changes; the device should fetch its configuration again.
var ErrStale = &codedError{code: "stale_checksum", msg: "the report is about a checksum that is not the current one"}

type codedError struct{ code, msg string }

func (e *codedError) Error() string { return e.msg }

// RejectCode is the code a device's message is refused with.
func (e *codedError) RejectCode() string { return e.code }

// Checksum returns the checksum of a device's current configuration from
// memory (ErrNoConfig when it has none or it is deactivated).
func (s *Service) Checksum(deviceID string) (string, error) {
	s.mu.RLock()
	v, ok := s.view[deviceID]
	s.mu.RUnlock()
	if !ok || v.status == StatusDeactivated {
		return "", fmt.Errorf("config of %s: %w", deviceID, ErrNoConfig)
	}
	return v.checksum, nil
}

// Download returns a device's current configuration with its rendered
// bytes and their content type (ErrNoConfig when it has none or it is
// deactivated).
func (s *Service) Download(ctx context.Context, deviceID string) (*DeviceConfig, string, error) {
	c, err := s.d.Store.GetDeviceConfig(ctx, deviceID)
	if err != nil {
		return nil, "", err
	}
	if c.Status == StatusDeactivated {
		return nil, "", fmt.Errorf("config of %s: %w", deviceID, ErrNoConfig)
	}
	be, err := s.d.Backends.Get(c.Backend)
	if err != nil {
		return nil, "", err
	}
	return c, be.ContentType(), nil
}

// Requested records checksum_requested or config_download_requested. The
// API calls it just before a successful answer, and only then (see
// RequestSignal); it queues the event without waiting for its commit so
// that polling stays cheap.
func (s *Service) Requested(ctx context.Context, typ events.Type, deviceID, deviceType string, args *events.ConfigRequestArgs) error {
	ev, err := commit.NewEvent(events.Event{Type: typ, Time: s.now(), DeviceID: deviceID, DeviceType: deviceType, Args: args})
	if err != nil {
		return err
	}
	if _, err := s.d.Committer.Enqueue(ctx, &commit.Change{DeviceID: deviceID, Events: []commit.Event{ev}}); err != nil {
		return fmt.Errorf("record %s of %s: %w", typ, deviceID, err)
	}
	return nil
}

// RecordReport records a device's report on the configuration it applied
// (or failed to): the status, the management channel's state and their
// signals, with msg (the audit record of an MQTT report, or nil) in the
// same change. It returns once the change is committed. A report of
// another checksum than the current one changes nothing and is ErrStale.
func (s *Service) RecordReport(ctx context.Context, deviceID, deviceType string, r Report, msg commit.Op) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cur, err := s.current(ctx, deviceID)
	if err != nil {
		return err
	}
	if cur == nil || cur.Status == StatusDeactivated {
		return fmt.Errorf("config of %s: %w", deviceID, ErrNoConfig)
	}
	o := ApplyReport(SnapshotOf(cur), r)
	if o.Stale {
		return fmt.Errorf("config of %s: report on %s, current %s: %w", deviceID, short(r.Checksum), short(cur.Checksum), ErrStale)
	}
	now := s.now()
	next := cur.Clone()
	next.Rendered = cur.Rendered
	next.Status, next.Error, next.UpdatedAt = o.Status, o.Error, now
	if next.Status != cur.Status {
		next.StatusSince = now
	}
	if r.Applied {
		next.AppliedChecksum = r.Checksum
	}
	dev := DeviceInfo{ID: deviceID, Type: deviceType}
	evs, err := s.events(dev, Transition{Before: SnapshotOf(cur), After: SnapshotOf(next)}, now)
	if err != nil {
		return err
	}
	op := &Op{Device: next}
	if o.Working != nil {
		m, ev, err := s.working(ctx, dev, *o.Working, o.Reason)
		if err != nil {
			return err
		}
		if m != nil {
			op.Management = m
			evs = append(evs, *ev)
		}
	}
	ch := &commit.Change{DeviceID: deviceID, Ops: []commit.Op{op}, Events: evs}
	if msg != nil {
		ch.Ops = append([]commit.Op{msg}, ch.Ops...)
	}
	if err := s.d.Committer.Submit(ctx, ch); err != nil {
		return fmt.Errorf("record config report of %s: %w", deviceID, err)
	}
	s.committed(next)
	return nil
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

// working returns the management state to store and its
// is_working_changed event, or nil when the state does not change.
func (s *Service) working(ctx context.Context, dev DeviceInfo, isWorking bool, reason string) (*Management, *commit.Event, error) {
	old, err := s.d.Store.GetManagement(ctx, dev.ID)
	if err != nil {
		return nil, nil, err
	}
	args, fire := WorkingSignal(old, isWorking, reason)
	if !fire {
		return nil, nil, nil
	}
	t := s.now()
	w := isWorking
	m := &Management{DeviceID: dev.ID, IsWorking: &w, FailureReason: args.FailureReason, UpdatedAt: t}
	ev, err := commit.NewEvent(events.Event{Type: events.IsWorkingChanged, Time: t, DeviceID: dev.ID, DeviceType: dev.Type, Args: args})
	if err != nil {
		return nil, nil, err
	}
	return m, &ev, nil
}

// RecordWorking records the outcome of reaching a device over its
// management channel outside configuration (a command completed, or
// expired undelivered), firing is_working_changed when it changes.
func (s *Service) RecordWorking(ctx context.Context, deviceID, deviceType string, isWorking bool, reason string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	dev := DeviceInfo{ID: deviceID, Type: deviceType}
	m, ev, err := s.working(ctx, dev, isWorking, reason)
	if err != nil || m == nil {
		return err
	}
	err = s.d.Committer.Submit(ctx, &commit.Change{DeviceID: deviceID, Ops: []commit.Op{&Op{Management: m}}, Events: []commit.Event{*ev}})
	if errors.Is(err, commit.ErrDeviceNotFound) {
		return nil // the device was deleted meanwhile
	}
	return err
}

// Management returns the state of the management channel to a device.
func (s *Service) Management(ctx context.Context, deviceID string) (*Management, error) {
	m, err := s.d.Store.GetManagement(ctx, deviceID)
	if err != nil || m != nil {
		return m, err
	}
	return &Management{DeviceID: deviceID}, nil
}

// AssignDefaults gives a new device of type typ a configuration with the
// default templates that apply to it, if there are any or if its group has
// templates (creation fires no signal). A device that has a configuration
// already keeps it.
func (s *Service) AssignDefaults(ctx context.Context, deviceID, typ string) error {
	tpl := s.DefaultTemplates(typ)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.adopt(ctx, deviceID, tpl)
}

// adopt gives a device without a configuration one with templates tpl,
// when tpl is not empty or its group has templates (wmu held).
func (s *Service) adopt(ctx context.Context, deviceID string, tpl []string) error {
	cur, err := s.current(ctx, deviceID)
	if err != nil || cur != nil {
		return err
	}
	dev, err := s.d.Store.ConfigDevice(ctx, deviceID)
	if err != nil {
		return err
	}
	if len(tpl) == 0 && len(s.groupTemplates(dev.Group)) == 0 {
		return nil
	}
	if tpl == nil {
		tpl = []string{}
	}
	next, err := s.apply(dev, nil, Update{Templates: &tpl})
	if err != nil {
		return err
	}
	_, err = s.commitDevice(ctx, dev, nil, next, "")
	return err
}

// groupTemplates returns a group's templates (none for "" or a group
// without a configuration).
func (s *Service) groupTemplates(group string) []string {
	if group == "" {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if g, ok := s.groups[group]; ok {
		return g.Templates
	}
	return nil
}

// Observe reacts to the hub's other signals (an in-process subscriber of
// the event bus): a new device gets the default templates; a command
// answered or expired undelivered tells whether the management channel
// works; a device's name, group or management IP feed its rendering.
func (s *Service) Observe(ctx context.Context, e events.Event) {
	var err error
	switch a := e.Args.(type) {
	case *events.Provisioned:
		if !a.Reprovisioned {
			err = s.AssignDefaults(ctx, e.DeviceID, e.DeviceType)
		}
	case *events.CommandResult:
		err = s.RecordWorking(ctx, e.DeviceID, e.DeviceType, true, "")
	case *events.CommandExpired:
		err = s.RecordWorking(ctx, e.DeviceID, e.DeviceType, false,
			fmt.Sprintf("command %s (%s) expired undelivered", a.CommandID, a.Command))
	case *events.GroupChanged:
		err = s.Rerender(ctx, e.DeviceID, events.ActionM2MTemplatesChanged)
	case *events.NameChanged, *events.ManagementIP:
		err = s.Rerender(ctx, e.DeviceID, events.ActionConfigChanged)
	}
	// A device deleted since (the event may be handled again after a
	// restart) needs nothing.
	if err != nil && !errors.Is(err, ErrNoConfig) && !errors.Is(err, ErrDeviceNotFound) && ctx.Err() == nil {
		s.log.Warn("config follow-up of an event", "type", e.Type, "device_id", e.DeviceID, "err", err)
	}
}

// ObserverCursor returns the Seq of the last event Observe handled as last
// stored (false: none stored yet).
func (s *Service) ObserverCursor(ctx context.Context) (int64, bool, error) {
	return s.d.Store.ObserverCursor(ctx)
}

// SaveObserverCursor stores that Observe handled the events up to seq, so
// that after a restart the hub follows the log from there (a device created
// just before a crash still gets its default templates).
func (s *Service) SaveObserverCursor(ctx context.Context, seq int64) error {
	if err := s.d.Committer.Submit(ctx, &commit.Change{Ops: []commit.Op{&Op{ObserverCursor: seq}}}); err != nil {
		return fmt.Errorf("save config observer cursor: %w", err)
	}
	return nil
}

// ObservedTypes are the event types Observe reacts to.
var ObservedTypes = []events.Type{events.DeviceProvisioned, events.DeviceCommandResult, events.DeviceCommandExpired,
	events.DeviceGroupChanged, events.DeviceNameChanged, events.ManagementIPChanged}

// Rerender renders a device's configuration again (its device's fields or
// group changed) and stores it if it changed.
func (s *Service) Rerender(ctx context.Context, deviceID, action string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cur, err := s.current(ctx, deviceID)
	if err != nil {
		return err
	}
	if cur == nil {
		// A device without a configuration that joins a group with
		// templates gets one made of them.
		if action == events.ActionM2MTemplatesChanged {
			return s.adopt(ctx, deviceID, nil)
		}
		return nil
	}
	dev, err := s.d.Store.ConfigDevice(ctx, deviceID)
	if err != nil {
		return err
	}
	_, err = s.commitDevice(ctx, dev, cur, cur.Clone(), action)
	return err
}
