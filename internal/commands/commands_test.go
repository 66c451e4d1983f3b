package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type publisher struct {
	mu     sync.Mutex
	msgs   map[string][]byte
	topics []string // in publish order
}

func (p *publisher) Publish(topic string, payload []byte, retain bool, qos byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.msgs == nil {
		p.msgs = map[string][]byte{}
	}
	p.msgs[topic] = payload
	p.topics = append(p.topics, topic)
	return nil
}

func (p *publisher) order() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.topics...)
}

func (p *publisher) get(topic string) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.msgs[topic]
}

type devices map[string]string

func (d devices) DeviceType(id string) (string, bool) { t, ok := d[id]; return t, ok }

type fixture struct {
	svc *commands.Service
	c   *commit.Committer
	st  *sqlite.Store
	pub *publisher

	mu  sync.Mutex
	evs []events.Event
}

func (f *fixture) saw(typ events.Type, id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.evs {
		if e.Type != typ {
			continue
		}
		b, _ := json.Marshal(e.Args)
		if strings.Contains(string(b), `"command_id":"`+id+`"`) {
			return true
		}
	}
	return false
}

func start(t *testing.T) *fixture {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "db")})
	if err != nil {
		t.Fatal(err)
	}
	types := devicetype.NewRegistry()
	one, day := 1.0, 86400.0
	if err := types.Register(devicetype.Type{Name: "lamp", Commands: []string{"blink", "set_interval"},
		CommandParams: map[string]devicetype.CommandSpec{"set_interval": {Params: map[string]devicetype.Field{
			"seconds": {Type: devicetype.Int, Min: &one, Max: &day, Required: true}}}}}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st, pub: &publisher{}}
	bus := eventlog.NewBus(st, eventlog.BusOptions{}, log, nil)
	f.c = commit.New(st, bus, commit.Options{}, log, nil)
	f.svc = commands.New(commands.Deps{Store: st, Committer: f.c, Publisher: f.pub, Devices: devices{"l1": "lamp", "l2": "lamp"}, Types: types, Events: bus},
		commands.Options{ConnectDelay: 10 * time.Millisecond}, log)
	sub, err := bus.Subscribe(eventlog.SubscribeOptions{}, func(e events.Event) {
		f.mu.Lock()
		f.evs = append(f.evs, e)
		f.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	busCtx, stopBus := context.WithCancel(context.Background())
	commitCtx, stopCommit := context.WithCancel(context.Background())
	wg.Add(3)
	go func() { defer wg.Done(); bus.Run(busCtx) }()
	go func() { defer wg.Done(); f.c.Run(commitCtx) }()
	go func() { defer wg.Done(); f.svc.Run(ctx) }()
	for _, id := range []string{"l1", "l2"} {
		nd := &registry.NewDevice{Type: "lamp", MQTTUsername: id, PasswordHash: []byte("h"), APIKeyHash: []byte("k" + id), CreatedAt: time.Now()}
		if err := f.c.Submit(ctx, &commit.Change{DeviceID: id, Ops: []commit.Op{nd}}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		cancel()
		sub.Close()
		stopCommit()
		stopBus()
		wg.Wait()
		st.Close()
	})
	return f
}

// connect commits a device_connected event, as presence does.
func (f *fixture) connect(t *testing.T, id string) {
	t.Helper()
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceConnected, Time: time.Now(), DeviceID: id, DeviceType: "lamp", Args: &events.Connected{Generation: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.c.Submit(context.Background(), &commit.Change{DeviceID: id, Events: []commit.Event{ev}}); err != nil {
		t.Fatal(err)
	}
}

func status(t *testing.T, f *fixture, id string) string {
	t.Helper()
	c, err := f.svc.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Status
}

func TestSendValidation(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	tests := []struct {
		name string
		req  commands.SendRequest
		want error
	}{
		{"unknown device", commands.SendRequest{DeviceID: "nope", Command: "blink"}, commands.ErrDeviceNotFound},
		{"undeclared", commands.SendRequest{DeviceID: "l1", Command: "explode"}, commands.ErrUnknownCommand},
		{"bad payload", commands.SendRequest{DeviceID: "l1", Command: "blink", Payload: json.RawMessage(`{`)}, commands.ErrInvalid},
		{"short expiry", commands.SendRequest{DeviceID: "l1", Command: "blink", ExpiresIn: time.Millisecond}, commands.ErrInvalid},
		{"param missing", commands.SendRequest{DeviceID: "l1", Command: "set_interval", Payload: json.RawMessage(`{}`)}, commands.ErrInvalid},
		{"param too small", commands.SendRequest{DeviceID: "l1", Command: "set_interval", Payload: json.RawMessage(`{"seconds":0}`)}, commands.ErrInvalid},
		{"param not an int", commands.SendRequest{DeviceID: "l1", Command: "set_interval", Payload: json.RawMessage(`{"seconds":1.5}`)}, commands.ErrInvalid},
		{"unknown param", commands.SendRequest{DeviceID: "l1", Command: "set_interval", Payload: json.RawMessage(`{"seconds":5,"x":1}`)}, commands.ErrInvalid},
		{"no object", commands.SendRequest{DeviceID: "l1", Command: "set_interval", Payload: json.RawMessage(`[5]`)}, commands.ErrInvalid},
		{"good params", commands.SendRequest{DeviceID: "l1", Command: "set_interval", Payload: json.RawMessage(`{"seconds":86400}`)}, nil},
		{"names only: any payload", commands.SendRequest{DeviceID: "l1", Command: "blink", Payload: json.RawMessage(`[1,2]`)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.Send(ctx, tt.req)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParamErrorNamesFieldAndRule(t *testing.T) {
	f := start(t)
	_, err := f.svc.Send(context.Background(), commands.SendRequest{DeviceID: "l1", Command: "set_interval", Payload: json.RawMessage(`{"seconds":0}`)})
	var pe *commands.ParamError
	if !errors.As(err, &pe) || pe.Param != "seconds" || pe.Rule != "min" || !strings.Contains(err.Error(), `"seconds"`) {
		t.Fatalf("err %v (%+v)", err, pe)
	}
}

func TestQueuedSentOnConnectThenAnswered(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	cmd, err := f.svc.Send(ctx, commands.SendRequest{DeviceID: "l1", Command: "blink", Payload: json.RawMessage(`{ "times": 3 }`)})
	if err != nil {
		t.Fatal(err)
	}
	topic := "devices/l1/commands/" + cmd.ID
	if cmd.Status != commands.StatusQueued || f.pub.get(topic) != nil {
		t.Fatalf("offline: %+v, published %s", cmd, f.pub.get(topic))
	}
	f.connect(t, "l1")
	// The status is committed before the command is handed to the
	// broker (handOverAll): wait for both.
	eventually.True(t, 10*time.Second, "the command sent", func() bool {
		return status(t, f, cmd.ID) == commands.StatusSent && f.pub.get(topic) != nil
	})
	var msg struct {
		Command   string          `json:"command"`
		Payload   json.RawMessage `json:"payload"`
		ExpiresAt time.Time       `json:"expires_at"`
	}
	if err := json.Unmarshal(f.pub.get(topic), &msg); err != nil || msg.Command != "blink" || string(msg.Payload) != `{"times":3}` || !msg.ExpiresAt.Equal(cmd.ExpiresAt) {
		t.Fatalf("published %s (%v)", f.pub.get(topic), err)
	}
	eventually.True(t, 10*time.Second, "device_command_sent", func() bool { return f.saw(events.DeviceCommandSent, cmd.ID) })

	answer := func(dev, st string) (*commit.Ticket, bool, error) {
		return f.svc.RecordResult(ctx, dev, "lamp", cmd.ID, st, json.RawMessage(`{"ok":true}`),
			&readings.Message{ID: time.Now().UnixNano(), Topic: topic + "/result", Transport: "mqtt", QoS: 1, Accepted: true, ReceivedAt: time.Now().UTC()})
	}
	if _, _, err := answer("l2", commands.StatusSucceeded); !errors.Is(err, commands.ErrNotFound) {
		t.Fatalf("another device's answer: %v", err)
	}
	tk, dup, err := answer("l1", commands.StatusSucceeded)
	if err != nil || tk == nil || dup {
		t.Fatal(tk, dup, err)
	}
	if err := tk.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	tk, dup, err = answer("l1", commands.StatusSucceeded)
	if err != nil || tk == nil || !dup {
		t.Fatalf("the same answer again: %v %v %v, want a duplicate record", tk, dup, err)
	}
	if err := tk.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := answer("l1", commands.StatusFailed); !errors.Is(err, commands.ErrFinished) {
		t.Errorf("another answer: %v", err)
	}
	got, err := f.svc.Get(ctx, cmd.ID)
	if err != nil || got.Status != commands.StatusSucceeded || string(got.Result) != `{"ok":true}` || got.Sends != 1 {
		t.Fatalf("%+v %v", got, err)
	}
	eventually.True(t, 10*time.Second, "device_command_result", func() bool { return f.saw(events.DeviceCommandResult, cmd.ID) })
}

func TestExpiry(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	cmd, err := f.svc.Send(ctx, commands.SendRequest{DeviceID: "l2", Command: "blink", ExpiresIn: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the command expired", func() bool { return status(t, f, cmd.ID) == commands.StatusExpired })
	eventually.True(t, 10*time.Second, "device_command_expired", func() bool { return f.saw(events.DeviceCommandExpired, cmd.ID) })
	list, err := f.svc.List(ctx, commands.ListOptions{DeviceID: "l2", Status: commands.StatusExpired})
	if err != nil || len(list) != 1 || list[0].FinishedAt == nil {
		t.Fatalf("%+v %v", list, err)
	}
}

// TestOldestFirstAfterConnect queues six commands for an offline device;
// after it connects they are handed over oldest first, and a seventh sent
// while they wait for their hand-over goes out after them.
func TestOldestFirstAfterConnect(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	var want []string
	for range 6 {
		c, err := f.svc.Send(ctx, commands.SendRequest{DeviceID: "l1", Command: "blink"})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, "devices/l1/commands/"+c.ID)
	}
	f.connect(t, "l1")
	c7, err := f.svc.Send(ctx, commands.SendRequest{DeviceID: "l1", Command: "blink"})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, "devices/l1/commands/"+c7.ID)
	eventually.True(t, 10*time.Second, "seven publishes", func() bool { return len(f.pub.order()) >= 7 })
	if got := f.pub.order()[:7]; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
}

func TestDeliveredCancelAndWait(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	c, err := f.svc.Send(ctx, commands.SendRequest{DeviceID: "l1", Command: "blink"})
	if err != nil || c.Status != commands.StatusQueued {
		t.Fatalf("%+v %v", c, err)
	}
	f.svc.Delivered("l1", "devices/l1/commands/"+c.ID) // not sent yet: no delivery
	f.connect(t, "l1")
	eventually.True(t, 10*time.Second, "sent", func() bool { return status(t, f, c.ID) == commands.StatusSent })
	if c, err = f.svc.Get(ctx, c.ID); err != nil || c.FirstSentAt == nil || c.Sends != 1 {
		t.Fatalf("%+v %v", c, err)
	}
	// Once the service knows the device connected, a new command is sent
	// at once.
	c2, err := f.svc.Send(ctx, commands.SendRequest{DeviceID: "l1", Command: "blink"})
	if err != nil || c2.Status != commands.StatusSent || c2.FirstSentAt == nil || c2.Sends != 1 {
		t.Fatalf("%+v %v", c2, err)
	}
	// Another device's acknowledgement, or another topic's, is not this
	// command's.
	f.svc.Delivered("l2", "devices/l1/commands/"+c.ID)
	f.svc.Delivered("l1", "devices/l1/twin/desired")
	f.svc.Delivered("l1", "devices/l1/commands/"+c.ID)
	eventually.True(t, 10*time.Second, "delivered", func() bool { return status(t, f, c.ID) == commands.StatusDelivered })
	got, _ := f.svc.Get(ctx, c.ID)
	if got.DeliveredAt == nil {
		t.Fatalf("%+v", got)
	}
	eventually.True(t, 10*time.Second, "device_command_delivered", func() bool { return f.saw(events.DeviceCommandDelivered, c.ID) })

	// A wait that runs out answers with the state, not an error.
	w, err := f.svc.Wait(ctx, c.ID, 20*time.Millisecond)
	if err != nil || w.Status != commands.StatusDelivered {
		t.Fatalf("wait: %+v %v", w, err)
	}
	// A waiter is woken by the cancel.
	done := make(chan *commands.Command, 1)
	go func() {
		w, err := f.svc.Wait(ctx, c.ID, time.Minute)
		if err != nil {
			t.Error(err)
		}
		done <- w
	}()
	cc, err := f.svc.Cancel(ctx, c.ID, "tok_1")
	if err != nil || cc.Status != commands.StatusCanceled || cc.FinishedAt == nil {
		t.Fatalf("cancel: %+v %v", cc, err)
	}
	if w := <-done; w == nil || w.Status != commands.StatusCanceled {
		t.Fatalf("waiter got %+v", w)
	}
	if _, err := f.svc.Cancel(ctx, c.ID, "tok_1"); !errors.Is(err, commands.ErrFinished) {
		t.Fatalf("cancel again: %v", err)
	}
	_, _, err = f.svc.RecordResult(ctx, "l1", "lamp", c.ID, commands.StatusSucceeded, nil,
		&readings.Message{ID: time.Now().UnixNano(), Topic: "devices/l1/commands/" + c.ID + "/result", Transport: "mqtt", QoS: 1, Accepted: true, ReceivedAt: time.Now().UTC()})
	if !errors.Is(err, commands.ErrFinished) {
		t.Fatalf("answer after cancel: %v", err)
	}
}
