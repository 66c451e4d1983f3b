// Package apitest provides in-memory fakes of the API's collaborators and a
// test server built from them, for the tests of the api, client and cli
// packages.
package apitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// The bearer tokens the fake Tokens knows.
const (
	AdminToken    = "admin-secret"
	OperatorToken = "operator-secret"
	ViewerToken   = "viewer-secret"
)

// Fakes are the API's collaborators, in memory.
type Fakes struct {
	Devices      *Devices
	Provisioning *Provisioning
	Readings     *Readings
	Messages     *Messages
	Events       *Events
	Data         *Data
	Tokens       *Tokens
	Audit        *Audit
	Types        *devicetype.Registry
	Ready        error
	Commands     *Commands // devicecmd.go
	Twins        *Twins
	Monitors     *Monitors // monitors.go
	Accounts     *Accounts // accounts.go
	Configs      *Configs
	Firmware     *Firmware
	Alerts       *Alerts // alerts.go
}

// New returns fakes with three tokens (admin t1, operator t2, viewer t3)
// and the device type WeatherStation.
func New() *Fakes {
	types := devicetype.NewRegistry()
	lo, hi := -60.0, 70.0
	if err := types.Register(devicetype.Type{
		Name: "WeatherStation", HeartbeatInterval: time.Minute,
		Fields:   map[string]devicetype.Field{"temperature": {Type: devicetype.Float, Unit: "celsius", Min: &lo, Max: &hi}},
		Commands: []string{"reboot"},
	}); err != nil {
		panic(err)
	}
	f := &Fakes{
		Devices:  &Devices{Types: types, devices: map[string]registry.Device{}, keys: map[string]string{}, groups: map[string]registry.Group{}},
		Readings: &Readings{},
		Messages: &Messages{},
		Events:   &Events{subs: map[*subscription]struct{}{}},
		Data:     &Data{},
		Tokens:   &Tokens{tokens: map[string]access.Token{}},
		Accounts: &Accounts{},
		Audit:    &Audit{},
		Types:    types,
	}
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Provisioning = newProvisioning(f.Devices, types)
	f.Commands, f.Twins = newCommands(f.Devices), &Twins{Devices: f.Devices}
	f.Monitors = newMonitors()
	f.Configs = newConfigs()
	f.Firmware = newFirmware()
	f.Alerts = newAlerts()
	f.Tokens.add(AdminToken, access.Token{ID: "t1", Name: "admin", Role: access.Admin, CreatedAt: created})
	f.Tokens.add(OperatorToken, access.Token{ID: "t2", Name: "ops", Role: access.Operator, CreatedAt: created})
	f.Tokens.add(ViewerToken, access.Token{ID: "t3", Name: "dash", Role: access.Viewer, CreatedAt: created})
	return f
}

// Deps returns the API dependencies backed by the fakes.
func (f *Fakes) Deps() api.Deps {
	return api.Deps{
		Devices: f.Devices, Control: f.Devices, Groups: f.Devices, Import: f.Devices,
		ProvisioningTokens: f.Provisioning, ProvisioningOps: f.Provisioning, Registration: f.Provisioning, Readings: f.Readings, ReadingQueries: f.Readings, Messages: f.Messages, Events: f.Events,
		DeviceData: f.Data, DeviceAuth: f.Devices, Tokens: f.Tokens, Audit: f.Audit, Types: f.Types,
		Ready: func() error { return f.Ready }, Commands: f.Commands, Twin: f.Twins, Config: f.Configs,
		Monitors: f.Monitors, Firmware: f.Firmware, Alerts: f.Alerts,
		Sessions: f.Accounts, Users: f.Accounts, Counter: f.Devices, History: f.Events,
	}
}

// Server starts an httptest server of the API over the fakes; it is shut
// down when the test ends.
func (f *Fakes) Server(t testing.TB, opts api.Options) (*httptest.Server, *api.API) {
	t.Helper()
	a := api.New(f.Deps(), opts, nil)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		a.Shutdown()
		srv.Close()
	})
	return srv, a
}

// Devices is a fake device registry; it also authenticates API keys.
type Devices struct {
	Types *devicetype.Registry
	// Err, if set, is returned by every call.
	Err error

	// Overlaps are the overlaps of the rotations asked, in order.
	Overlaps []time.Duration
	// Certs are the pinned certificate fingerprints by device.
	Certs map[string][32]byte

	mu      sync.Mutex
	devices map[string]registry.Device
	keys    map[string]string // api key → device id
	groups  map[string]registry.Group
	n       int
}

// Provision creates a device with predictable credentials.
func (d *Devices) Provision(_ context.Context, req registry.ProvisionRequest) (events.Credentials, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Err != nil {
		return events.Credentials{}, d.Err
	}
	if !registry.ValidID(req.ID) {
		return events.Credentials{}, fmt.Errorf("%w %q", registry.ErrInvalidID, req.ID)
	}
	if _, err := d.Types.Get(req.Type); err != nil {
		return events.Credentials{}, err
	}
	if _, ok := d.devices[req.ID]; ok && !req.Replace {
		return events.Credentials{}, fmt.Errorf("provision %s: %w", req.ID, registry.ErrExists)
	}
	d.n++
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	d.ensureGroupLocked(req.Group)
	for k, v := range d.keys {
		if v == req.ID { // re-provisioned: the old key stops working
			delete(d.keys, k)
		}
	}
	d.devices[req.ID] = registry.Device{
		ID: req.ID, Type: req.Type, Name: req.Name, Group: req.Group, Tags: req.Tags, Metadata: req.Metadata,
		Status: "unknown", CreatedAt: now, UpdatedAt: now,
	}
	c := events.Credentials{MQTTUsername: req.ID, MQTTPassword: fmt.Sprintf("pw-%d", d.n), APIKey: fmt.Sprintf("key-%s-%d", req.ID, d.n)}
	d.keys[c.APIKey] = req.ID
	return c, nil
}

// Put stores a device as is.
func (d *Devices) Put(dev registry.Device) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ensureGroupLocked(dev.Group)
	d.devices[dev.ID] = dev
}

// Get returns a device.
func (d *Devices) Get(_ context.Context, id string) (*registry.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Err != nil {
		return nil, d.Err
	}
	dev, ok := d.devices[id]
	if !ok {
		return nil, fmt.Errorf("device %s: %w", id, registry.ErrNotFound)
	}
	return &dev, nil
}

// List lists devices by id.
func (d *Devices) List(_ context.Context, o registry.ListOptions) ([]registry.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Err != nil {
		return nil, d.Err
	}
	ids := make([]string, 0, len(d.devices))
	for id := range d.devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	byID := o.Order != registry.OrderLastSeen
	if !byID {
		sort.Slice(ids, func(i, j int) bool {
			a, b := d.devices[ids[i]], d.devices[ids[j]]
			return registry.SeenBefore(a.LastSeen, a.ID, b.LastSeen, b.ID)
		})
	}
	limit := o.Limit
	if limit == 0 {
		limit = 100
	}
	var out []registry.Device
	for _, id := range ids {
		dev := d.devices[id]
		switch {
		case byID && id <= o.After && o.After != "",
			!byID && o.After != "" && !registry.SeenBefore(o.AfterSeen, o.After, dev.LastSeen, id),
			o.Type != "" && dev.Type != o.Type,
			o.Group != "" && dev.Group != o.Group,
			o.Status != "" && dev.Status != o.Status,
			o.Connected != nil && dev.Connected != *o.Connected,
			o.Tag != "" && !slices.Contains(dev.Tags, o.Tag),
			o.Text != "" && !strings.Contains(strings.ToLower(id), strings.ToLower(o.Text)) &&
				!strings.Contains(strings.ToLower(dev.Name), strings.ToLower(o.Text)):
			continue
		}
		if len(out) == limit {
			break
		}
		out = append(out, dev)
	}
	return out, nil
}

// APIKey returns the API key of a provisioned device ("" if none).
func (d *Devices) APIKey(id string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range d.keys {
		if v == id {
			return k
		}
	}
	return ""
}

// AuthenticateAPIKey finds the device of an API key.
func (d *Devices) AuthenticateAPIKey(key string) (string, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.keys[key]
	if !ok {
		return "", "", registry.ErrUnauthorized
	}
	dev := d.devices[id]
	if dev.Disabled {
		return "", "", registry.ErrDisabled
	}
	return id, dev.Type, nil
}

// Readings is a fake reading store: pages are offsets in the newest-first
// order; the cursor "bad" (or any cursor it did not issue) is ErrBadCursor.
type Readings struct {
	mu      sync.Mutex
	records []readings.Record
	// Last is the last query asked.
	Last readings.Query
}

// Add stores readings.
func (r *Readings) Add(recs ...readings.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, recs...)
}

// QueryReadings answers a query.
func (r *Readings) QueryReadings(_ context.Context, q readings.Query) (readings.Page, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Last = q
	off := 0
	if q.Cursor != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(q.Cursor, "o"))
		if err != nil || !strings.HasPrefix(q.Cursor, "o") || n < 0 {
			return readings.Page{}, fmt.Errorf("query readings: %w", readings.ErrBadCursor)
		}
		off = n
	}
	var sel []readings.Record
	for _, rec := range r.records {
		if rec.DeviceID != q.DeviceID || (q.Stream != "" && rec.Stream != q.Stream) ||
			(!q.From.IsZero() && rec.Time.Before(q.From)) || (!q.To.IsZero() && !rec.Time.Before(q.To)) {
			continue
		}
		if q.Field != "" {
			v, ok := rec.Values[q.Field]
			if !ok {
				continue
			}
			rec.Values = map[string]any{q.Field: v}
		}
		sel = append(sel, rec)
	}
	sort.SliceStable(sel, func(i, j int) bool { return sel[i].Time.After(sel[j].Time) })
	limit := q.Limit
	if limit == 0 {
		limit = 100
	}
	var page readings.Page
	if off < len(sel) {
		sel = sel[off:]
		if len(sel) > limit {
			sel = sel[:limit]
			page.Next = "o" + strconv.Itoa(off+limit)
		}
		page.Readings = sel
	}
	return page, nil
}

// LatestValues answers from the records (the Type filter is not applied;
// the fake keeps no device types with readings).
func (r *Readings) LatestValues(_ context.Context, q readings.LatestQuery) (readings.LatestPage, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type key struct{ device, stream, field string }
	latest := map[key]readings.LatestValue{}
	for _, rec := range r.records {
		if rec.DeviceID <= q.After || (q.Stream != "" && rec.Stream != q.Stream) {
			continue
		}
		for f, v := range rec.Values {
			k := key{rec.DeviceID, rec.Stream, f}
			if q.Field != "" && f != q.Field {
				continue
			}
			if old, ok := latest[k]; ok && rec.Time.Before(old.Time) {
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				return readings.LatestPage{}, err
			}
			latest[k] = readings.LatestValue{Stream: rec.Stream, Field: f, Time: rec.Time, Value: b}
		}
	}
	keys := make([]key, 0, len(latest))
	for k := range latest {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.device != b.device {
			return a.device < b.device
		}
		if a.stream != b.stream {
			return a.stream < b.stream
		}
		return a.field < b.field
	})
	p := readings.NewLatestPager(q)
	for _, k := range keys {
		if !p.Add(k.device, latest[k]) {
			break
		}
	}
	return p.Page(), nil
}

// AggregateReadings answers from the records, in the order they were added.
func (r *Readings) AggregateReadings(_ context.Context, q readings.AggregateQuery) (readings.Aggregate, error) {
	if err := q.Check(); err != nil {
		return readings.Aggregate{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sel := slices.Clone(r.records)
	sort.SliceStable(sel, func(i, j int) bool { return sel[i].Time.Before(sel[j].Time) })
	a := readings.NewAggregator(q)
	for _, rec := range sel {
		if v, ok := rec.Values[q.Field].(float64); ok && rec.DeviceID == q.DeviceID && (q.Stream == "" || rec.Stream == q.Stream) {
			a.Add(rec.Time.UnixMicro(), v)
		}
	}
	return a.Result(), nil
}

// Messages is a fake message log.
type Messages struct {
	mu   sync.Mutex
	msgs []messagelog.Message // oldest first
}

// Add appends message log records.
func (m *Messages) Add(msgs ...messagelog.Message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, msgs...)
}

// ListMessages answers an audit query, newest first.
func (m *Messages) ListMessages(_ context.Context, q messagelog.Query) ([]messagelog.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []messagelog.Message
	for i := len(m.msgs) - 1; i >= 0; i-- {
		msg := m.msgs[i]
		if (q.DeviceID != "" && msg.DeviceID != q.DeviceID) || (q.Rejected && msg.Accepted) || (q.Before > 0 && msg.ID >= q.Before) {
			continue
		}
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
		out = append(out, msg)
	}
	return out, nil
}

// Tokens is a fake token service over an in-memory store. Create makes
// the secret "secret-<name>".
type Tokens struct {
	mu     sync.Mutex
	tokens map[string]access.Token // secret → token
	order  []string                // secrets, oldest first
	n      int
	// Err, if set, is returned by List.
	Err error
}

// Verify returns the token of a known, unrevoked secret.
func (t *Tokens) Verify(_ context.Context, bearer string) (*access.Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tok, ok := t.tokens[bearer]
	if !ok || tok.RevokedAt != nil {
		return nil, access.ErrUnauthorized
	}
	return &tok, nil
}

// Create adds a token.
func (t *Tokens) Create(_ context.Context, name string, role access.Role) (string, access.Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if strings.TrimSpace(name) == "" || !access.ValidRole(role) {
		return "", access.Token{}, fmt.Errorf("%w: name %q role %q", access.ErrInvalid, name, role)
	}
	t.n++
	tok := access.Token{ID: fmt.Sprintf("n%d", t.n), Name: name, Role: role, CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	secret := "secret-" + name
	t.tokens[secret] = tok
	t.order = append(t.order, secret)
	return secret, tok, nil
}

// List returns every token, oldest first.
func (t *Tokens) List(context.Context) ([]access.Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.Err != nil {
		return nil, t.Err
	}
	out := make([]access.Token, 0, len(t.order))
	for _, s := range t.order {
		out = append(out, t.tokens[s])
	}
	return out, nil
}

// Revoke revokes a token by id.
func (t *Tokens) Revoke(_ context.Context, id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for s, tok := range t.tokens {
		if tok.ID == id {
			if tok.RevokedAt == nil {
				at := time.Date(2025, 1, 3, 0, 0, 0, 0, time.UTC)
				tok.RevokedAt = &at
				t.tokens[s] = tok
			}
			return nil
		}
	}
	return fmt.Errorf("revoke token %s: %w", id, access.ErrNotFound)
}

func (t *Tokens) add(secret string, tok access.Token) {
	t.tokens[secret] = tok
	t.order = append(t.order, secret)
}

// Audit is a fake API audit trail.
type Audit struct {
	mu      sync.Mutex
	entries []access.AuditEntry // oldest first
	// Err, if set, is returned by every call.
	Err error
}

// AppendAudit stores an entry.
func (a *Audit) AppendAudit(_ context.Context, e access.AuditEntry) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return 0, a.Err
	}
	e.ID = int64(len(a.entries) + 1)
	a.entries = append(a.entries, e)
	return e.ID, nil
}

// ListAudit answers a query, newest first.
func (a *Audit) ListAudit(_ context.Context, q access.AuditQuery) ([]access.AuditEntry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return nil, a.Err
	}
	limit := q.Limit
	if limit == 0 {
		limit = 100
	}
	var out []access.AuditEntry
	for i := len(a.entries) - 1; i >= 0 && len(out) < limit; i-- {
		e := a.entries[i]
		if (q.TokenID != "" && e.TokenID != q.TokenID) || (q.Target != "" && e.Target != q.Target) ||
			(q.Failed && e.Status < 400) || (!q.Since.IsZero() && e.Time.Before(q.Since)) || (q.Before > 0 && e.ID >= q.Before) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Entries returns every entry, oldest first.
func (a *Audit) Entries() []access.AuditEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]access.AuditEntry(nil), a.entries...)
}

// Rejection is a fake ingest rejection.
type Rejection struct{ Code, Field, Reason string }

func (r *Rejection) Error() string { return r.Reason }

// RejectCode returns the machine code.
func (r *Rejection) RejectCode() string { return r.Code }

// RejectField returns the field at fault.
func (r *Rejection) RejectField() string { return r.Field }

// Data is a fake ingest pipeline for HTTP data: it accepts a JSON object or
// an array of objects, rejects anything else, and treats a repeated msg_id
// as a duplicate.
type Data struct {
	mu    sync.Mutex
	seen  map[string]int64
	next  int64
	Calls []DataCall
}

// DataCall records one call of HandleHTTPData.
type DataCall struct {
	DeviceID, DeviceType, Stream, ContentType string
	Payload                                   []byte
}

// HandleHTTPData takes in one message.
func (d *Data) HandleHTTPData(_ context.Context, id, typ, stream string, payload []byte, contentType string) (api.DataResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Calls = append(d.Calls, DataCall{id, typ, stream, contentType, payload})
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		return api.DataResult{}, &Rejection{Code: "invalid_json", Reason: "payload is not JSON: " + err.Error()}
	}
	var objs []map[string]any
	switch x := v.(type) {
	case map[string]any:
		objs = append(objs, x)
	case []any:
		for i, e := range x {
			o, ok := e.(map[string]any)
			if !ok {
				return api.DataResult{}, &Rejection{Code: "invalid_payload", Field: fmt.Sprintf("[%d]", i), Reason: "each reading must be an object"}
			}
			objs = append(objs, o)
		}
	default:
		return api.DataResult{}, &Rejection{Code: "invalid_payload", Reason: "payload must be an object or an array of objects"}
	}
	for _, o := range objs {
		if t, ok := o["temperature"].(float64); ok && t > 70 {
			return api.DataResult{}, &Rejection{Code: "out_of_range", Field: "temperature", Reason: "above the maximum 70"}
		}
	}
	if d.seen == nil {
		d.seen = map[string]int64{}
	}
	if m, ok := objs0(objs)["msg_id"].(string); ok {
		if id, dup := d.seen[m]; dup {
			return api.DataResult{MessageID: id, Duplicate: true}, nil
		}
		d.next++
		d.seen[m] = d.next
		return api.DataResult{MessageID: d.next, Readings: len(objs)}, nil
	}
	d.next++
	return api.DataResult{MessageID: d.next, Readings: len(objs)}, nil
}

func objs0(objs []map[string]any) map[string]any {
	if len(objs) == 0 {
		return nil
	}
	return objs[0]
}

// Events is a fake event bus with a log: Publish numbers and stores an
// event and hands it to matching subscribers, each from its own goroutine.
type Events struct {
	// Err, if set, is returned by Subscribe.
	Err error

	mu   sync.Mutex
	log  []events.Event
	subs map[*subscription]struct{}
}

type subscription struct {
	e      *Events
	filter events.Filter
	ch     chan events.Event
	done   chan struct{}
	exited chan struct{}
	once   sync.Once
}

// Publish commits an event: it gets the next sequence number.
func (e *Events) Publish(ev events.Event) events.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev.Seq = int64(len(e.log) + 1)
	if ev.Time.IsZero() {
		ev.Time = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	e.log = append(e.log, ev)
	for s := range e.subs {
		if s.filter.Match(&ev) {
			select {
			case s.ch <- ev:
			default: // a test that publishes this much has a bug
			}
		}
	}
	return ev
}

// Subscribers returns how many subscriptions are open.
func (e *Events) Subscribers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs)
}

// Subscribe replays logged events with Seq > opts.From (when From > 0;
// every logged event when From < 0), as eventlog.Bus does, and then
// delivers new ones.
func (e *Events) Subscribe(opts api.SubscribeOptions, fn func(events.Event)) (api.Subscription, error) {
	if e.Err != nil {
		return nil, e.Err
	}
	s := &subscription{e: e, filter: opts.Filter, ch: make(chan events.Event, 1024), done: make(chan struct{}), exited: make(chan struct{})}
	e.mu.Lock()
	if opts.From != 0 {
		for _, ev := range e.log {
			if ev.Seq > opts.From && s.filter.Match(&ev) {
				s.ch <- ev
			}
		}
	}
	e.subs[s] = struct{}{}
	e.mu.Unlock()
	go func() {
		defer close(s.exited)
		for {
			select {
			case ev := <-s.ch:
				fn(ev)
			case <-s.done:
				return
			}
		}
	}()
	return s, nil
}

// Close ends the subscription and waits for its goroutine.
func (s *subscription) Close() {
	s.once.Do(func() {
		s.e.mu.Lock()
		delete(s.e.subs, s)
		s.e.mu.Unlock()
		close(s.done)
		<-s.exited
	})
}

// ErrBoom is an internal error whose text must never reach a client.
var ErrBoom = errors.New("boom: secret internal detail")

// WaitFor polls cond until it holds or the deadline passes.
func WaitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
