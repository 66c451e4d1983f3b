package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/sdk"
)

// TestOfflineStartThenHubStarts: a device with credentials starts while the
// hub is down, enqueues 1,000 readings on two streams; once the hub is up,
// all arrive, once each, in order per stream.
func TestOfflineStartThenHubStarts(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	th := startHub(t, dir, addr)
	creds := provision(t, th.api, "offline")
	th.stop()

	c := startClient(t, sdk.Options{DB: filepath.Join(t.TempDir(), "device.db"), MQTTServer: "mqtt://" + addr, Credentials: creds})
	streams := []*sdk.StreamSender{c.StreamSender("a"), c.StreamSender("b")}
	for n := range 1000 {
		if _, err := streams[n%2].Enqueue(fmt.Appendf(nil, `{"seq": %d, "temperature": 20.5}`, n), sdk.MessageID("m-"+strconv.Itoa(n))); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.PendingMessages(); got != 1000 {
		t.Fatalf("pending = %d, want 1000", got)
	}

	th = startHub(t, dir, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitSent(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.PendingMessages(); got != 0 {
		t.Fatalf("pending = %d after WaitSent", got)
	}
	msgs := storedMessages(t, th.Store(), "offline")
	next := map[string]int{"devices/offline/data/a": 0, "devices/offline/data/b": 1}
	for _, m := range msgs {
		want, ok := next[m.Topic]
		if !ok || !m.Accepted {
			continue
		}
		if m.MsgID != "m-"+strconv.Itoa(want) {
			t.Fatalf("%s: got %s, want m-%d", m.Topic, m.MsgID, want)
		}
		next[m.Topic] = want + 2
	}
	if next["devices/offline/data/a"] != 1000 || next["devices/offline/data/b"] != 1001 {
		t.Fatalf("stored up to %v, want 1000 readings", next)
	}
	if n, _ := th.Store().CountReadings(ctx, "offline"); n != 1000 {
		t.Fatalf("%d readings stored, want 1000", n)
	}
}

// TestSendCompressionChunking sends plain, compressed, batched and chunked
// messages to a real hub and waits for each acknowledgement.
func TestSendCompressionChunking(t *testing.T) {
	th := startHub(t, "", "")
	creds := provision(t, th.api, "dev1")
	var mu sync.Mutex
	var bg []error
	c := startClient(t, sdk.Options{
		DB: filepath.Join(t.TempDir(), "device.db"), MQTTServer: "mqtt://" + th.MQTTAddr(), Credentials: creds,
		ChunkSize: 8 << 10,
		OnError: func(err error) {
			mu.Lock()
			bg = append(bg, err)
			mu.Unlock()
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	blob := strings.Repeat("abcdefgh", 8<<10) // 64 KiB, compresses well

	tests := []struct {
		name    string
		sender  *sdk.StreamSender
		payload string
		kind    sdk.Kind // of the expected error; KindOther for none
	}{
		{"plain", c.StreamSender(""), `{"seq": 1, "temperature": 1.5}`, -1},
		{"zstd", c.StreamSender("z", sdk.WithCompression(sdk.Fastest)), `{"seq": 2, "blob": "` + blob + `"}`, -1},
		{"gzip", c.StreamSender("g", sdk.WithCompression(sdk.Gzip)), `{"seq": 3, "blob": "` + blob + `"}`, -1},
		{"chunked", c.StreamSender("c"), `{"seq": 4, "blob": "` + blob + `"}`, -1},
		{"chunked and compressed", c.StreamSender("cz", sdk.WithCompression(sdk.SmallestSize)),
			`{"seq": 5, "blob": "` + randomText(200<<10) + `"}`, -1},
		{"batch", c.StreamSender("batch"), `[{"seq": 6}, {"seq": 7}, {"seq": 8}]`, -1},
		{"refused by the hub", c.StreamSender(""), `{"seq": "not a number"}`, sdk.KindInvalidPayload},
		{"not JSON", c.StreamSender(""), `{"seq": `, sdk.KindInvalidPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.sender.Send(ctx, []byte(tt.payload))
			if tt.kind >= 0 {
				if sdk.KindOf(err) != tt.kind {
					t.Fatalf("err = %v, want kind %s", err, tt.kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, m := range storedMessages(t, th.Store(), "dev1") {
				if m.MsgID == id && m.Accepted {
					found = true
					if strings.Contains(tt.payload, blob) && !strings.Contains(string(m.Payload), blob) {
						t.Errorf("stored payload is not the decoded message")
					}
				}
			}
			if !found {
				t.Fatalf("msg_id %s not stored", id)
			}
		})
	}
	if _, err := c.StreamSender("").EnqueueBatch([]map[string]any{{"seq": 9}, {"seq": 10}}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSent(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := th.Store().CountReadings(ctx, "dev1"); n != 10 {
		t.Errorf("%d readings stored, want 10", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bg) != 1 || sdk.KindOf(bg[0]) != sdk.KindInvalidPayload {
		t.Errorf("background errors %v, want the one refusal", bg)
	}
}

func randomText(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	seed := uint32(1)
	for b.Len() < n {
		seed = seed*1664525 + 1013904223
		b.WriteByte(letters[seed>>24%uint32(len(letters))])
	}
	return b.String()
}

// TestRevokedCredentials: once the hub refuses the device's credentials,
// the client stops sending and says so, and a restart without a
// provisioning token reports it too.
func TestRevokedCredentials(t *testing.T) {
	th := startHub(t, "", "")
	creds := provision(t, th.api, "rev")
	db := filepath.Join(t.TempDir(), "device.db")
	var mu sync.Mutex
	var bg []error
	c := startClient(t, sdk.Options{DB: db, MQTTServer: "mqtt://" + th.MQTTAddr(), Credentials: creds, OnError: func(err error) {
		mu.Lock()
		bg = append(bg, err)
		mu.Unlock()
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.StreamSender("").Send(ctx, []byte(`{"seq": 1}`)); err != nil {
		t.Fatal(err)
	}
	// New credentials for the device: the old ones stop working.
	if _, err := th.api.ProvisionDevice(ctx, client.ProvisionRequest{ID: "rev", Type: "Meter", Replace: true}); err != nil {
		t.Fatal(err)
	}
	th.Broker().Kick("rev", "test: credentials replaced")
	eventually.True(t, 10*time.Second, "the client to stop", func() bool { return c.Err() != nil })
	if k := sdk.KindOf(c.Err()); k != sdk.KindCredentialsRevoked {
		t.Fatalf("Err() = %v, want credentials_revoked", c.Err())
	}
	if _, err := c.StreamSender("").Enqueue([]byte(`{"seq": 2}`)); sdk.KindOf(err) != sdk.KindCredentialsRevoked {
		t.Fatalf("enqueue after revocation: %v", err)
	}
	// OnError is called from the client's goroutine, possibly just after
	// Err() is set.
	eventually.True(t, 10*time.Second, "OnError", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(bg) > 0
	})
	mu.Lock()
	if sdk.KindOf(bg[0]) != sdk.KindCredentialsRevoked {
		t.Errorf("OnError got %v", bg)
	}
	mu.Unlock()
	c.Close()
	_, err := sdk.Start(ctx, sdk.Options{DB: db, MQTTServer: "mqtt://" + th.MQTTAddr(), Logger: testLogger()})
	if !errors.Is(err, &sdk.Error{Kind: sdk.KindCredentialsRevoked}) {
		t.Fatalf("restart: %v, want credentials_revoked", err)
	}
}

// TestCommandsAndTwinBroker: commands and desired properties published
// straight through the hub's broker (bypassing its command and twin
// services, to choose versions and redeliveries) reach the callbacks;
// results and reported properties go back through the outbox. The command
// service does not know these command ids, so it refuses their results
// with unknown_command, but the audit log shows they were sent.
// TestE2ECommandsAndTwin goes through the services.
func TestCommandsAndTwinBroker(t *testing.T) {
	th := startHub(t, "", "")
	creds := provision(t, th.api, "tw")
	db := filepath.Join(t.TempDir(), "device.db")
	// Retained before the device connects.
	if err := th.Broker().Publish("devices/tw/twin/desired", []byte(`{"version": 3, "values": {"interval": 10}}`), true, 1); err != nil {
		t.Fatal(err)
	}
	desired := make(chan sdk.DesiredProperties, 10)
	cmds := make(chan sdk.Command, 10)
	c := startClient(t, sdk.Options{
		DB: db, MQTTServer: "mqtt://" + th.MQTTAddr(), Credentials: creds,
		OnDesiredProperties: func(d sdk.DesiredProperties) { desired <- d },
		OnCommand: func(cmd sdk.Command) sdk.Result {
			cmds <- cmd
			return sdk.Result{Status: "succeeded", Result: map[string]any{"rebooted": true}}
		},
	})
	recv := func(what string) any {
		select {
		case d := <-desired:
			return d
		case cmd := <-cmds:
			return cmd
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s within 10s", what)
			return nil
		}
	}
	if d, ok := recv("desired properties").(sdk.DesiredProperties); !ok || d.Version != 3 || d.Values["interval"] != 10.0 {
		t.Fatalf("desired = %+v", d)
	}
	eventually.True(t, 10*time.Second, "subscription", func() bool { return c.Stats().Connected })
	// Newer, older: only the newer is delivered.
	eventually.True(t, 10*time.Second, "version 4", func() bool {
		th.Broker().Publish("devices/tw/twin/desired", []byte(`{"version": 4, "values": {"interval": 20}}`), true, 1)
		_, ok := c.DesiredPropertiesIfNewer(3)
		return ok
	})
	if d, ok := recv("desired properties v4").(sdk.DesiredProperties); !ok || d.Version != 4 {
		t.Fatalf("desired = %+v", d)
	}
	th.Broker().Publish("devices/tw/twin/desired", []byte(`{"version": 2, "values": {}}`), true, 1)
	if got := c.DesiredProperties(); got.Version != 4 || got.Values["interval"] != 20.0 {
		t.Fatalf("DesiredProperties() = %+v", got)
	}
	if _, ok := c.DesiredPropertiesIfNewer(4); ok {
		t.Fatal("DesiredPropertiesIfNewer(4) returned something")
	}

	if err := th.Broker().Publish("devices/tw/commands/c1", []byte(`{"command": "reboot", "payload": {"delay": 1}}`), false, 1); err != nil {
		t.Fatal(err)
	}
	if cmd, ok := recv("command").(sdk.Command); !ok || cmd.ID != "c1" || cmd.Name != "reboot" || string(cmd.Payload) != `{"delay":1}` {
		t.Fatalf("command = %+v", cmd)
	}
	if err := c.UpdateReportedProperties(map[string]any{"interval": 20}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitSent(ctx); err != nil {
		t.Fatal(err)
	}
	if c.PendingReportedProperties() {
		t.Fatal("reported properties still pending")
	}
	// The result enters the outbox once OnCommand returned, which may be
	// after WaitSent looked: poll the hub's audit log.
	var result, reported bool
	sent := func() bool {
		for _, m := range storedMessages(t, th.Store(), "tw") {
			switch m.Topic {
			case "devices/tw/commands/c1/result":
				var body map[string]any
				json.Unmarshal(m.Payload, &body)
				result = body["status"] == "succeeded"
			case "devices/tw/twin/reported":
				reported = strings.Contains(string(m.Payload), `"interval":20`)
			}
		}
		return result && reported
	}
	eventually.True(t, 10*time.Second, "the result and the reported properties in the hub's audit log", sent)
	// The same command again (a redelivery) is not handled twice.
	th.Broker().Publish("devices/tw/commands/c1", []byte(`{"command": "reboot"}`), false, 1)
	th.Broker().Publish("devices/tw/commands/c2", []byte(`{"command": "ping"}`), false, 1)
	if cmd, ok := recv("command c2").(sdk.Command); !ok || cmd.ID != "c2" {
		t.Fatalf("command = %+v, want c2", cmd)
	}
}

// TestCommandBurst: the client announces a Receive Maximum (paho sizes
// its queue of incoming PUBLISHes by it: 512 KiB a client without one);
// a burst of commands three times as large reaches the device whole, each
// command once, the hub holding back what exceeds it until the device's
// PUBACKs free slots.
func TestCommandBurst(t *testing.T) {
	const burst = 96
	th := startHub(t, "", "")
	creds := provision(t, th.api, "burst")
	// A retained message delivered means the subscriptions are in place.
	if err := th.Broker().Publish("devices/burst/twin/desired", []byte(`{"version": 1, "values": {}}`), true, 1); err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	handled := map[string]int{}
	all := make(chan struct{})
	startClient(t, sdk.Options{
		DB: filepath.Join(t.TempDir(), "device.db"), MQTTServer: "mqtt://" + th.MQTTAddr(), Credentials: creds,
		OnDesiredProperties: func(sdk.DesiredProperties) { once.Do(func() { close(subscribed) }) },
		OnCommand: func(cmd sdk.Command) sdk.Result {
			mu.Lock()
			defer mu.Unlock()
			handled[cmd.ID]++
			if len(handled) == burst {
				close(all)
			}
			return sdk.Result{Status: "succeeded"}
		},
	})
	select {
	case <-subscribed:
	case <-time.After(20 * time.Second):
		t.Fatal("the retained desired properties did not arrive within 20s")
	}
	for i := range burst {
		if err := th.Broker().Publish(fmt.Sprintf("devices/burst/commands/c%03d", i), []byte(`{"command": "ping"}`), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d commands handled within 30s", len(handled), burst)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range handled {
		if n != 1 {
			t.Errorf("command %s handled %d times", id, n)
		}
	}
}

// TestClientHeap: a connected client keeps little heap. Without a
// Receive Maximum in its CONNECT, paho's queue of incoming PUBLISHes
// alone took 512 KiB a client (65,535 pointers): a gateway running a
// client per child device paid that for each.
func TestClientHeap(t *testing.T) {
	const clients = 10
	th := startHub(t, "", "")
	creds := make([]*sdk.Credentials, clients)
	for i := range creds {
		creds[i] = provision(t, th.api, fmt.Sprintf("heap%02d", i))
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	cs := make([]*sdk.Client, clients)
	for i := range cs {
		cs[i] = startClient(t, sdk.Options{DB: filepath.Join(t.TempDir(), "device.db"),
			MQTTServer: "mqtt://" + th.MQTTAddr(), Credentials: creds[i]})
	}
	for _, c := range cs {
		eventually.True(t, 20*time.Second, "connected", func() bool { return c.Stats().Connected })
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := (int64(ms.HeapAlloc) - int64(before)) / clients
	// The process holds the hub's side of each connection too.
	if per > 256<<10 {
		t.Errorf("each connected client keeps %d KiB of heap (client and hub), want at most 256", per>>10)
	}
	t.Logf("%d B of heap per connected client", per)
}
