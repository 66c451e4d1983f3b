// Package commands sends operators' commands to devices and records their
// results.
//
// A command is validated against the device type's commands list, stored
// (status pending) and, if the device is connected, published at QoS 1 to
// devices/{id}/commands/{command_id} as {"command", "payload",
// "expires_at"} and marked sent with a device_command_sent event. Devices
// connect with a clean session, so a command can be lost with its
// connection: the service keeps the open (pending or sent) commands in
// memory and publishes them again shortly after the device connects
// (ConnectDelay, to let it subscribe) and every ResendInterval while it
// stays unanswered, until it expires (device_command_expired). Devices
// dedupe by command id. The device answers on
// devices/{id}/commands/{command_id}/result with {"status":
// "succeeded"|"failed", "result": ...}; ingest hands the answer to
// RecordResult, which stores it with a device_command_result event.
//
// Every write is a commit.Change with a Change op, so events are
// stored with their change. The in-memory view of open commands is this
// node's: in a cluster each node resends the commands it knows of, which is
// harmless (devices dedupe) but not coordinated.
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
	"sync"
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
	StatusPending   = "pending"   // stored, not published yet (the device was offline)
	StatusSent      = "sent"      // published at least once, no answer yet
	StatusSucceeded = "succeeded" // the device answered succeeded
	StatusFailed    = "failed"    // the device answered failed
	StatusExpired   = "expired"   // no answer before it expired
)

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
	// bad result status).
	ErrInvalid error = &codedError{"invalid command", "validation_failed"}
	// ErrFinished: the command already has a final status.
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
	// OpenCommands returns every pending or sent command.
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

// Events lets the service hear of connections.
type Events interface {
	Subscribe(opts eventlog.SubscribeOptions, fn func(events.Event)) (*eventlog.Subscription, error)
}

// Options tune the service. Zero values take the defaults.
type Options struct {
	// DefaultExpiry is a command's lifetime when the request names none
	// (default 1h); MaxExpiry bounds it (default 7 days).
	DefaultExpiry time.Duration
	MaxExpiry     time.Duration
	// ConnectDelay is how long after a device connected its open commands
	// are published again (default 500ms), so that it has subscribed.
	ConnectDelay time.Duration
	// ResendInterval is how often an unanswered command is published
	// again while the device is connected (default 30s).
	ResendInterval time.Duration
	// MaxPayloadBytes bounds a command's payload (default 64 KiB).
	MaxPayloadBytes int
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
}

// Deps are the service's collaborators.
type Deps struct {
	Store     Store
	Committer Committer
	Publisher Publisher
	Devices   Devices
	Types     Types
	Events    Events
}

// open is an unanswered command this node sends.
type open struct {
	cmd  Command
	due  time.Time // next publish; zero: only when the device connects
	sent bool      // published at least once by this node
}

// Service sends commands and records their results. Create it with New,
// run it with Run.
type Service struct {
	d    Deps
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu        sync.Mutex
	open      map[string]*open // command id → open command
	connected map[string]bool  // devices connected (from the event log)
	wake      chan struct{}
}

// New returns a command service.
func New(d Deps, opts Options, log *slog.Logger) *Service {
	opts.setDefaults()
	return &Service{
		d: d, opts: opts, log: log,
		now:       func() time.Time { return time.Now().UTC() },
		open:      map[string]*open{},
		connected: map[string]bool{},
		wake:      make(chan struct{}, 1),
	}
}

// SendRequest is a command to send.
type SendRequest struct {
	DeviceID  string
	Command   string
	Payload   json.RawMessage // any JSON value, or empty
	ExpiresIn time.Duration   // 0: Options.DefaultExpiry
}

// message is what a device receives on devices/{id}/commands/{command_id}.
type message struct {
	Command   string          `json:"command"`
	Payload   json.RawMessage `json:"payload,omitempty"`
	ExpiresAt time.Time       `json:"expires_at"`
}

// Send stores a command and publishes it if the device is connected. It
// returns the command as stored.
func (s *Service) Send(ctx context.Context, req SendRequest) (*Command, error) {
	typ, ok := s.d.Devices.DeviceType(req.DeviceID)
	if !ok {
		return nil, fmt.Errorf("send command to %s: %w", req.DeviceID, ErrDeviceNotFound)
	}
	t, err := s.d.Types.Get(typ)
	if err != nil {
		return nil, fmt.Errorf("send command to %s: %w", req.DeviceID, err)
	}
	if !slices.Contains(t.Commands, req.Command) {
		return nil, fmt.Errorf("%w: %q (type %s declares %v)", ErrUnknownCommand, req.Command, typ, t.Commands)
	}
	if len(req.Payload) > 0 && !json.Valid(req.Payload) {
		return nil, fmt.Errorf("%w: payload is not JSON", ErrInvalid)
	}
	if len(req.Payload) > s.opts.MaxPayloadBytes {
		return nil, fmt.Errorf("%w: payload larger than %d bytes", ErrInvalid, s.opts.MaxPayloadBytes)
	}
	exp := req.ExpiresIn
	switch {
	case exp == 0:
		exp = s.opts.DefaultExpiry
	case exp < time.Second || exp > s.opts.MaxExpiry:
		return nil, fmt.Errorf("%w: expires_in must be from 1s to %s", ErrInvalid, s.opts.MaxExpiry)
	}
	now := s.now()
	cmd := Command{
		ID: newID(), DeviceID: req.DeviceID, Command: req.Command, Payload: compact(req.Payload),
		Status: StatusPending, CreatedAt: now, ExpiresAt: now.Add(exp).Truncate(time.Microsecond), UpdatedAt: now,
	}
	c := cmd
	if err := s.d.Committer.Submit(ctx, &commit.Change{DeviceID: req.DeviceID, Ops: []commit.Op{&Change{Create: &c}}}); err != nil {
		return nil, fmt.Errorf("store command for %s: %w", req.DeviceID, err)
	}
	s.mu.Lock()
	o := &open{cmd: cmd}
	s.open[cmd.ID] = o
	connected := s.connected[req.DeviceID]
	s.mu.Unlock()
	if connected {
		if sent, err := s.publish(ctx, o, typ, now); err != nil {
			s.log.Warn("publish command", "device_id", req.DeviceID, "command_id", cmd.ID, "err", err)
		} else if sent != nil {
			cmd = *sent
		}
	}
	s.poke()
	return &cmd, nil
}

// publish sends o to its device and records it sent (with the
// device_command_sent event); it returns the command as now stored, or
// nil if it was answered or expired meanwhile.
func (s *Service) publish(ctx context.Context, o *open, typ string, now time.Time) (*Command, error) {
	s.mu.Lock()
	cmd := o.cmd
	resend := o.sent
	o.sent = true
	o.due = now.Add(s.opts.ResendInterval)
	s.mu.Unlock()
	b, err := json.Marshal(message{Command: cmd.Command, Payload: cmd.Payload, ExpiresAt: cmd.ExpiresAt})
	if err != nil {
		return nil, fmt.Errorf("encode command %s: %w", cmd.ID, err)
	}
	if err := s.d.Publisher.Publish("devices/"+cmd.DeviceID+"/commands/"+cmd.ID, b, false, 1); err != nil {
		return nil, err
	}
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceCommandSent, Time: now, DeviceID: cmd.DeviceID, DeviceType: typ,
		Args: &events.CommandSent{CommandID: cmd.ID, Command: cmd.Command, Payload: cmd.Payload, ExpiresAt: cmd.ExpiresAt, Resend: resend},
	})
	if err != nil {
		return nil, err
	}
	sentAt := now
	err = s.d.Committer.Submit(ctx, &commit.Change{
		DeviceID: cmd.DeviceID,
		Ops:      []commit.Op{&Change{ID: cmd.ID, Status: StatusSent, From: []string{StatusPending, StatusSent}, SentAt: &sentAt, At: now}},
		Events:   []commit.Event{ev},
	})
	if errors.Is(err, commit.ErrConflict) {
		return nil, nil // answered or expired meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("record command %s sent: %w", cmd.ID, err)
	}
	cmd.Status, cmd.SentAt, cmd.UpdatedAt = StatusSent, &sentAt, now
	cmd.Sends++
	s.mu.Lock()
	if cur, ok := s.open[cmd.ID]; ok {
		cur.cmd.Status, cur.cmd.SentAt, cur.cmd.Sends = cmd.Status, cmd.SentAt, cur.cmd.Sends+1
	}
	s.mu.Unlock()
	return &cmd, nil
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

// RecordResult queues a device's answer to a command (msg is its audit
// record) and returns the ticket of its change, or nil and a nil error
// when the command already has this answer (a resend). It reports
// ErrNotFound for a command the device was not sent, ErrFinished for one
// already answered otherwise or expired, and ErrInvalid for a bad status.
func (s *Service) RecordResult(ctx context.Context, deviceID, deviceType, commandID, status string, result json.RawMessage, msg *readings.Message) (*commit.Ticket, error) {
	if status != StatusSucceeded && status != StatusFailed {
		return nil, fmt.Errorf("%w: status must be succeeded or failed", ErrInvalid)
	}
	cmd, err := s.d.Store.GetCommand(ctx, commandID)
	if err != nil {
		return nil, err
	}
	if cmd.DeviceID != deviceID {
		return nil, fmt.Errorf("command %s: %w", commandID, ErrNotFound)
	}
	switch cmd.Status {
	case StatusPending, StatusSent:
	case status:
		return nil, nil
	default:
		return nil, fmt.Errorf("command %s is %s: %w", commandID, cmd.Status, ErrFinished)
	}
	result = compact(result)
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceCommandResult, Time: msg.ReceivedAt, DeviceID: deviceID, DeviceType: deviceType,
		Args: &events.CommandResult{CommandID: commandID, Command: cmd.Command, Status: status, Result: result, MessageID: msg.ID},
	})
	if err != nil {
		return nil, err
	}
	seen := msg.ReceivedAt
	// No From: the change carries the message log record, which a failed
	// precondition would not take back; the check above decides.
	t, err := s.d.Committer.Enqueue(ctx, &commit.Change{
		DeviceID: deviceID,
		Ops: []commit.Op{msg, &registry.DevicePatch{LastSeen: &seen},
			&Change{ID: commandID, Status: status, Result: result, At: msg.ReceivedAt}},
		Events: []commit.Event{ev},
	})
	if err != nil {
		return nil, fmt.Errorf("record result of %s: %w", commandID, err)
	}
	s.mu.Lock()
	delete(s.open, commandID)
	s.mu.Unlock()
	return t, nil
}

// Run loads the open commands, follows connections, and publishes and
// expires commands until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	sub, err := s.d.Events.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{
		Types: []events.Type{events.DeviceConnected, events.DeviceDisconnected},
	}}, s.onEvent)
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
		if _, ok := s.open[c.ID]; !ok {
			s.open[c.ID] = &open{cmd: c, sent: c.Status == StatusSent}
		}
	}
	s.mu.Unlock()

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

// onEvent follows connections: a device that connects has its open
// commands published again after ConnectDelay.
func (s *Service) onEvent(e events.Event) {
	s.mu.Lock()
	switch e.Type {
	case events.DeviceConnected:
		s.connected[e.DeviceID] = true
		due := s.now().Add(s.opts.ConnectDelay)
		for _, o := range s.open {
			if o.cmd.DeviceID == e.DeviceID {
				o.due = due
			}
		}
	case events.DeviceDisconnected:
		delete(s.connected, e.DeviceID)
	}
	s.mu.Unlock()
	s.poke()
}

// tick expires and publishes what is due and returns how long to wait for
// the next.
func (s *Service) tick(ctx context.Context) time.Duration {
	now := s.now()
	var expire, send []*open
	next := now.Add(time.Minute)
	s.mu.Lock()
	for id, o := range s.open {
		switch {
		case !now.Before(o.cmd.ExpiresAt):
			expire = append(expire, o)
			delete(s.open, id)
			continue
		case o.cmd.ExpiresAt.Before(next):
			next = o.cmd.ExpiresAt
		}
		if !s.connected[o.cmd.DeviceID] || o.due.IsZero() {
			continue
		}
		if !now.Before(o.due) {
			send = append(send, o)
			o.due = now.Add(s.opts.ResendInterval)
		}
		if o.due.Before(next) {
			next = o.due
		}
	}
	s.mu.Unlock()
	for _, o := range expire {
		if err := s.expire(ctx, o, now); err != nil && ctx.Err() == nil {
			s.log.Warn("expire command", "command_id", o.cmd.ID, "err", err)
		}
	}
	for _, o := range send {
		typ, _ := s.d.Devices.DeviceType(o.cmd.DeviceID)
		if _, err := s.publish(ctx, o, typ, now); err != nil && ctx.Err() == nil {
			s.log.Warn("resend command", "device_id", o.cmd.DeviceID, "command_id", o.cmd.ID, "err", err)
		}
	}
	return max(next.Sub(s.now()), 10*time.Millisecond)
}

func (s *Service) expire(ctx context.Context, o *open, now time.Time) error {
	typ, _ := s.d.Devices.DeviceType(o.cmd.DeviceID)
	ev, err := commit.NewEvent(events.Event{
		Type: events.DeviceCommandExpired, Time: now, DeviceID: o.cmd.DeviceID, DeviceType: typ,
		Args: &events.CommandExpired{CommandID: o.cmd.ID, Command: o.cmd.Command, Status: o.cmd.Status},
	})
	if err != nil {
		return err
	}
	err = s.d.Committer.Submit(ctx, &commit.Change{
		DeviceID: o.cmd.DeviceID,
		Ops:      []commit.Op{&Change{ID: o.cmd.ID, Status: StatusExpired, From: []string{StatusPending, StatusSent}, At: now}},
		Events:   []commit.Event{ev},
	})
	if errors.Is(err, commit.ErrConflict) {
		return nil // answered meanwhile
	}
	return err
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return "cmd_" + hex.EncodeToString(b)
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
