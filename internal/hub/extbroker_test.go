package hub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/extbroker/mosquittotest"
)

// startExternalHub runs a hub in external-broker mode against mq (the
// embedded broker is not run), with the test types and extra config.
func startExternalHub(t testing.TB, mq *mosquittotest.Broker, extra string) *testHub {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf("data_dir: %s\nmqtt:\n  addr: \"\"\n  external: {url: %q, username: %s, password: %s}\nhttp:\n  addr: 127.0.0.1:0\n%s%s",
		dir, mq.URL, mosquittotest.HubUser, mosquittotest.HubPassword, testTypes, extra)
	th := startHubYAML(t, dir, yaml)
	if th.MQTTAddr() != "" {
		t.Errorf("embedded broker listens on %s in external-broker mode", th.MQTTAddr())
	}
	return th
}

// dialExternal connects a device to the external broker, waiting until
// Mosquitto has read its password file again.
func dialExternal(t *testing.T, mq *mosquittotest.Broker, c creds) *mqttClient {
	t.Helper()
	var mc *mqttClient
	eventually.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var err error
		mc, _, err = dial(t, mq.Addr, c.DeviceID, c.MQTTUsername, c.MQTTPassword)
		return err
	})
	return mc
}

// In external-broker mode a device on Mosquitto sends readings, gets a
// command the hub publishes there and answers it, gets its desired
// properties retained, and a message the hub refuses is answered on its
// errors topic: the whole device protocol through the external broker.
func TestExternalBrokerDeviceProtocol(t *testing.T) {
	mq := mosquittotest.Start(t, "")
	th := startExternalHub(t, mq, "ingest: {rate_limit: {rate: 0, burst: 0}}\n")
	c := th.provision(t, "ext-1", "WeatherStation")
	mq.AddDevices(t, map[string]string{c.MQTTUsername: c.MQTTPassword})
	dev := dialExternal(t, mq, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dev.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/ext-1/commands/+", QoS: 1},
		{Topic: "devices/ext-1/twin/desired", QoS: 1},
		{Topic: "devices/ext-1/errors", QoS: 1},
	}}); err != nil {
		t.Fatal(err)
	}

	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	// Readings: stored once each, through the shared subscription.
	for i := range 5 {
		if _, err := dev.Publish(ctx, &paho.Publish{Topic: "devices/ext-1/data", QoS: 1,
			Payload: fmt.Appendf(nil, `{"temperature":%d,"humidity":50,"msg_id":"m%d"}`, 20+i, i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually.True(t, 10*time.Second, "five readings stored", func() bool {
		n, err := th.Store().CountReadings(context.Background(), "ext-1")
		return err == nil && n == 5
	})
	// The device came online through its messages, on a transport that
	// says the hub does not hold its connection.
	if st := th.device(t, "ext-1"); st.Status != "online" {
		t.Errorf("device status %q, want online", st.Status)
	}
	eventually.True(t, 10*time.Second, "device_connected", func() bool { return len(rec.of(events.DeviceConnected, "ext-1")) > 0 })
	if c, ok := rec.of(events.DeviceConnected, "ext-1")[0].Args.(*events.Connected); !ok || c.Transport != "mqtt_external" {
		t.Errorf("device_connected args %+v, want transport mqtt_external", rec.of(events.DeviceConnected, "ext-1")[0].Args)
	}

	// A command through the API reaches the device on Mosquitto; its
	// result comes back the same way.
	var sent struct {
		Command struct {
			ID string `json:"id"`
		} `json:"command"`
	}
	if code := th.do(t, "POST", "/api/v1/devices/ext-1/commands", map[string]any{"command": "reboot"}, &sent); code != 201 && code != 202 {
		t.Fatalf("send command: status %d", code)
	}
	cmdTopic := "devices/ext-1/commands/" + sent.Command.ID
	eventually.True(t, 10*time.Second, "the command at the device", func() bool { return hasTopic(dev, cmdTopic) })
	if _, err := dev.Publish(ctx, &paho.Publish{Topic: cmdTopic + "/result", QoS: 1, Payload: []byte(`{"status":"succeeded","result":{"ok":true}}`)}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the command succeeded", func() bool {
		var out struct {
			Command struct {
				Status string `json:"status"`
			} `json:"command"`
		}
		th.do(t, "GET", "/api/v1/commands/"+sent.Command.ID, nil, &out)
		return out.Command.Status == "succeeded"
	})

	// Desired properties, published retained on Mosquitto.
	if code := th.do(t, "PATCH", "/api/v1/devices/ext-1/twin/desired", map[string]any{"patch": map[string]any{"interval": 30}, "version": 0}, nil); code/100 != 2 {
		t.Fatalf("patch desired: status %d", code)
	}
	eventually.True(t, 10*time.Second, "desired properties at the device", func() bool { return hasTopic(dev, "devices/ext-1/twin/desired") })

	// A refused reading is recorded, acknowledged (not redelivered for
	// ever) and answered on the device's errors topic.
	if _, err := dev.Publish(ctx, &paho.Publish{Topic: "devices/ext-1/data", QoS: 1, Payload: []byte(`{"temperature":500}`)}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the refusal at the device", func() bool { return hasTopic(dev, "devices/ext-1/errors") })

	// Retained: a later session of the device gets them from the broker.
	late := mqttRetained(t, mq, c, "devices/ext-1/twin/desired")
	if !strings.Contains(late, `"interval":30`) {
		t.Errorf("retained desired properties %q", late)
	}
}

func hasTopic(mc *mqttClient, topic string) bool {
	for _, p := range mc.received() {
		if p.Topic == topic {
			return true
		}
	}
	return false
}

// mqttRetained connects as the device again (another session: the
// broker's retained copy, not a live one) and returns the retained
// payload of topic.
func mqttRetained(t *testing.T, mq *mosquittotest.Broker, c creds, topic string) string {
	t.Helper()
	mc := dialExternal(t, mq, c) // takes over the device's session: it is the same device
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	var got string
	eventually.True(t, 10*time.Second, "the retained "+topic, func() bool {
		for _, p := range mc.received() {
			if p.Topic == topic && p.Retain {
				got = string(p.Payload)
				return true
			}
		}
		return false
	})
	return got
}
