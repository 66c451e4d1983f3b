package devicehub_test

import (
	"context"
	"net"
	rtmetrics "runtime/metrics"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub"
	"github.com/devicehub/devicehub/events"
)

// TestEmbed is what a Go program embedding the hub does: declare a type in
// code, subscribe to its signals filtered by device type, provision a device
// and receive its readings after they are stored.
func TestEmbed(t *testing.T) {
	cfg := devicehub.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Runtime.GCPercent, cfg.Runtime.MemoryLimitMB = 123, 456 // the binary's settings: not the host's
	gcBefore := gcSettings()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hub, err := devicehub.New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := -40.0, 85.0
	if err := hub.RegisterType(devicehub.DeviceType{
		Name:   "Thermometer",
		Fields: map[string]devicehub.Field{"temperature": {Type: devicehub.Float, Min: &lo, Max: &hi}},
	}); err != nil {
		t.Fatal(err)
	}
	got := make(chan events.Event, 10)
	sub, err := hub.Subscribe(events.Filter{Types: []events.Type{events.DeviceDataReceived}, DeviceTypes: []string{"Thermometer"}},
		func(e events.Event) { got <- e })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-hub.Ready():
	case err := <-done:
		t.Fatalf("hub stopped: %v", err)
	}
	if got := gcSettings(); got != gcBefore {
		t.Errorf("the embedded hub changed the host's GC settings (GOGC, memory limit) from %v to %v", gcBefore, got)
	}

	cr, err := hub.Provision(ctx, "t1", "Thermometer")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", hub.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "t1", KeepAlive: 30, CleanStart: true,
		Username: cr.MQTTUsername, UsernameFlag: true, Password: []byte(cr.MQTTPassword), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "devices/t1/data", QoS: 1, Payload: []byte(`{"temperature": 19.5}`)}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		d := e.Args.(*events.DataReceived)
		if e.DeviceID != "t1" || e.DeviceType != "Thermometer" || d.Readings[0].Values["temperature"] != 19.5 {
			t.Fatalf("event %+v args %+v", e, d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no device_data_received within 10s")
	}
}

// gcSettings returns the process's GC percent and memory limit.
func gcSettings() [2]uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	rtmetrics.Read(s)
	return [2]uint64{s[0].Value.Uint64(), s[1].Value.Uint64()}
}
