// Package commands sends operators' commands to devices and records their
// results.
//
// A command moves through
//
//	queued → sent → delivered → succeeded | failed | expired | canceled
//
// queued: stored, not handed to the broker yet (the device is offline);
// sent: handed to the broker (published at QoS 1 to
// devices/{id}/commands/{command_id} as {"command", "payload",
// "expires_at"}), with a device_command_sent event; delivered: the
// device's MQTT client acknowledged that publish (PUBACK), with
// device_command_delivered; then the device's answer on
// devices/{id}/commands/{command_id}/result ({"status": "succeeded" |
// "failed", "result": ...}, device_command_result), the expiry
// (device_command_expired) or an operator's cancel
// (device_command_canceled). A queued, sent or delivered command can
// expire or be canceled. Every transition is one conditional update on
// the state it leaves (Change.From), so an answer that races the expiry
// either finishes the command or is refused, never both.
//
// delivered needs the device to subscribe to its commands at QoS 1 (the
// SDKs do): MQTT delivers at the lower of the publish's and the
// subscription's QoS, so a device subscribed at QoS 0 never acknowledges;
// its commands stay sent, are resent every ResendInterval, and finish by
// its answer or their expiry. Cancel is the hub's record: the device is
// not told (a device that has the command may still carry it out); the
// command is no longer handed over and its answer is refused.
//
// Devices connect with a clean session, so a command can be lost with its
// connection: a command that is queued or sent (not delivered) is handed
// to the broker again shortly after its device connects (ConnectDelay, to
// let it subscribe) and every ResendInterval while the device stays
// connected without acknowledging it. A device's commands go out oldest
// first (creation time, then id), and a new command waits behind older
// ones still waiting for their hand-over. Devices dedupe by command id.
//
// A transition to sent is committed before the hand-over, so that the
// device's PUBACK always finds the command sent: a hub that stops between
// the two resends the command when the device next connects.
//
// Every write is a commit.Change with a Change op, so events are stored
// with their change. The in-memory view of unfinished commands is this
// node's: in a cluster each node resends the commands it knows of, which
// is harmless (devices dedupe) but not coordinated.
package commands

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// Statuses of a command.
const (
	StatusQueued    = "queued"    // stored, not handed to the broker yet (the device was offline)
	StatusSent      = "sent"      // handed to the broker, not acknowledged by the device yet
	StatusDelivered = "delivered" // the device's MQTT client acknowledged the publish (PUBACK)
	StatusSucceeded = "succeeded" // the device answered succeeded
	StatusFailed    = "failed"    // the device answered failed
	StatusExpired   = "expired"   // no answer before it expired
	StatusCanceled  = "canceled"  // an operator canceled it before it finished
)

// Statuses lists every status, in the order of the state machine.
var Statuses = []string{StatusQueued, StatusSent, StatusDelivered, StatusSucceeded, StatusFailed, StatusExpired, StatusCanceled}

// unfinished are the statuses a command can still leave.
var unfinished = []string{StatusQueued, StatusSent, StatusDelivered}

// Errors of the command service. Those a device's answer can cause carry
// the rejection code the ingest pipeline refuses the answer with
// (RejectCode).
var (
	// ErrNotFound: no such command (for this device).
	ErrNotFound error = &codedError{"command not found", "unknown_command"}
	// ErrDeviceNotFound: the device does not exist.
	ErrDeviceNotFound = errors.New("device not found")
	// ErrUnknownCommand: the device's type does not declare the command.
	ErrUnknownCommand = errors.New("command not declared by the device type")
	// ErrInvalid: a bad argument (payload not JSON, expiry out of range,
	// bad result status, parameters that break the type's rules).
	ErrInvalid error = &codedError{"invalid command", "validation_failed"}
	// ErrFinished: the command already finished (succeeded, failed,
	// expired or canceled).
	ErrFinished error = &codedError{"command already finished", "command_finished"}
)

// codedError is a sentinel error with a rejection code.
type codedError struct{ msg, code string }

func (e *codedError) Error() string { return e.msg }

// RejectCode is the code a device's message is refused with.
func (e *codedError) RejectCode() string { return e.code }

// ListOptions select a device's commands, newest first.
type ListOptions struct {
	DeviceID string
	Status   string // "" for every status
	Limit    int    // default 100
}

// Store reads commands.
type Store interface {
	// GetCommand returns a command or an error wrapping ErrNotFound.
	GetCommand(ctx context.Context, id string) (*Command, error)
	ListCommands(ctx context.Context, opts ListOptions) ([]Command, error)
	// OpenCommands returns every unfinished (queued, sent or delivered)
	// command, oldest first.
	OpenCommands(ctx context.Context) ([]Command, error)
}

// Committer submits changes to the commit path.
type Committer interface {
	Submit(ctx context.Context, ch *commit.Change) error
	Enqueue(ctx context.Context, ch *commit.Change) (*commit.Ticket, error)
}

// Publisher sends messages to devices.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Devices tells the type of a known device.
type Devices interface {
	DeviceType(id string) (string, bool)
}

// Types looks up declared device types.
type Types interface {
	Get(name string) (*devicetype.Type, error)
}

// Events lets the service hear of connections and finished commands.
type Events interface {
	Subscribe(opts eventlog.SubscribeOptions, fn func(events.Event)) (*eventlog.Subscription, error)
}

// Options tune the service. Zero values take the defaults.
type Options struct {
	// DefaultExpiry is a command's lifetime when the request names none
	// (default 1h); MaxExpiry bounds it (default 7 days).
	DefaultExpiry time.Duration
	MaxExpiry     time.Duration
	// ConnectDelay is how long after a device connected its unfinished
	// commands are handed over again (default 500ms), so that it has
	// subscribed.
	ConnectDelay time.Duration
	// Node is the cluster node id (cluster mode, "" otherwise): only the
	// node holding a device's connection hands its commands over; a
	// command queued through another node is announced with
	// device_command_queued.
	Node string
	// ResendInterval is how often a command the device has not
	// acknowledged is handed over again while it is connected (default
	// 30s).
	ResendInterval time.Duration
	// MaxPayloadBytes bounds a command's payload (default 64 KiB).
	MaxPayloadBytes int
	// MaxWait bounds how long Wait holds a caller (default 5 minutes).
	MaxWait time.Duration
	// FleetChunk is how many commands of a fleet job are stored in one
	// group commit before they are handed over (default 256).
	FleetChunk int
}

func (o *Options) setDefaults() {
	if o.DefaultExpiry <= 0 {
		o.DefaultExpiry = time.Hour
	}
	if o.MaxExpiry <= 0 {
		o.MaxExpiry = 7 * 24 * time.Hour
	}
	if o.ConnectDelay <= 0 {
		o.ConnectDelay = 500 * time.Millisecond
	}
	if o.ResendInterval <= 0 {
		o.ResendInterval = 30 * time.Second
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = 64 << 10
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 5 * time.Minute
	}
	if o.FleetChunk <= 0 {
		o.FleetChunk = 256
	}
}

// Deps are the service's collaborators.
type Deps struct {
	Store     Store
	Committer Committer
	Publisher Publisher
	Devices   Devices
	Types     Types
	Events    Events
	// Jobs and Fleet run fleet jobs (see Job); without them StartJob
	// refuses.
	Jobs  JobStore
	Fleet FleetDevices
}

// Service sends commands and records their results. Create it with New,
// run it with Run.
type Service struct {
	d    Deps
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	byID    map[string]*open   // unfinished commands by id
	devs    map[string]*device // devices with unfinished commands, or connected
	dueQ    dueQueue           // scheduled hand-overs
	expQ    expiryQueue        // unfinished commands by expiry
	waiters map[string][]chan struct{}
	wake    chan struct{}
	jobs    chan string // a job was started
}

// New returns a command service.
func New(d Deps, opts Options, log *slog.Logger) *Service {
	opts.setDefaults()
	return &Service{
		d: d, opts: opts, log: log,
		now:     func() time.Time { return time.Now().UTC() },
		byID:    map[string]*open{},
		devs:    map[string]*device{},
		waiters: map[string][]chan struct{}{},
		wake:    make(chan struct{}, 1),
		jobs:    make(chan string, 64),
	}
}

// SendRequest is a command to send.
type SendRequest struct {
	DeviceID  string
	Command   string
	Payload   json.RawMessage // any JSON value, or empty
	ExpiresIn time.Duration   // 0: Options.DefaultExpiry
	JobID     string          // the fleet job sending it, "" for none
}

// message is what a device receives on devices/{id}/commands/{command_id}.
type message struct {
	Command   string          `json:"command"`
	Payload   json.RawMessage `json:"payload,omitempty"`
	ExpiresAt time.Time       `json:"expires_at"`
}

// prepared is a validated command, ready to store.
type prepared struct {
	cmd Command
	typ string
}

// prepare validates a request against the device's type and builds its
// command.
func (s *Service) prepare(req SendRequest, now time.Time) (*prepared, error) {
	typ, ok := s.d.Devices.DeviceType(req.DeviceID)
	if !ok {
		return nil, fmt.Errorf("send command to %s: %w", req.DeviceID, ErrDeviceNotFound)
	}
	t, err := s.d.Types.Get(typ)
	if err != nil {
		return nil, fmt.Errorf("send command to %s: %w", req.DeviceID, err)
	}
	if len(req.Payload) > s.opts.MaxPayloadBytes {
		return nil, fmt.Errorf("%w: payload larger than %d bytes", ErrInvalid, s.opts.MaxPayloadBytes)
	}
	if len(req.Payload) > 0 && !json.Valid(req.Payload) {
		return nil, fmt.Errorf("%w: payload is not JSON", ErrInvalid)
	}
	if err := checkCommand(t, req.Command, req.Payload); err != nil {
		return nil, err
	}
	exp := req.ExpiresIn
	switch {
	case exp == 0:
		exp = s.opts.DefaultExpiry
	case exp < time.Second || exp > s.opts.MaxExpiry:
		return nil, fmt.Errorf("%w: expires_in must be from 1s to %s", ErrInvalid, s.opts.MaxExpiry)
	}
	return &prepared{typ: typ, cmd: Command{
		ID: newID(), DeviceID: req.DeviceID, Command: req.Command, Payload: compact(req.Payload),
		Status: StatusQueued, CreatedAt: now, ExpiresAt: now.Add(exp).Truncate(time.Microsecond), UpdatedAt: now, JobID: req.JobID,
	}}, nil
}

// checkCommand checks that t declares the command; its typed parameters
// are checked by checkParams.
func checkCommand(t *devicetype.Type, name string, payload json.RawMessage) error {
	if !t.HasCommand(name) {
		return fmt.Errorf("%w: %q (type %s declares %v)", ErrUnknownCommand, name, t.Name, t.CommandNames())
	}
	return checkParams(t, name, payload)
}

// Send stores a command and, if its device is connected and has no older
// command waiting, hands it to the broker at once. It returns the command
// as stored.
func (s *Service) Send(ctx context.Context, req SendRequest) (*Command, error) {
	now := s.now()
	p, err := s.prepare(req, now)
	if err != nil {
		return nil, err
	}
	t, direct, err := s.enqueue(ctx, p, now)
	if err != nil {
		return nil, err
	}
	if err := t.Wait(ctx); err != nil {
		return nil, fmt.Errorf("store command for %s: %w", req.DeviceID, err)
	}
	return s.stored(p, direct), nil
}

// enqueue queues the change that stores a prepared command: as sent, with
// its device_command_sent event, when its device is connected and has no
// older command waiting for its hand-over (direct), else as queued.
func (s *Service) enqueue(ctx context.Context, p *prepared, now time.Time) (*commit.Ticket, bool, error) {
	s.mu.Lock()
	d := s.devs[p.cmd.DeviceID]
	direct := d != nil && d.connected
	if direct {
		_, waiting := d.flushing()
		direct = !waiting
	}
	s.mu.Unlock()
	c := p.cmd
	ch := &commit.Change{DeviceID: c.DeviceID, Ops: []commit.Op{&Change{Create: &c}}}
	if !direct && s.opts.Node != "" {
		ev, err := commit.NewEvent(events.Event{Type: events.DeviceCommandQueued, Time: now, DeviceID: c.DeviceID, DeviceType: p.typ,
			Args: &events.CommandQueued{CommandID: c.ID, Command: c.Command}})
		if err != nil {
			return nil, false, err
		}
		ch.Events = []commit.Event{ev}
	}
	if direct {
		sent := now
		c.Status, c.Sends, c.FirstSentAt, c.SentAt = StatusSent, 1, &sent, &sent
		ev, err := sentEvent(&c, p.typ, now, false)
		if err != nil {
			return nil, false, err
		}
		ch.Events = []commit.Event{ev}
	}
	t, err := s.d.Committer.Enqueue(ctx, ch)
	if err != nil {
		return nil, false, fmt.Errorf("store command for %s: %w", c.DeviceID, err)
	}
	p.cmd = c
	return t, direct, nil
}

// stored takes a committed command into the in-memory view and, if it
// was stored as sent, hands it to the broker. It returns the command.
func (s *Service) stored(p *prepared, direct bool) *Command {
	c := p.cmd
	s.mu.Lock()
	o := s.track(c)
	if direct {
		s.schedule(o, c.SentAt.Add(s.opts.ResendInterval))
	} else if d := s.devs[c.DeviceID]; d != nil && d.connected {
		// Queued behind older commands waiting for their hand-over after
		// a connect: goes out right after them.
		if due, ok := d.flushing(); ok {
			o.flush = true
			s.schedule(o, due)
		} else {
			s.schedule(o, s.now())
		}
	}
	s.mu.Unlock()
	if direct {
		s.handOver(&c)
	}
	s.poke()
	return &c
}

// handOver publishes a command to its device.
func (s *Service) handOver(c *Command) {
	b, err := json.Marshal(message{Command: c.Command, Payload: c.Payload, ExpiresAt: c.ExpiresAt})
	if err == nil {
		err = s.d.Publisher.Publish(topicOf(c.DeviceID, c.ID), b, false, 1)
	}
	if err != nil {
		s.log.Warn("publish command", "device_id", c.DeviceID, "command_id", c.ID, "err", err)
	}
}

func topicOf(deviceID, commandID string) string {
	return "devices/" + deviceID + "/commands/" + commandID
}

func sentEvent(c *Command, typ string, now time.Time, resend bool) (commit.Event, error) {
	return commit.NewEvent(events.Event{
		Type: events.DeviceCommandSent, Time: now, DeviceID: c.DeviceID, DeviceType: typ,
		Args: &events.CommandSent{CommandID: c.ID, Command: c.Command, Payload: c.Payload, ExpiresAt: c.ExpiresAt, Resend: resend},
	})
}

// Get returns a command.
func (s *Service) Get(ctx context.Context, id string) (*Command, error) {
	return s.d.Store.GetCommand(ctx, id)
}

// List lists a device's commands, newest first.
func (s *Service) List(ctx context.Context, opts ListOptions) ([]Command, error) {
	if _, ok := s.d.Devices.DeviceType(opts.DeviceID); !ok {
		return nil, fmt.Errorf("list commands of %s: %w", opts.DeviceID, ErrDeviceNotFound)
	}
	if opts.Limit <= 0 || opts.Limit > 1000 {
		opts.Limit = 100
	}
	return s.d.Store.ListCommands(ctx, opts)
}

// Wait returns the command once it finished, or when d (at most
// Options.MaxWait) has passed, as it then is: running out of time is not
// an error.
func (s *Service) Wait(ctx context.Context, id string, d time.Duration) (*Command, error) {
	d = min(d, s.opts.MaxWait)
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.waiters[id] = append(s.waiters[id], ch)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		ws := s.waiters[id]
		for i, w := range ws {
			if w == ch {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(s.waiters, id)
		} else {
			s.waiters[id] = ws
		}
		s.mu.Unlock()
	}()
	tm := time.NewTimer(d)
	defer tm.Stop()
	for {
		c, err := s.d.Store.GetCommand(ctx, id)
		if err != nil || finalStatus(c.Status) {
			return c, err
		}
		select {
		case <-ch:
		case <-tm.C:
			return s.d.Store.GetCommand(ctx, id)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// notify wakes the callers waiting for a command. Call with mu held.
func (s *Service) notify(id string) {
	for _, w := range s.waiters[id] {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Cancel cancels a command that has not finished (device_command_canceled
// names by, who asked). A finished command is left as it is: ErrFinished.
func (s *Service) Cancel(ctx context.Context, id, by string) (*Command, error) {
	c, err := s.d.Store.GetCommand(ctx, id)
	if err != nil {
		return nil, err
	}
	if finalStatus(c.Status) {
		return c, fmt.Errorf("cancel command %s (%s): %w", id, c.Status, ErrFinished)
	}
	typ, _ := s.d.Devices.DeviceType(c.DeviceID)
	now := s.now()
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceCommandCanceled, Time: now, DeviceID: c.DeviceID, DeviceType: typ,
		Args: &events.CommandCanceled{CommandID: id, Command: c.Command, Status: c.Status, By: by},
	})
	if err != nil {
		return nil, err
	}
	err = s.d.Committer.Submit(ctx, &commit.Change{
		DeviceID: c.DeviceID,
		Ops:      []commit.Op{&Change{ID: id, Status: StatusCanceled, From: unfinished, At: now}},
		Events:   []commit.Event{ev},
	})
	if errors.Is(err, commit.ErrConflict) {
		c, gerr := s.d.Store.GetCommand(ctx, id)
		if gerr != nil {
			return nil, gerr
		}
		return c, fmt.Errorf("cancel command %s (%s): %w", id, c.Status, ErrFinished)
	}
	if err != nil {
		return nil, fmt.Errorf("cancel command %s: %w", id, err)
	}
	s.mu.Lock()
	s.forget(id)
	s.mu.Unlock()
	return s.d.Store.GetCommand(ctx, id)
}

// Delivered records that a device's MQTT client acknowledged the publish
// on topic (the broker calls it for every acknowledged QoS 1 publish to a
// device; topics other than a command's are ignored). It does not wait
// for the commit.
func (s *Service) Delivered(deviceID, topic string) {
	rest, ok := strings.CutPrefix(topic, "devices/"+deviceID+"/commands/")
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return
	}
	s.mu.Lock()
	o := s.byID[rest]
	if o == nil || o.cmd.DeviceID != deviceID || o.cmd.Status != StatusSent {
		s.mu.Unlock()
		return
	}
	o.cmd.Status = StatusDelivered
	s.schedule(o, time.Time{})
	c := o.cmd
	s.mu.Unlock()
	typ, _ := s.d.Devices.DeviceType(deviceID)
	now := s.now()
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceCommandDelivered, Time: now, DeviceID: deviceID, DeviceType: typ,
		Args: &events.CommandDelivered{CommandID: c.ID, Command: c.Command},
	})
	if err == nil {
		_, err = s.d.Committer.Enqueue(context.Background(), &commit.Change{
			DeviceID: deviceID,
			Ops:      []commit.Op{&Change{ID: c.ID, Status: StatusDelivered, From: []string{StatusSent}, DeliveredAt: &now, At: now}},
			Events:   []commit.Event{ev},
		})
	}
	if err != nil {
		s.log.Warn("record command delivered", "device_id", deviceID, "command_id", c.ID, "err", err)
	}
}

// Duplicate is the message log code of a device's answer that repeats
// the one stored (a resend): acknowledged, nothing changed.
const Duplicate = "duplicate"

// RecordResult queues a device's answer to a command (msg is its message
// log record) and returns the ticket of its change. An answer that
// repeats the stored one is recorded in the message log as a duplicate
// (code Duplicate) and changes nothing else: dup is true. It reports
// ErrNotFound for a command the device was not sent, ErrFinished for one
// that finished otherwise (also through the ticket, when the command
// finished between this check and the commit), and ErrInvalid for a bad
// status.
func (s *Service) RecordResult(ctx context.Context, deviceID, deviceType, commandID, status string, result json.RawMessage, msg *readings.Message) (t *commit.Ticket, dup bool, err error) {
	if !answerStatus(status) {
		return nil, false, fmt.Errorf("%w: status must be succeeded or failed", ErrInvalid)
	}
	cmd, err := s.d.Store.GetCommand(ctx, commandID)
	if err != nil {
		return nil, false, err
	}
	if cmd.DeviceID != deviceID {
		return nil, false, fmt.Errorf("command %s: %w", commandID, ErrNotFound)
	}
	switch cmd.Status {
	case StatusQueued, StatusSent, StatusDelivered:
	case status:
		m := *msg
		m.Accepted, m.Code = true, Duplicate
		m.Reason = fmt.Sprintf("command %s already %s: acknowledged, nothing changed", commandID, status)
		t, err := s.d.Committer.Enqueue(ctx, &commit.Change{DeviceID: deviceID, Ops: []commit.Op{&m}})
		if err != nil {
			return nil, false, fmt.Errorf("record duplicate result of %s: %w", commandID, err)
		}
		return t, true, nil
	default:
		return nil, false, fmt.Errorf("command %s is %s: %w", commandID, cmd.Status, ErrFinished)
	}
	result = compact(result)
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceCommandResult, Time: msg.ReceivedAt, DeviceID: deviceID, DeviceType: deviceType,
		Args: &events.CommandResult{CommandID: commandID, Command: cmd.Command, Status: status, Result: result, MessageID: msg.ID},
	})
	if err != nil {
		return nil, false, err
	}
	seen := msg.ReceivedAt
	t, err = s.d.Committer.Enqueue(ctx, &commit.Change{
		DeviceID: deviceID,
		Ops: []commit.Op{msg, &registry.DevicePatch{LastSeen: &seen},
			// A result proves delivery: the device's PUBACK of the command
			// may reach the hub after its result (the client acknowledges
			// once its handler returned), and delivered_at keeps the first.
			&Change{ID: commandID, Status: status, From: unfinished, Result: result, DeliveredAt: &seen, At: msg.ReceivedAt}},
		Events: []commit.Event{ev},
	})
	if err != nil {
		return nil, false, fmt.Errorf("record result of %s: %w", commandID, err)
	}
	return t, false, nil
}

// Run loads the unfinished commands, follows connections and finished
// commands, and hands over and expires commands until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	sub, err := s.d.Events.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{
		Types: []events.Type{events.DeviceConnected, events.DeviceDisconnected, events.DeviceCommandQueued,
			events.DeviceCommandResult, events.DeviceCommandExpired, events.DeviceCommandCanceled},
	}}, func(e events.Event) { s.onEvent(ctx, e) })
	if err != nil {
		return fmt.Errorf("commands: subscribe: %w", err)
	}
	defer sub.Close()
	cmds, err := s.d.Store.OpenCommands(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while loading: not a failure
		}
		return fmt.Errorf("commands: load open commands: %w", err)
	}
	s.mu.Lock()
	for _, c := range cmds {
		s.track(c)
	}
	s.mu.Unlock()

	if s.opts.Node == "" {
		jobsDone := make(chan struct{})
		go func() {
			defer close(jobsDone)
			s.runJobs(ctx)
		}()
		defer func() { <-jobsDone }()
	}

	tm := time.NewTimer(time.Hour)
	defer tm.Stop()
	for {
		next := s.tick(ctx)
		tm.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-tm.C:
		case <-s.wake:
		}
	}
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// onEvent follows connections (a device that connects has its commands
// not yet delivered handed over again after ConnectDelay, oldest first)
// and finished commands (whoever finished them: forgotten, waiters
// woken).
func (s *Service) onEvent(ctx context.Context, e events.Event) {
	if s.opts.Node != "" && s.clusterEvent(ctx, e) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch e.Type {
	case events.DeviceConnected:
		d := s.dev(e.DeviceID)
		d.connected = true
		due := s.now().Add(s.opts.ConnectDelay)
		for _, o := range d.cmds {
			if resendable(o.cmd.Status) {
				o.flush = true
				s.schedule(o, due)
			}
		}
	case events.DeviceDisconnected:
		if d := s.devs[e.DeviceID]; d != nil {
			d.connected = false
			for _, o := range d.cmds {
				o.flush = false
				s.schedule(o, time.Time{})
			}
			if len(d.cmds) == 0 {
				delete(s.devs, e.DeviceID)
			}
		}
	default:
		var id string
		switch a := e.Args.(type) {
		case *events.CommandResult:
			id = a.CommandID
		case *events.CommandExpired:
			id = a.CommandID
		case *events.CommandCanceled:
			id = a.CommandID
		}
		s.forget(id)
		s.notify(id)
		return
	}
	s.poke()
}

// handOff is a command to hand over again, with its device's type.
type handOff struct {
	cmd    Command
	typ    string
	resend bool
}

// tick expires and hands over what is due and returns how long to wait
// for the next.
func (s *Service) tick(ctx context.Context) time.Duration {
	now := s.now()
	var expire []Command
	var send []handOff
	next := now.Add(time.Minute)
	s.mu.Lock()
	for len(s.expQ) > 0 && !now.Before(s.expQ[0].cmd.ExpiresAt) {
		expire = append(expire, s.forget(s.expQ[0].cmd.ID).cmd)
	}
	for len(s.dueQ) > 0 && !now.Before(s.dueQ[0].due) {
		o := s.dueQ[0]
		d := s.devs[o.cmd.DeviceID]
		if d == nil || !d.connected || !resendable(o.cmd.Status) {
			o.flush = false
			s.schedule(o, time.Time{})
			continue
		}
		typ, _ := s.d.Devices.DeviceType(o.cmd.DeviceID)
		send = append(send, handOff{cmd: o.cmd, typ: typ, resend: o.cmd.Sends > 0})
		o.flush = false
		s.schedule(o, now.Add(s.opts.ResendInterval))
	}
	if len(s.expQ) > 0 && s.expQ[0].cmd.ExpiresAt.Before(next) {
		next = s.expQ[0].cmd.ExpiresAt
	}
	if len(s.dueQ) > 0 && s.dueQ[0].due.Before(next) {
		next = s.dueQ[0].due
	}
	s.mu.Unlock()
	for i := range expire {
		if err := s.expire(ctx, &expire[i], now); err != nil && ctx.Err() == nil {
			s.log.Warn("expire command", "command_id", expire[i].ID, "err", err)
		}
	}
	s.handOverAll(ctx, send, now)
	return max(next.Sub(s.now()), 10*time.Millisecond)
}

// handOverAll records the commands sent (one change each, committed
// together) and hands each to the broker after its commit, in order.
func (s *Service) handOverAll(ctx context.Context, send []handOff, now time.Time) {
	tickets := make([]*commit.Ticket, len(send))
	for i := range send {
		c := &send[i].cmd
		ev, err := sentEvent(c, send[i].typ, now, send[i].resend)
		if err != nil {
			s.log.Error("encode command event", "command_id", c.ID, "err", err)
			continue
		}
		sentAt := now
		tickets[i], err = s.d.Committer.Enqueue(ctx, &commit.Change{
			DeviceID: c.DeviceID,
			Ops:      []commit.Op{&Change{ID: c.ID, Status: StatusSent, From: []string{StatusQueued, StatusSent}, SentAt: &sentAt, At: now}},
			Events:   []commit.Event{ev},
		})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("record command sent", "command_id", c.ID, "err", err)
			}
			tickets[i] = nil
		}
	}
	for i, t := range tickets {
		if t == nil {
			continue
		}
		c := &send[i].cmd
		err := t.Wait(ctx)
		if errors.Is(err, commit.ErrConflict) {
			continue // delivered, answered, expired or canceled meanwhile
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("record command sent", "command_id", c.ID, "err", err)
			}
			continue
		}
		s.mu.Lock()
		if o := s.byID[c.ID]; o != nil {
			if o.cmd.Status == StatusQueued {
				o.cmd.FirstSentAt = &now
			}
			if o.cmd.Status == StatusQueued || o.cmd.Status == StatusSent {
				o.cmd.Status = StatusSent
			}
			o.cmd.Sends++
			o.cmd.SentAt = &now
		}
		s.mu.Unlock()
		s.handOver(c)
	}
}

func (s *Service) expire(ctx context.Context, c *Command, now time.Time) error {
	typ, _ := s.d.Devices.DeviceType(c.DeviceID)
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceCommandExpired, Time: now, DeviceID: c.DeviceID, DeviceType: typ,
		Args: &events.CommandExpired{CommandID: c.ID, Command: c.Command, Status: c.Status},
	})
	if err != nil {
		return err
	}
	err = s.d.Committer.Submit(ctx, &commit.Change{
		DeviceID: c.DeviceID,
		Ops:      []commit.Op{&Change{ID: c.ID, Status: StatusExpired, From: unfinished, At: now}},
		Events:   []commit.Event{ev},
	})
	if errors.Is(err, commit.ErrConflict) {
		return nil // finished meanwhile
	}
	return err
}

// lastID makes ids grow with time within a process (see older).
var lastID atomic.Int64

// newID returns a command id: "cmd_", 16 hex digits of a clock that never
// goes back in this process, and 8 random hex digits.
func newID() string {
	var n int64
	for {
		last := lastID.Load()
		n = max(time.Now().UnixNano(), last+1)
		if lastID.CompareAndSwap(last, n) {
			break
		}
	}
	r := make([]byte, 4)
	_, _ = rand.Read(r) // never fails (crypto/rand)
	return fmt.Sprintf("cmd_%016x%s", n, hex.EncodeToString(r))
}

// compact returns JSON without insignificant space, nil for none.
func compact(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// clusterEvent handles what differs in cluster mode; it reports whether e
// is done with. A connection on another node means the device is not
// here; a connection here loads the device's open commands (some may
// have been queued through other nodes); a command queued through
// another node for a device connected here is loaded and handed over.
func (s *Service) clusterEvent(ctx context.Context, e events.Event) bool {
	switch e.Type {
	case events.DeviceConnected:
		c, ok := e.Args.(*events.Connected)
		if !ok || c.Transport != "mqtt" || c.Node == s.opts.Node {
			if ok && c.Node == s.opts.Node {
				s.load(ctx, e.DeviceID, "")
			}
			return false
		}
		// On another node: as if disconnected from this one.
		e.Type = events.DeviceDisconnected
		s.onEvent(ctx, e)
		return true
	case events.DeviceCommandQueued:
		s.mu.Lock()
		d := s.devs[e.DeviceID]
		here := d != nil && d.connected
		s.mu.Unlock()
		if here {
			if q, ok := e.Args.(*events.CommandQueued); ok {
				s.load(ctx, e.DeviceID, q.CommandID)
			}
		}
		return true
	}
	return false
}

// load tracks the open commands of a device connected here that this node
// does not track yet (one command, or all of them when id is ""), and
// schedules their hand-over.
func (s *Service) load(ctx context.Context, deviceID, id string) {
	var cmds []Command
	if id != "" {
		c, err := s.d.Store.GetCommand(ctx, id)
		if err != nil {
			s.log.Warn("load a command queued through another node", "command_id", id, "err", err)
			return
		}
		cmds = []Command{*c}
	} else {
		for _, st := range []string{StatusQueued, StatusSent, StatusDelivered} {
			cs, err := s.d.Store.ListCommands(ctx, ListOptions{DeviceID: deviceID, Status: st, Limit: 1000})
			if err != nil {
				s.log.Warn("load the open commands of a device", "device_id", deviceID, "err", err)
				return
			}
			cmds = append(cmds, cs...)
		}
		slices.SortFunc(cmds, func(a, b Command) int { return a.CreatedAt.Compare(b.CreatedAt) })
	}
	s.mu.Lock()
	d := s.devs[deviceID]
	due := s.now()
	if id == "" {
		due = due.Add(s.opts.ConnectDelay)
	}
	for _, c := range cmds {
		if s.byID[c.ID] != nil || !resendable(c.Status) {
			continue
		}
		o := s.track(c)
		if d != nil && d.connected {
			o.flush = true
			s.schedule(o, due)
		}
	}
	s.mu.Unlock()
	s.poke()
}
