package extbroker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/extbroker"
	"github.com/devicehub/devicehub/internal/extbroker/mosquittotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// recorder is the test's Handler: it records what it was given, and can
// be told to fail.
type recorder struct {
	mu   sync.Mutex
	got  map[string][]string // device → payloads handled successfully, in order
	dups int                 // messages that came with the DUP flag
	fail func(m *extbroker.Message) error
}

func newRecorder() *recorder { return &recorder{got: map[string][]string{}} }

func (r *recorder) handle(_ context.Context, m *extbroker.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(m); err != nil {
			return err
		}
	}
	if m.Redelivered {
		r.dups++
	}
	r.got[m.DeviceID] = append(r.got[m.DeviceID], string(m.Payload))
	return nil
}

func (r *recorder) payloads(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got[id])
}

func (r *recorder) setFail(f func(m *extbroker.Message) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

// runClient runs a client until the returned stop is called (and at the
// end of the test).
func runClient(t *testing.T, b *mosquittotest.Broker, opts extbroker.Options, h extbroker.Handler) (*extbroker.Client, func()) {
	t.Helper()
	opts.URL = b.URL
	opts.Username, opts.Password = mosquittotest.HubUser, mosquittotest.HubPassword
	if opts.ClientID == "" {
		opts.ClientID = "devicehub-test"
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 200 * time.Millisecond
	}
	c, err := extbroker.New(opts, h, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not subscribed after 20s")
	}
	return c, stop
}

// device connects an MQTT v5 client as a device of the broker.
func device(t *testing.T, b *mosquittotest.Broker, id, password string, onPublish func(*paho.Publish)) *paho.Client {
	t.Helper()
	var cl *paho.Client
	eventually.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		conn, err := net.Dial("tcp", b.Addr)
		if err != nil {
			return err
		}
		cfg := paho.ClientConfig{Conn: conn}
		if onPublish != nil {
			cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				onPublish(pr.Packet)
				return true, nil
			}}
		}
		c := paho.NewClient(cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
			Username: id, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
		if err != nil {
			conn.Close()
			if ca != nil {
				return fmt.Errorf("connack %d", ca.ReasonCode) // the password file may not be reloaded yet
			}
			return err
		}
		cl = c
		return nil
	})
	t.Cleanup(func() { cl.Disconnect(&paho.Disconnect{}) })
	return cl
}

func publish(t *testing.T, cl *paho.Client, topic, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := cl.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	if pr.ReasonCode >= 0x80 {
		t.Fatalf("publish %s: reason code 0x%02x", topic, pr.ReasonCode)
	}
}

// Every device-to-hub topic reaches the handler with its device id, one
// device's messages in order; a topic outside the filters (a device's own
// hub-to-device topic) does not.
func TestTopicsAndOrder(t *testing.T) {
	b := mosquittotest.Start(t, "")
	b.AddDevices(t, map[string]string{"dev1": "pw-dev1", "dev2": "pw-dev2"})
	rec := newRecorder()
	runClient(t, b, extbroker.Options{Workers: 4}, rec.handle)
	d1 := device(t, b, "dev1", "pw-dev1", nil)
	d2 := device(t, b, "dev2", "pw-dev2", nil)

	topics := []string{"data", "data/engine", "data/chunks/c1/0/2", "data/engine/chunks/c1/1/2", "status", "heartbeat",
		"commands/c9/result", "twin/reported", "config/status", "firmware/status"}
	for i, tp := range topics {
		publish(t, d1, "devices/dev1/"+tp, fmt.Sprintf("%d", i))
	}
	publish(t, d1, "devices/dev1/commands/c9", "not for the hub") // hub-to-device: not subscribed
	const n = 200
	for i := range n {
		publish(t, d2, "devices/dev2/data", fmt.Sprintf("%d", i))
	}
	eventually.True(t, 20*time.Second, "every message handled", func() bool {
		return len(rec.payloads("dev1")) >= len(topics) && len(rec.payloads("dev2")) >= n
	})
	var want1, want2 []string
	for i := range topics {
		want1 = append(want1, fmt.Sprint(i))
	}
	for i := range n {
		want2 = append(want2, fmt.Sprint(i))
	}
	if got := rec.payloads("dev1"); !slices.Equal(got, want1) {
		t.Errorf("dev1 got %v, want %v", got, want1)
	}
	if got := rec.payloads("dev2"); !slices.Equal(got, want2) {
		t.Errorf("dev2: %d messages, not in order or not once each", len(got))
	}
}

// A message the handler could not store is tried again, in place, and
// the device's later messages wait for it.
func TestHandlerErrorIsRetried(t *testing.T) {
	b := mosquittotest.Start(t, "")
	b.AddDevices(t, map[string]string{"dev1": "pw-dev1"})
	rec := newRecorder()
	failures := 3
	rec.setFail(func(m *extbroker.Message) error {
		if string(m.Payload) == "1" && failures > 0 {
			failures--
			return errors.New("store unavailable")
		}
		return nil
	})
	runClient(t, b, extbroker.Options{RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond}, rec.handle)
	d := device(t, b, "dev1", "pw-dev1", nil)
	for i := range 3 {
		publish(t, d, "devices/dev1/data", fmt.Sprint(i))
	}
	eventually.True(t, 10*time.Second, "three messages handled", func() bool { return len(rec.payloads("dev1")) == 3 })
	if got := rec.payloads("dev1"); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("got %v", got)
	}
}

// What the node had not acknowledged when it stopped, and what devices
// published while it was away, comes when its session reconnects: the
// broker's PUBACK to the device is not the hub's, and the persistent
// session plus acknowledgements after the handler close the gap.
func TestUnacknowledgedComeAgainAfterRestart(t *testing.T) {
	b := mosquittotest.Start(t, "")
	b.AddDevices(t, map[string]string{"dev1": "pw-dev1"})
	rec := newRecorder()
	rec.setFail(func(m *extbroker.Message) error {
		if string(m.Payload) == "stuck" {
			return errors.New("store unavailable")
		}
		return nil
	})
	opts := extbroker.Options{ClientID: "node-restart", RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond}
	_, stop := runClient(t, b, opts, rec.handle)
	d := device(t, b, "dev1", "pw-dev1", nil)
	publish(t, d, "devices/dev1/data", "a")
	eventually.True(t, 10*time.Second, "a handled", func() bool { return len(rec.payloads("dev1")) == 1 })
	publish(t, d, "devices/dev1/data", "stuck")
	stop() // "stuck" never acknowledged
	for _, p := range []string{"b", "c"} {
		publish(t, d, "devices/dev1/data", p) // the broker acknowledges: queued for the node's session
	}
	rec.setFail(nil)
	runClient(t, b, opts, rec.handle)
	eventually.True(t, 10*time.Second, "all handled", func() bool { return len(rec.payloads("dev1")) == 4 })
	if got := rec.payloads("dev1"); !slices.Equal(got, []string{"a", "stuck", "b", "c"}) {
		t.Errorf("got %v, want [a stuck b c]", got)
	}
	rec.mu.Lock()
	dups := rec.dups
	rec.mu.Unlock()
	if dups != 1 {
		t.Errorf("%d messages came flagged DUP, want 1 (stuck)", dups)
	}
}

// Publish reaches a subscribed device, and a QoS 1 message to a device is
// reported delivered once the broker acknowledged it.
func TestPublishToDevice(t *testing.T) {
	b := mosquittotest.Start(t, "")
	b.AddDevices(t, map[string]string{"dev1": "pw-dev1"})
	delivered := make(chan string, 1)
	c, _ := runClient(t, b, extbroker.Options{Delivered: func(id, topic string) { delivered <- id + " " + topic }}, newRecorder().handle)
	got := make(chan string, 1)
	d := device(t, b, "dev1", "pw-dev1", func(p *paho.Publish) { got <- p.Topic + " " + string(p.Payload) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/commands/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish("devices/dev1/commands/c1", []byte(`{"command":"reboot"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != `devices/dev1/commands/c1 {"command":"reboot"}` {
			t.Errorf("device got %q", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("device got nothing")
	}
	select {
	case g := <-delivered:
		if g != "dev1 devices/dev1/commands/c1" {
			t.Errorf("delivered %q", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not reported delivered")
	}
}

// A backlog larger than the receive maximum, queued by the broker while
// the node was away, is taken in after the reconnect, and the node's
// subscription (renewed at each connection) is granted meanwhile.
func TestBacklogAfterRestart(t *testing.T) {
	b := mosquittotest.Start(t, "")
	b.AddDevices(t, map[string]string{"dev1": "pw-dev1"})
	rec := newRecorder()
	opts := extbroker.Options{ClientID: "node-backlog", ReceiveMaximum: 64, Workers: 4}
	_, stop := runClient(t, b, opts, rec.handle)
	stop()
	d := device(t, b, "dev1", "pw-dev1", nil)
	const n = 3000
	for i := range n {
		publish(t, d, "devices/dev1/data", fmt.Sprint(i))
	}
	runClient(t, b, opts, rec.handle)
	eventually.True(t, 30*time.Second, "the backlog handled", func() bool { return len(rec.payloads("dev1")) >= n })
	if got := rec.payloads("dev1"); len(got) != n || got[0] != "0" || got[n-1] != fmt.Sprint(n-1) {
		t.Errorf("got %d messages", len(got))
	}
}

// Two nodes share the subscription; one stops (its session stays) while
// devices publish. Every message is handled once by one of them, but
// only after the stopped node is back for the share Mosquitto 2.0 keeps
// queued for its session: Mosquitto does not hand them to the live
// member (docs/CLUSTER.md, "Redistribution gaps"). The test logs how
// many waited.
func TestSharedSubscriptionStoppedMember(t *testing.T) {
	b := mosquittotest.Start(t, "")
	b.AddDevices(t, map[string]string{"dev1": "pw-dev1"})
	recA, recB := newRecorder(), newRecorder()
	optsA := extbroker.Options{ClientID: "node-a"}
	_, stopA := runClient(t, b, optsA, recA.handle)
	runClient(t, b, extbroker.Options{ClientID: "node-b"}, recB.handle)
	stopA()
	d := device(t, b, "dev1", "pw-dev1", nil)
	const n = 100
	for i := range n {
		publish(t, d, "devices/dev1/data", fmt.Sprint(i))
	}
	// B takes what the broker gives it; wait until that stops growing
	// is a guess, so wait for A instead and count afterwards.
	beforeA := len(recB.payloads("dev1"))
	runClient(t, b, optsA, recA.handle)
	eventually.True(t, 20*time.Second, "every message handled", func() bool {
		return len(recA.payloads("dev1"))+len(recB.payloads("dev1")) >= n
	})
	seen := map[string]int{}
	for _, p := range append(recA.payloads("dev1"), recB.payloads("dev1")...) {
		seen[p]++
	}
	for i := range n {
		if seen[fmt.Sprint(i)] != 1 {
			t.Errorf("message %d handled %d times", i, seen[fmt.Sprint(i)])
		}
	}
	t.Logf("of %d messages published while node A was away, node B had taken %d before A came back; A took %d after", n, beforeA, len(recA.payloads("dev1")))
}
