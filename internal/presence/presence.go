// Package presence knows which devices are online. It turns connections,
// disconnections, last wills, status messages and heartbeat timeouts into
// device state and the signals device_connected, device_disconnected and
// device_status_changed, written through the commit path.
//
// Rules:
//   - MQTT connections carry a generation (see package broker). A
//     Disconnected whose generation is not the device's current one comes
//     from a taken-over session and changes nothing.
//   - In cluster mode the generation is cluster-wide and every change
//     about a session carries it (registry.DevicePatch.Session): the store
//     writes nothing of a change about a session older than the stored
//     one (its commit.Change is Superseded), so a node that has not yet
//     heard of a device's takeover by another node reports no stale
//     disconnect.
//   - The first of last will, status "offline", disconnect and heartbeat
//     timeout sets the device offline; the later ones find it offline and
//     fire nothing.
//   - Every packet counts as activity and pushes the heartbeat deadline of
//     the device's type. A device with activity while it is disconnected
//     and has no MQTT connection (an HTTP device) comes online with
//     transport "http".
//
// Lock order: a device's mutex, then the heap mutex (never the reverse);
// the registry lock (t.mu) is never held while taking either. The change
// for a transition is built and enqueued while the device's mutex is held,
// so one device's events are committed in the order they were decided;
// tickets are waited for outside the lock.
package presence

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// Committer queues changes for the commit path.
type Committer interface {
	Enqueue(ctx context.Context, ch *commit.Change) (*commit.Ticket, error)
}

// Types looks up declared device types.
type Types interface {
	Get(name string) (*devicetype.Type, error)
}

// Kicker closes a device's MQTT connection.
type Kicker interface {
	Kick(deviceID, reason string)
}

// Statuses the tracker sets itself; devices may report others.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// Transports of device_connected.
const (
	TransportMQTT = "mqtt"
	TransportHTTP = "http"
	// TransportExternal: a device on an external MQTT broker
	// (mqtt.external), whose connection the hub does not see: it comes
	// online with its messages.
	TransportExternal = "mqtt_external"
)

// ReasonHubRestart is the disconnect reason of devices that were still
// marked connected when the hub started (it stopped without saying so).
const ReasonHubRestart = "hub_restart"

// callTimeout bounds the commit work of transitions that have no caller's
// context (timeouts, activity).
const callTimeout = 10 * time.Second

// Options tune the tracker.
type Options struct {
	// Now is the clock (default time.Now); tests use a fake one.
	Now func() time.Time
	// DeviceType, if set, gives the type of a device the tracker does not
	// know yet (registry.Service.DeviceType), so that Activity can bring an
	// HTTP device online the first time it is heard from. Without it only
	// HTTPActivity can.
	DeviceType func(deviceID string) (string, bool)
	// Node is the cluster node id (cluster mode, "" otherwise): the
	// device patches of presence then carry the session generation (from
	// the cluster-wide sequence) and the node holding a new session.
	Node string
	// ActivityTransport is the transport of device_connected for a device
	// brought online by its activity without a connection the tracker
	// knows of (default TransportHTTP; TransportExternal with an external
	// broker).
	ActivityTransport string
}

// Tracker is the presence state machine. Create it with New and run its
// heartbeat timer with Run.
type Tracker struct {
	c      Committer
	types  Types
	typeOf func(deviceID string) (string, bool)
	kick   Kicker // nil: timed-out devices are not kicked
	now    func() time.Time
	node   string // cluster node id, "" outside cluster mode
	log    *slog.Logger
	m      *metrics

	mu      sync.RWMutex
	devices map[string]*device

	hmu  sync.Mutex
	heap deadlines
	wake chan struct{} // one slot: the earliest deadline moved
	pops atomic.Int64  // heap entries popped, for tests

	activityTransport string // Options.ActivityTransport
}

// device is one device's presence state.
type device struct {
	id string

	// Read without mu on the hot path (Activity) and by the heap.
	lastSeen  atomic.Int64 // unix nanoseconds of the last activity
	timeout   atomic.Int64 // heartbeat timeout in nanoseconds, 0: none
	live      atomic.Bool  // connected (mirrors st.connected)
	revivable atomic.Bool  // disconnected with no MQTT connection: activity brings it online

	mu  sync.Mutex
	typ string
	st  state

	inHeap bool // guarded by Tracker.hmu
}

// state is what a transition changes.
type state struct {
	connected bool
	status    string
	transport string
	gen       uint64 // generation of the open MQTT connection, 0 for none
}

// New returns a tracker. kick closes the connections of timed-out devices
// (the broker; nil for none). reg may be nil.
func New(c Committer, types Types, kick Kicker, opts Options, log *slog.Logger, reg prometheus.Registerer) *Tracker {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	t := &Tracker{
		c:       c,
		types:   types,
		now:     opts.Now,
		typeOf:  opts.DeviceType,
		node:    opts.Node,
		log:     log,
		devices: map[string]*device{},
		wake:    make(chan struct{}, 1),
	}
	t.kick = kick
	t.activityTransport = cmp.Or(opts.ActivityTransport, TransportHTTP)
	t.m = newMetrics(reg)
	return t
}

func (t *Tracker) lookup(id string) *device {
	t.mu.RLock()
	d := t.devices[id]
	t.mu.RUnlock()
	return d
}

// device returns the device's state, creating it as disconnected and
// offline. typ, when not empty, updates the device type.
func (t *Tracker) device(id, typ string) *device {
	d := t.lookup(id)
	if d == nil {
		t.mu.Lock()
		if d = t.devices[id]; d == nil {
			d = &device{id: id, typ: typ, st: state{status: StatusOffline}}
			d.revivable.Store(true)
			t.devices[id] = d
		}
		t.mu.Unlock()
	}
	return d
}

func (t *Tracker) typeTimeout(typ string) time.Duration {
	dt, err := t.types.Get(typ)
	if err != nil {
		t.log.Warn("device type unknown, no heartbeat check", "type", typ, "err", err)
		return 0
	}
	return dt.Timeout()
}

// Activity records that the device was heard from: it pushes the heartbeat
// deadline, and brings a disconnected device without MQTT connection (an
// HTTP device) online. The common case is a map lookup and two atomic
// operations, without allocation.
func (t *Tracker) Activity(deviceID string) {
	d := t.lookup(deviceID)
	if d == nil {
		t.firstActivity(deviceID)
		return
	}
	d.lastSeen.Store(t.now().UnixNano())
	if d.revivable.Load() {
		t.revive(d, "")
	}
}

// firstActivity handles activity of a device not known yet: MQTT devices
// are known from Connected on, so it is an HTTP device.
func (t *Tracker) firstActivity(deviceID string) {
	if t.typeOf == nil {
		return
	}
	if typ, ok := t.typeOf(deviceID); ok {
		t.HTTPActivity(deviceID, typ)
	}
}

// HTTPActivity is Activity for a device heard from over HTTP, which the
// tracker may not know yet: its type comes with it.
func (t *Tracker) HTTPActivity(deviceID, deviceType string) {
	d := t.device(deviceID, deviceType)
	d.lastSeen.Store(t.now().UnixNano())
	if d.revivable.Load() {
		t.revive(d, deviceType)
	}
}

// revive brings a device online over HTTP.
func (t *Tracker) revive(d *device, typ string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	d.mu.Lock()
	if typ != "" {
		d.typ = typ
	}
	if d.st.connected || d.st.gen != 0 {
		d.mu.Unlock()
		return
	}
	next := d.st
	next.connected, next.status, next.transport = true, StatusOnline, t.activityTransport
	timeout := t.typeTimeout(d.typ)
	_, err := t.apply(ctx, d, next, &events.Connected{Transport: t.activityTransport}, nil, nil)
	if err == nil {
		t.arm(d, timeout)
	}
	d.mu.Unlock()
	if err != nil {
		t.log.Error("record http device online", "device_id", d.id, "err", err)
	}
}

// Connected records an MQTT connection with its generation.
func (t *Tracker) Connected(ctx context.Context, deviceID, deviceType string, gen uint64, remoteAddr string) {
	d := t.device(deviceID, deviceType)
	timeout := t.typeTimeout(deviceType)
	d.mu.Lock()
	d.typ = deviceType
	d.lastSeen.Store(t.now().UnixNano())
	next := state{connected: true, status: StatusOnline, transport: TransportMQTT, gen: gen}
	// A takeover is a new connection: device_connected fires again.
	tk, err := t.apply(ctx, d, next, &events.Connected{Generation: gen, Transport: TransportMQTT, RemoteAddr: remoteAddr, Node: t.node}, nil, nil)
	if err == nil {
		t.arm(d, timeout)
	}
	d.mu.Unlock()
	t.wait(ctx, d, "connected", tk, err)
}

// Disconnected records the end of the MQTT connection gen. A stale
// generation (a taken-over session, or a connection whose device was
// already set offline and kicked) changes nothing.
func (t *Tracker) Disconnected(ctx context.Context, deviceID string, gen uint64, reason string, cause error) {
	d := t.lookup(deviceID)
	if d == nil {
		return
	}
	d.mu.Lock()
	if gen == 0 || d.st.gen != gen {
		d.mu.Unlock()
		return
	}
	next := d.st
	next.gen = 0
	next.connected = false
	next.status = StatusOffline
	// If a will, a status message or a timeout came first, the device is
	// offline already and this fires nothing.
	dis := &events.Disconnected{Generation: gen, Reason: reason}
	if cause != nil {
		dis.Error = cause.Error()
	}
	tk, err := t.apply(ctx, d, next, nil, dis, nil)
	d.mu.Unlock()
	t.wait(ctx, d, "disconnected", tk, err)
}

// RecordStatus records a status message of the device, or its last will
// (will), with msg as its message log record, in one change. A will, or status
// "offline", from a connected device also disconnects it (reason last_will
// or status_message); a will of a device already disconnected fires
// nothing. The caller waits for the ticket, which is nil when there was
// nothing to write (no msg and no change).
func (t *Tracker) RecordStatus(ctx context.Context, deviceID, deviceType, status string, msg *readings.Message, will bool) (*commit.Ticket, error) {
	d := t.device(deviceID, deviceType)
	d.mu.Lock()
	defer d.mu.Unlock()
	if deviceType != "" {
		d.typ = deviceType
	}
	next := d.st
	var dis *events.Disconnected
	switch {
	case will && !d.st.connected:
		return t.apply(ctx, d, d.st, nil, nil, msg) // only the message log record
	case will:
		if status == "" || status == StatusOnline {
			status = StatusOffline
		}
		next.connected, next.status = false, status
		dis = &events.Disconnected{Generation: d.st.gen, Reason: events.ReasonLastWill}
	case status == StatusOffline && d.st.connected:
		next.connected, next.status = false, status
		dis = &events.Disconnected{Generation: d.st.gen, Reason: events.ReasonStatusMessage}
	default:
		next.status = status
	}
	return t.apply(ctx, d, next, nil, dis, msg)
}

// Restore sets offline, with reason hub_restart, every device the store
// still marks connected or online although the hub just started (it
// stopped without recording it). deviceTypes gives their types. Call it
// before devices can connect.
func (t *Tracker) Restore(ctx context.Context, connected []string, deviceTypes map[string]string) error {
	devs := make([]LostDevice, len(connected))
	for i, id := range connected {
		devs[i] = LostDevice{ID: id, Type: deviceTypes[id]}
	}
	if err := t.setLost(ctx, devs, ReasonHubRestart); err != nil {
		return errors.Join(errors.New("restore presence"), err)
	}
	return nil
}

// apply turns the transition from d.st to next into one change (with msg
// as its message log record, if any) and enqueues it; on success d takes the
// next state. conn is the device_connected argument if the transition
// connects (always fired: a takeover is a new connection), dis the
// device_disconnected argument if it disconnects. d.mu is held.
func (t *Tracker) apply(ctx context.Context, d *device, next state, conn *events.Connected, dis *events.Disconnected, msg *readings.Message) (*commit.Ticket, error) {
	prev := d.st
	now := t.now().UTC()
	// The change and room for its two ops (message, patch) in one allocation.
	pc := &struct {
		ch  commit.Change
		ops [2]commit.Op
	}{}
	ch := &pc.ch
	ch.DeviceID, ch.Ops = d.id, pc.ops[:0]
	if msg != nil {
		ch.Ops = append(ch.Ops, msg)
	}
	add := func(typ events.Type, args any) error {
		ev, err := commit.NewEvent(events.Event{Type: typ, Time: now, DeviceID: d.id, DeviceType: d.typ, Args: args})
		if err != nil {
			return err
		}
		ch.Events = append(ch.Events, ev)
		return nil
	}
	if conn != nil {
		if err := add(events.DeviceConnected, conn); err != nil {
			return nil, err
		}
	}
	if dis != nil && prev.connected && !next.connected {
		if err := add(events.DeviceDisconnected, dis); err != nil {
			return nil, err
		}
	}
	if prev.status != next.status {
		if err := add(events.DeviceStatusChanged, &events.StatusChanged{OldStatus: prev.status, NewStatus: next.status}); err != nil {
			return nil, err
		}
	}
	if len(ch.Events) > 0 || prev.connected != next.connected {
		p := &registry.DevicePatch{LastSeen: &now}
		if t.node != "" {
			p.Session = next.gen
			if p.Session == 0 {
				p.Session = prev.gen
			}
			if conn != nil && next.gen != 0 {
				p.Node = &t.node
			}
		}
		if prev.status != next.status {
			p.Status = &next.status
		}
		if prev.connected != next.connected {
			p.Connected = &next.connected
		}
		ch.Ops = append(ch.Ops, p)
	}
	var tk *commit.Ticket
	if len(ch.Ops) > 0 {
		var err error
		if tk, err = t.c.Enqueue(ctx, ch); err != nil {
			return nil, err
		}
	}
	d.st = next
	d.live.Store(next.connected)
	d.revivable.Store(!next.connected && next.gen == 0)
	if prev.connected != next.connected {
		if next.connected {
			t.m.online.Inc()
		} else {
			t.m.online.Dec()
		}
	}
	return tk, nil
}

// wait waits for a transition's commit and logs its failure.
func (t *Tracker) wait(ctx context.Context, d *device, what string, tk *commit.Ticket, err error) {
	if err == nil && tk != nil {
		err = tk.Wait(ctx)
	}
	if err != nil {
		t.log.Error("record presence", "device_id", d.id, "transition", what, "err", err)
		return
	}
	t.noteStale(tk, what)
}

// noteStale counts and logs a committed transition the store found
// superseded: the device has a newer session (on another node) than the
// one the transition is about, so nothing of it was written.
func (t *Tracker) noteStale(tk *commit.Ticket, what string) {
	if tk == nil || !tk.Change.Superseded {
		return
	}
	t.m.stale.Inc()
	t.log.Info("stale presence change not written: the device has a newer session", "device_id", tk.Change.DeviceID, "transition", what)
}

// --- heartbeat timeouts ---

// entry is a heap entry: the deadline the device had when it was pushed.
// The real deadline (last activity + timeout) may be later: activity only
// moves lastSeen, and an entry that pops early is pushed again at the real
// deadline, so the work is proportional to devices whose entries come
// due, never a scan of the fleet.
type entry struct {
	at int64 // unix nanoseconds
	d  *device
}

type deadlines []entry

func (h deadlines) Len() int           { return len(h) }
func (h deadlines) Less(i, j int) bool { return h[i].at < h[j].at }
func (h deadlines) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deadlines) Push(x any)        { *h = append(*h, x.(entry)) }
func (h *deadlines) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = entry{}
	*h = old[:len(old)-1]
	return e
}

// arm makes sure a connected device with a heartbeat timeout has a heap
// entry. d.mu is held.
func (t *Tracker) arm(d *device, timeout time.Duration) {
	d.timeout.Store(int64(timeout))
	if timeout <= 0 {
		return
	}
	at := d.lastSeen.Load() + int64(timeout)
	t.hmu.Lock()
	if d.inHeap {
		t.hmu.Unlock()
		return
	}
	d.inHeap = true
	heap.Push(&t.heap, entry{at: at, d: d})
	first := t.heap[0].d == d
	t.hmu.Unlock()
	if first {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// next returns the earliest entry's deadline.
func (t *Tracker) next() (int64, bool) {
	t.hmu.Lock()
	defer t.hmu.Unlock()
	if len(t.heap) == 0 {
		return 0, false
	}
	return t.heap[0].at, true
}

// Run fires heartbeat timeouts until ctx is done: one timer, set to the
// earliest deadline.
func (t *Tracker) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if at, ok := t.next(); ok {
			timer.Reset(max(time.Duration(at-t.now().UnixNano()), 0))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.wake:
		case <-timer.C:
			t.expire(t.now())
		}
	}
}

// expire pops the entries that came due by now, re-arms those whose
// device was heard from since, and times out the others.
func (t *Tracker) expire(now time.Time) {
	start := time.Now()
	n := now.UnixNano()
	var due []*device
	t.hmu.Lock()
	for len(t.heap) > 0 && t.heap[0].at <= n {
		e := heap.Pop(&t.heap).(entry)
		t.pops.Add(1)
		d := e.d
		timeout := d.timeout.Load()
		if !d.live.Load() || timeout <= 0 {
			d.inHeap = false
			continue
		}
		if at := d.lastSeen.Load() + timeout; at > n {
			heap.Push(&t.heap, entry{at: at, d: d})
			continue
		}
		d.inHeap = false
		due = append(due, d)
	}
	t.hmu.Unlock()
	for _, d := range due {
		t.timedOut(d, now)
	}
	t.m.checkTime.Observe(time.Since(start).Seconds())
}

// timedOut sets a device offline after its heartbeat timeout and kicks its
// MQTT connection, whose later disconnect then changes nothing.
func (t *Tracker) timedOut(d *device, now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	d.mu.Lock()
	timeout := d.timeout.Load()
	if !d.st.connected || timeout <= 0 {
		d.mu.Unlock()
		return
	}
	if d.lastSeen.Load()+timeout > now.UnixNano() { // heard from meanwhile
		t.arm(d, time.Duration(timeout))
		d.mu.Unlock()
		return
	}
	gen := d.st.gen
	next := d.st
	next.connected, next.status = false, StatusOffline
	_, err := t.apply(ctx, d, next, nil, &events.Disconnected{Generation: gen, Reason: events.ReasonHeartbeatTimeout}, nil)
	d.mu.Unlock()
	if err != nil {
		t.log.Error("record heartbeat timeout", "device_id", d.id, "err", err)
		return
	}
	t.m.timeouts.Inc()
	t.log.Info("device heartbeat timeout", "device_id", d.id, "timeout", time.Duration(timeout))
	if gen != 0 {
		if k := t.kick; k != nil {
			k.Kick(d.id, events.ReasonHeartbeatTimeout)
		}
	}
}

// Superseded records that device id has a newer MQTT session, gen, on
// another cluster node: a disconnect of its older session here is then
// stale and changes nothing. The tracker writes nothing (the other node
// wrote the connection).
func (t *Tracker) Superseded(deviceID string, gen uint64) {
	d := t.lookup(deviceID)
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if gen <= d.st.gen {
		return
	}
	if d.st.connected {
		t.m.online.Dec()
	}
	d.st = state{status: StatusOffline, gen: gen}
	d.live.Store(false)
	d.revivable.Store(false)
}

// LostDevice is a device whose MQTT session, Gen, was on a node that died.
type LostDevice struct {
	ID, Type string
	Gen      uint64
}

// Lost sets offline, with reason, devices whose session was on a node
// that stopped without recording it: a dead node (reason node_lost, by
// the survivor holding the reaper lease), or this node's previous life
// (hub_restart). A device connected here since, or with a newer session
// known here, is left alone; the store applies the change only if the
// device's stored session is still Gen.
func (t *Tracker) Lost(ctx context.Context, devs []LostDevice, reason string) error {
	if err := t.setLost(ctx, devs, reason); err != nil {
		return errors.Join(errors.New("set lost devices offline"), err)
	}
	return nil
}

// setLost is Lost and Restore: a session of generation 0 is one the
// store knew of before this process started.
func (t *Tracker) setLost(ctx context.Context, devs []LostDevice, reason string) error {
	var tickets []*commit.Ticket
	var errs []error
	for _, ld := range devs {
		d := t.device(ld.ID, ld.Type)
		d.mu.Lock()
		if d.st.connected || d.st.gen > ld.Gen {
			d.mu.Unlock()
			continue
		}
		d.st = state{connected: true, status: StatusOnline, gen: ld.Gen}
		t.m.online.Inc()
		tk, err := t.apply(ctx, d, state{status: StatusOffline}, nil, &events.Disconnected{Generation: ld.Gen, Reason: reason}, nil)
		if err != nil {
			d.st = state{status: StatusOffline}
			t.m.online.Dec()
			errs = append(errs, err)
		} else {
			tickets = append(tickets, tk)
		}
		d.mu.Unlock()
	}
	for _, tk := range tickets {
		if err := tk.Wait(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		t.noteStale(tk, reason)
	}
	return errors.Join(errs...)
}
