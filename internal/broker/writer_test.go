package broker

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/devicehub/devicehub/internal/eventually"
)

// TestMochiAccess: the broker reaches the fields of this mochi version
// it needs; a struct whose fields differ is refused; and the check
// refuses a queue that is not the one mochi made.
func TestMochiAccess(t *testing.T) {
	//lint:ignore U1000 its fields are read through reflect only
	type innerState struct{ outbound chan *packets.Packet }
	//lint:ignore U1000 its fields are read through reflect only
	type inflight struct {
		a                int64
		sendQuota        int32
		b                bool
		maximumSendQuota int32
	}
	inflightType := reflect.TypeFor[inflight]()
	for _, tt := range []struct {
		name            string
		state, inflight reflect.Type
		err             string // "" for found
	}{
		{"mochi's types", reflect.TypeFor[mqtt.ClientState](), reflect.TypeFor[mqtt.Inflight](), ""},
		{"fields found", reflect.TypeFor[struct {
			a        int
			outbound chan *packets.Packet
		}](), inflightType, ""},
		{"no queue", reflect.TypeFor[struct{ a int32 }](), inflightType, "no field outbound"},
		{"queue of values", reflect.TypeFor[struct{ outbound chan packets.Packet }](), inflightType, "outbound is a chan packets.Packet"},
		{"promoted", reflect.TypeFor[struct{ innerState }](), inflightType, "promoted"},
		{"no quota", reflect.TypeFor[innerState](), reflect.TypeFor[struct{ maximumSendQuota int32 }](), "no field sendQuota"},
		{"no maximum", reflect.TypeFor[innerState](), reflect.TypeFor[struct{ sendQuota int32 }](), "no field maximumSendQuota"},
		{"wider quota", reflect.TypeFor[innerState](), reflect.TypeFor[struct {
			sendQuota        int64
			maximumSendQuota int32
		}](), "sendQuota is a int64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := findMochiIn(tt.state, tt.inflight)
			switch {
			case tt.err == "" && err != nil:
				t.Fatal(err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want one with %q", err, tt.err)
			case tt.err == "":
				q, _ := tt.state.FieldByName("outbound")
				sq, _ := tt.inflight.FieldByName("sendQuota")
				mq, _ := tt.inflight.FieldByName("maximumSendQuota")
				if a.queueOff != q.Offset || a.quotaOff != sq.Offset || a.maxQuotaOff != mq.Offset {
					t.Fatalf("offsets %d, %d, %d; want %d, %d, %d", a.queueOff, a.quotaOff, a.maxQuotaOff, q.Offset, sq.Offset, mq.Offset)
				}
			}
		})
	}
	a, err := findMochi()
	if err != nil {
		t.Fatal(err)
	}
	srv := mqtt.New(&mqtt.Options{Capabilities: func() *mqtt.Capabilities {
		c := mqtt.NewDefaultServerCapabilities()
		c.MaximumClientWritesPending = 77
		return c
	}()})
	cl := srv.NewClient(nil, "local", "probe", true)
	if err := a.check(cl, 77); err != nil {
		t.Fatalf("check on a client mochi made: %v", err)
	}
	if err := a.check(cl, 78); err == nil {
		t.Fatal("check accepted a queue of another capacity")
	}
	a.dropQueue(cl)
	if err := a.check(cl, 77); err == nil {
		t.Fatal("check accepted a dropped queue")
	}
	bad := *a
	bad.quotaOff = bad.maxQuotaOff
	if err := bad.check(srv.NewClient(nil, "local", "probe2", true), 77); err == nil || !strings.Contains(err.Error(), "send quota") {
		t.Fatalf("check of a wrong quota offset: %v", err)
	}
}

// subscribeCommands subscribes c to its device's commands at qos.
func subscribeCommands(t *testing.T, c *client, id string, qos byte) {
	t.Helper()
	if _, err := c.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/commands/+", QoS: qos}}}); err != nil {
		t.Fatal(err)
	}
}

// receive waits for the next message of c.
func receive(t *testing.T, c *client, what string) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.received:
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("%s not received", what)
		return nil
	}
}

// TestWriterIdlesAndRestarts: a client's writer ends once its queue has
// been idle for WriterIdle, and the next message to the client, of every
// kind that mochi queues (a publish of the hub at QoS 0 and 1, the
// device's own publish to a topic it subscribed to, a retained message
// when it subscribes), starts a new one that delivers it.
func TestWriterIdlesAndRestarts(t *testing.T) {
	h := startOpts(t, Options{WriterIdle: 5 * time.Millisecond}, &fakeHandler{errs: map[string]error{}})
	idle := func(what string) {
		t.Helper()
		eventually.True(t, 5*time.Second, "writers idle "+what, func() bool {
			return gaugeValue(t, h, "devicehub_mqtt_writers") == 0
		})
	}
	if err := h.b.Publish("devices/dev1/config/desired", []byte(`{"v":1}`), true, 1); err != nil {
		t.Fatal(err)
	}
	c := mustDial(t, h, "dev1")
	subscribeCommands(t, c, "dev1", 1)
	if n := h.b.writers.Load(); n != 0 {
		t.Fatalf("%d writers with nothing queued", n)
	}
	for round := range 3 {
		for _, send := range []struct {
			name  string
			topic string
			send  func(topic string) error
		}{
			{"hub qos 0", "devices/dev1/commands/a", func(topic string) error { return h.b.Publish(topic, []byte(`{}`), false, 0) }},
			{"hub qos 1", "devices/dev1/commands/b", func(topic string) error { return h.b.Publish(topic, []byte(`{}`), false, 1) }},
			{"device's own qos 0", "devices/dev1/commands/c", func(topic string) error {
				_, err := c.Publish(ctx5(t), &paho.Publish{Topic: topic, QoS: 0, Payload: []byte(`{}`)})
				return err
			}},
		} {
			idle(fmt.Sprintf("before %s, round %d", send.name, round))
			if err := send.send(send.topic); err != nil {
				t.Fatal(err)
			}
			if m := receive(t, c, send.name); m.Topic != send.topic {
				t.Fatalf("%s: got %s", send.name, m.Topic)
			}
		}
	}
	idle("before the retained message")
	if _, err := c.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/config/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, c, "retained message"); m.Topic != "devices/dev1/config/desired" || !m.Retain {
		t.Fatalf("got %s (retain %v), want the retained devices/dev1/config/desired", m.Topic, m.Retain)
	}
	idle("at the end")
	if d := h.b.server.Info.MessagesDropped; d != 0 {
		t.Fatalf("mochi dropped %d messages", d)
	}
}

// TestWriterOrder: messages published at once from several goroutines,
// while the writer keeps ending and starting (a WriterIdle of a
// microsecond), all arrive, each goroutine's in the order it published.
func TestWriterOrder(t *testing.T) {
	const publishers, each = 4, 50 // within the write queue and the test client's buffer
	for _, tt := range []struct {
		name   string
		qos    byte
		device bool // the device publishes to its own commands topics
	}{
		{"hub qos 0", 0, false},
		{"hub qos 1", 1, false},
		{"device qos 0", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startOpts(t, Options{WriterIdle: time.Microsecond}, &fakeHandler{errs: map[string]error{}})
			c := mustDial(t, h, "dev1")
			subscribeCommands(t, c, "dev1", tt.qos)
			var wg sync.WaitGroup
			errs := make(chan error, publishers)
			for p := range publishers {
				wg.Go(func() {
					for i := range each {
						topic := fmt.Sprintf("devices/dev1/commands/p%d", p)
						payload := []byte(strconv.Itoa(i))
						var err error
						if tt.device {
							_, err = c.Publish(ctx5(t), &paho.Publish{Topic: topic, QoS: 0, Payload: payload})
						} else {
							err = h.b.Publish(topic, payload, false, tt.qos)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			next := map[string]int{}
			for n := range publishers * each {
				m := receive(t, c, fmt.Sprintf("message %d of %d", n+1, publishers*each))
				p := strings.TrimPrefix(m.Topic, "devices/dev1/commands/")
				i, err := strconv.Atoi(string(m.Payload))
				if err != nil {
					t.Fatal(err)
				}
				if i != next[p] {
					t.Fatalf("publisher %s: got message %d, want %d", p, i, next[p])
				}
				next[p]++
			}
			if d := h.b.server.Info.MessagesDropped; d != 0 {
				t.Fatalf("mochi dropped %d messages", d)
			}
			eventually.True(t, 5*time.Second, "writers idle", func() bool { return h.b.writers.Load() == 0 })
		})
	}
}

// TestWriterStopsWithBroker: a running writer (it would idle for an
// hour) ends when the broker stops, and no writer runs for a connection
// that ended (goleak in TestMain checks no goroutine is left).
func TestWriterStopsWithBroker(t *testing.T) {
	h := startOpts(t, Options{WriterIdle: time.Hour}, &fakeHandler{errs: map[string]error{}})
	c := mustDial(t, h, "dev1")
	subscribeCommands(t, c, "dev1", 0)
	if err := h.b.Publish("devices/dev1/commands/a", []byte(`{}`), false, 0); err != nil {
		t.Fatal(err)
	}
	receive(t, c, "the message")
	if n := h.b.writers.Load(); n != 1 {
		t.Fatalf("%d writers after a message, want 1 (it idles for an hour)", n)
	}
	h.stop()
	if n := h.b.writers.Load(); n != 0 {
		t.Fatalf("%d writers after the broker stopped", n)
	}
	s := &session{}
	s.out.end()
	if !h.b.push(&s.out, &mqtt.Client{}, &packets.Packet{}) {
		t.Fatal("push to an ended connection reported a full outbox")
	}
	h.b.startWriteLoop(s, &mqtt.Client{})
	if n := h.b.writers.Load(); n != 0 {
		t.Fatalf("a writer started for an ended connection")
	}
}

// gaugeValue is the value of the gauge name in the broker's registry.
func gaugeValue(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
