package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/eventually"
)

// commandDevice is a real MQTT v5 client (paho) acting as a device that
// receives commands. With manualAck, it acknowledges a publish only when
// the test says so.
type commandDevice struct {
	*paho.Client
	mu   sync.Mutex
	got  []*paho.Publish
	note chan struct{}
}

func dialCommandDevice(t *testing.T, th *testHub, id string, c creds, manualAck bool) *commandDevice {
	t.Helper()
	conn, err := net.Dial("tcp", th.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	d := &commandDevice{note: make(chan struct{}, 1000)}
	d.Client = paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: manualAck,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			d.mu.Lock()
			d.got = append(d.got, pr.Packet)
			d.mu.Unlock()
			select {
			case d.note <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Username: c.MQTTUsername, UsernameFlag: true, Password: []byte(c.MQTTPassword), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return d
}

func (d *commandDevice) subscribe(t *testing.T, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
}

func (d *commandDevice) received() []*paho.Publish {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*paho.Publish(nil), d.got...)
}

// answer publishes the device's result of a command and reports whether
// the hub acknowledged it with success.
func (d *commandDevice) answer(t *testing.T, id, status string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := d.Publish(ctx, &paho.Publish{Topic: "devices/" + d.ClientID() + "/commands/" + id + "/result", QoS: 1,
		Payload: []byte(fmt.Sprintf(`{"status":%q,"result":{"by":"test"}}`, status))})
	return err == nil && r != nil && r.ReasonCode < 0x80
}

func (d *commandDevice) ClientID() string { return d.Client.ClientID() }

type apiCommand struct {
	ID          string     `json:"id"`
	Status      string     `json:"status"`
	Sends       int        `json:"sends"`
	Resends     int        `json:"resends"`
	FirstSentAt *time.Time `json:"first_sent_at"`
	SentAt      *time.Time `json:"sent_at"`
	DeliveredAt *time.Time `json:"delivered_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	Result      any        `json:"result"`
}

func (th *testHub) sendCommand(t *testing.T, dev, query string, body map[string]any) (int, apiCommand) {
	t.Helper()
	var out struct {
		Command apiCommand `json:"command"`
	}
	code := th.do(t, "POST", "/api/v1/devices/"+dev+"/commands"+query, body, &out)
	return code, out.Command
}

func (th *testHub) command(t *testing.T, id string) apiCommand {
	t.Helper()
	var out struct {
		Command apiCommand `json:"command"`
	}
	if code := th.do(t, "GET", "/api/v1/commands/"+id, nil, &out); code != 200 {
		t.Fatalf("get command %s: %d", id, code)
	}
	return out.Command
}

const fastResend = "commands:\n  connect_delay: 100ms\n  resend_interval: 2s\n"

// TestE2ECommandsOldestFirst: six commands queued for an offline device
// arrive oldest first once it connects.
func TestE2ECommandsOldestFirst(t *testing.T) {
	th := startHub(t, fastResend)
	c := th.provision(t, "ws-order", "WeatherStation")
	var want []string
	for i := range 6 {
		code, cmd := th.sendCommand(t, "ws-order", "", map[string]any{"command": "set_interval", "payload": map[string]any{"n": i}})
		if code != 201 || cmd.Status != "queued" {
			t.Fatalf("send %d: %d %+v", i, code, cmd)
		}
		want = append(want, "devices/ws-order/commands/"+cmd.ID)
	}
	d := dialCommandDevice(t, th, "ws-order", c, false)
	d.subscribe(t, "devices/ws-order/commands/+")
	var got []string
	eventually.True(t, 20*time.Second, "six commands", func() bool {
		got = got[:0]
		seen := map[string]bool{}
		for _, p := range d.received() {
			if !seen[p.Topic] { // a resend may repeat one: the first arrival counts
				seen[p.Topic] = true
				got = append(got, p.Topic)
			}
		}
		return len(got) >= 6
	})
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("arrival order\n got %v\nwant %v", got, want)
	}
	for _, topic := range want {
		id := topic[strings.LastIndex(topic, "/")+1:]
		eventually.True(t, 10*time.Second, "delivered "+id, func() bool { return th.command(t, id).Status == "delivered" })
	}
}

// TestE2EDeliveredOnlyAfterPuback: a connected device that never
// subscribes keeps its command sent (resent, never delivered); a device
// that holds its PUBACK keeps it sent until it acknowledges.
func TestE2EDeliveredOnlyAfterPuback(t *testing.T) {
	th := startHub(t, fastResend)
	deaf := th.provision(t, "ws-deaf", "WeatherStation")
	slow := th.provision(t, "ws-slow", "WeatherStation")

	dd := dialCommandDevice(t, th, "ws-deaf", deaf, false)
	eventually.True(t, 10*time.Second, "ws-deaf online", func() bool { return th.device(t, "ws-deaf").Connected })
	_, cmd := th.sendCommand(t, "ws-deaf", "", map[string]any{"command": "reboot"})
	eventually.True(t, 20*time.Second, "a resend", func() bool {
		c := th.command(t, cmd.ID)
		return c.Resends >= 1
	})
	if c := th.command(t, cmd.ID); c.Status != "sent" || c.DeliveredAt != nil || len(dd.received()) != 0 {
		t.Fatalf("deaf device: %+v, received %d", c, len(dd.received()))
	}

	sd := dialCommandDevice(t, th, "ws-slow", slow, true)
	sd.subscribe(t, "devices/ws-slow/commands/+")
	eventually.True(t, 10*time.Second, "ws-slow online", func() bool { return th.device(t, "ws-slow").Connected })
	_, cmd = th.sendCommand(t, "ws-slow", "", map[string]any{"command": "reboot"})
	eventually.True(t, 10*time.Second, "the publish", func() bool { return len(sd.received()) > 0 })
	// The device has the message but has not acknowledged it. The hub
	// records a delivery only after the PUBACK: the device's own QoS 1
	// publish (which the hub acknowledges) must not count as one.
	if _, err := publish(t, &mqttClient{Client: sd.Client}, "devices/ws-slow/heartbeat", `{"battery":90}`); err != nil {
		t.Fatal(err)
	}
	if c := th.command(t, cmd.ID); c.Status != "sent" || c.DeliveredAt != nil {
		t.Fatalf("before the PUBACK: %+v", c)
	}
	if err := sd.Ack(sd.received()[0]); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "delivered", func() bool { return th.command(t, cmd.ID).Status == "delivered" })
	c := th.command(t, cmd.ID)
	if c.DeliveredAt == nil || c.FirstSentAt == nil || c.DeliveredAt.Before(*c.FirstSentAt) {
		t.Fatalf("delivered %+v", c)
	}
}

// TestE2ECommandWait: ?wait= answers with the success, the failure, or
// the state when the wait ran out (202, not an error); an unknown query
// parameter is refused; a command is canceled; a result after the
// expiry is refused and recorded as refused.
func TestE2ECommandWait(t *testing.T) {
	th := startHub(t, fastResend)
	c := th.provision(t, "ws-wait", "WeatherStation")
	d := dialCommandDevice(t, th, "ws-wait", c, false)
	d.subscribe(t, "devices/ws-wait/commands/+")
	eventually.True(t, 10*time.Second, "online", func() bool { return th.device(t, "ws-wait").Connected })

	// The device answers reboot with succeeded, set_interval with failed,
	// and ignores commands with {"ignore": true}.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		answered := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.note:
			}
			for _, p := range d.received() {
				id := p.Topic[strings.LastIndex(p.Topic, "/")+1:]
				if answered[id] {
					continue
				}
				answered[id] = true
				var m struct {
					Command string `json:"command"`
					Payload struct {
						Ignore bool `json:"ignore"`
					} `json:"payload"`
				}
				_ = json.Unmarshal(p.Payload, &m)
				st := map[string]string{"reboot": "succeeded", "set_interval": "failed"}[m.Command]
				if st == "" || m.Payload.Ignore {
					continue
				}
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				_, _ = d.Publish(pctx, &paho.Publish{Topic: "devices/ws-wait/commands/" + id + "/result", QoS: 1,
					Payload: []byte(fmt.Sprintf(`{"status":%q}`, st))})
				pcancel()
			}
		}
	}()

	ignore := map[string]any{"ignore": true}
	tests := []struct {
		name, command, query string
		payload              any
		wantCode             int
		wantStatus           []string
	}{
		{"success", "reboot", "?wait=20s", nil, 201, []string{"succeeded"}},
		{"failure", "set_interval", "?wait=20s", nil, 201, []string{"failed"}},
		// Whether the PUBACK came back within the wait depends on the
		// machine: either unfinished state is right.
		{"timeout", "reboot", "?wait=300ms", ignore, 202, []string{"sent", "delivered"}},
	}
	var succeeded string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, cmd := th.sendCommand(t, "ws-wait", tt.query, map[string]any{"command": tt.command, "payload": tt.payload})
			if tt.name == "success" {
				succeeded = cmd.ID
			}
			if code != tt.wantCode || !slices.Contains(tt.wantStatus, cmd.Status) {
				t.Fatalf("%d %+v, want %d %v", code, cmd, tt.wantCode, tt.wantStatus)
			}
			if tt.wantCode == 201 && cmd.FinishedAt == nil {
				t.Fatalf("finished %+v", cmd)
			}
		})
	}

	var e struct {
		Error struct {
			Code  string `json:"code"`
			Field string `json:"field"`
		} `json:"error"`
	}
	if code := th.do(t, "POST", "/api/v1/devices/ws-wait/commands?wiat=10s", map[string]any{"command": "reboot"}, &e); code != 400 ||
		e.Error.Code != "unknown_parameter" || e.Error.Field != "wiat" {
		t.Fatalf("unknown parameter: %d %+v", code, e)
	}
	// ?wait= stays below the HTTP write timeout: more is refused, naming
	// the bound, and nothing is sent.
	if api.MaxWait >= config.MinWriteTimeout {
		t.Fatalf("api.MaxWait %s is not below config.MinWriteTimeout %s", api.MaxWait, config.MinWriteTimeout)
	}
	for _, q := range []string{"51s", "1m", "-1s", "soon"} {
		e.Error.Code, e.Error.Field = "", ""
		if code := th.do(t, "POST", "/api/v1/devices/ws-wait/commands?wait="+q, map[string]any{"command": "reboot"}, &e); code != 400 ||
			e.Error.Field != "wait" {
			t.Fatalf("wait=%s: %d %+v", q, code, e)
		}
	}
	if code := th.do(t, "GET", "/api/v1/commands/"+succeeded+"?wait=51s", nil, &e); code != 400 || e.Error.Field != "wait" {
		t.Fatalf("get wait=51s: %d %+v", code, e)
	}

	// Cancel a command the device ignores; a second cancel is refused.
	_, cmd := th.sendCommand(t, "ws-wait", "", map[string]any{"command": "reboot", "payload": ignore})
	var out struct {
		Command apiCommand `json:"command"`
	}
	if code := th.do(t, "POST", "/api/v1/commands/"+cmd.ID+"/cancel", nil, &out); code != 200 || out.Command.Status != "canceled" || out.Command.FinishedAt == nil {
		t.Fatalf("cancel: %d %+v", code, out)
	}
	if code := th.do(t, "POST", "/api/v1/commands/"+cmd.ID+"/cancel", nil, &e); code != http.StatusConflict || e.Error.Code != "command_finished" {
		t.Fatalf("cancel again: %d %+v", code, e)
	}
	// The device's late answer is refused (PUBACK reason 0x99 with MQTT
	// v5) and recorded in the message log as refused.
	if d.answer(t, cmd.ID, "succeeded") {
		t.Fatal("late answer acknowledged")
	}
	if c := th.command(t, cmd.ID); c.Status != "canceled" {
		t.Fatalf("after the late answer: %+v", c)
	}
	// The same answer again is acknowledged and recorded as a duplicate.
	if !d.answer(t, succeeded, "succeeded") {
		t.Fatal("repeated answer refused")
	}
	var msgs struct {
		Messages []struct {
			Topic    string `json:"topic"`
			Accepted bool   `json:"accepted"`
			Code     string `json:"code"`
		} `json:"messages"`
	}
	th.do(t, "GET", "/api/v1/devices/ws-wait/messages", nil, &msgs)
	refused, dup := false, false
	for _, m := range msgs.Messages {
		refused = refused || strings.Contains(m.Topic, cmd.ID) && !m.Accepted && m.Code == "command_finished"
		dup = dup || strings.Contains(m.Topic, succeeded) && m.Accepted && m.Code == "duplicate"
	}
	if !refused || !dup {
		t.Fatalf("message log: refused answer %v, duplicate %v: %+v", refused, dup, msgs)
	}
}

// TestE2EEventsFrom: from is the last event the client has, over the real
// event log: from=0 replays the first event, from=1 starts at the second.
func TestE2EEventsFrom(t *testing.T) {
	th := startHub(t, "")
	th.provision(t, "ev-1", "WeatherStation")
	th.provision(t, "ev-2", "WeatherStation")
	for _, tt := range []struct{ from, first string }{{"0", "1"}, {"1", "2"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", th.base+"/api/v1/events?from="+tt.from, nil)
		req.Header.Set("Authorization", "Bearer "+th.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 0, 4096)
		first := ""
		for first == "" {
			b := make([]byte, 1024)
			n, err := resp.Body.Read(b)
			buf = append(buf, b[:n]...)
			for _, line := range strings.Split(string(buf), "\n") {
				if id, ok := strings.CutPrefix(line, "id: "); ok && first == "" && strings.Contains(string(buf), "id: "+id+"\n") {
					first = id
				}
			}
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		cancel()
		if first != tt.first {
			t.Errorf("from=%s: first event id %q, want %s", tt.from, first, tt.first)
		}
	}
}
