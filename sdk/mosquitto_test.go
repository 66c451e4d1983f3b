package sdk_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/sdk"
)

// TestMosquitto runs the SDK against Mosquitto (DEVICEHUB_TEST_MQTT_URL):
// publish, subscribe (a command and its result) and reconnect, so that the
// SDK is not tied to the embedded broker.
func TestMosquitto(t *testing.T) {
	raw := os.Getenv("DEVICEHUB_TEST_MQTT_URL")
	if raw == "" {
		t.Skip("DEVICEHUB_TEST_MQTT_URL not set (e.g. mqtt://127.0.0.1:1883): skipping the Mosquitto test")
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("sdk-test-%d", time.Now().UnixNano())
	prefix := "devices/" + id + "/"

	// An observer sees what the device publishes.
	var mu sync.Mutex
	var seen []*paho.Publish
	obs := dialPaho(t, u.Host, id+"-observer", func(p *paho.Publish) {
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := obs.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: prefix + "data/#", QoS: 1}, {Topic: prefix + "commands/+/result", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	count := func(pred func(*paho.Publish) bool) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, p := range seen {
			if pred(p) {
				n++
			}
		}
		return n
	}

	c := startClient(t, sdk.Options{
		DB: filepath.Join(t.TempDir(), "device.db"), MQTTServer: raw, DisableBatching: true,
		Credentials: &sdk.Credentials{DeviceID: id, MQTTUsername: id, MQTTPassword: "unused"},
		OnCommand:   func(cmd sdk.Command) sdk.Result { return sdk.Result{Result: map[string]any{"got": cmd.Name}} },
	})
	s := c.StreamSender("env", sdk.WithCompression(sdk.Fastest))
	for n := range 10 {
		if _, err := s.Enqueue(fmt.Appendf(nil, `{"seq": %d}`, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitSent(ctx); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "10 readings at the observer", func() bool {
		return count(func(p *paho.Publish) bool { return p.Topic == prefix+"data/env" }) == 10
	})

	// Subscribe: a command reaches OnCommand and its result comes back.
	eventually.True(t, 10*time.Second, "command result", func() bool {
		obs.Publish(ctx, &paho.Publish{Topic: prefix + "commands/c1", QoS: 1, Payload: []byte(`{"command": "ping"}`)})
		return count(func(p *paho.Publish) bool {
			return p.Topic == prefix+"commands/c1/result" && strings.Contains(string(p.Payload), `"ping"`)
		}) > 0
	})

	// Reconnect: a session taking over the device's client id drops it.
	intruder := dialPaho(t, u.Host, id, nil)
	intruder.Disconnect(&paho.Disconnect{})
	eventually.True(t, 20*time.Second, "a reconnect", func() bool { st := c.Stats(); return st.Reconnects >= 1 && st.Connected })
	if _, err := s.Send(ctx, []byte(`{"seq": 10}`)); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the reading sent after the reconnect", func() bool {
		return count(func(p *paho.Publish) bool { return p.Topic == prefix+"data/env" }) >= 11
	})
}

func dialPaho(t *testing.T, addr, clientID string, fn func(*paho.Publish)) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho.ClientConfig{Conn: conn}
	if fn != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			fn(pr.Packet)
			return true, nil
		}}
	}
	cl := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Disconnect(&paho.Disconnect{})
		conn.Close()
	})
	return cl
}
