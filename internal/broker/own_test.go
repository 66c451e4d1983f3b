package broker

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/devicehub/devicehub/internal/eventually"
)

func TestMatchFilter(t *testing.T) {
	for _, tt := range []struct {
		filter, topic string
		want          bool
	}{
		{"data", "data", true},
		{"data", "data/x", false},
		{"data/x", "data", false},
		{"+", "data", true},
		{"+", "data/x", false},
		{"+/x", "data/x", true},
		{"+/x", "data/y", false},
		{"#", "data", true},
		{"#", "data/x/y", true},
		{"#", "", true},
		{"data/#", "data", true}, // a last "#" matches the parent level too
		{"data/#", "data/x/y", true},
		{"data/#", "datax", false},
		{"commands/+", "commands/7", true},
		{"commands/+", "commands/", true}, // "+" matches an empty level
		{"commands/+", "commands", false},
		{"twin/desired", "twin/desired", true},
		{"twin/desired", "twin/reported", false},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
		{"+/+", "a", false},
	} {
		t.Run(tt.filter+" "+tt.topic, func(t *testing.T) {
			if got := matchFilter(tt.filter, tt.topic); got != tt.want {
				t.Fatalf("matchFilter(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
		})
	}
}

// FuzzMatchFilter: the broker's matching of a device's filter agrees with
// mochi's topic index, which it replaces for devices (own.go).
func FuzzMatchFilter(f *testing.F) {
	f.Add("commands/+", "commands/7")
	f.Add("data/#", "data")
	f.Add("#", "")
	f.Add("a/+/b", "a//b")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		const prefix = "devices/dev1/"
		if filter == "" || !mqtt.IsValidFilter(prefix+filter, false) || strings.ContainsAny(topic, "+#") {
			return
		}
		idx := mqtt.NewTopicsIndex()
		idx.Subscribe("dev1", packets.Subscription{Filter: prefix + filter})
		_, want := idx.Subscribers(prefix + topic).Subscriptions["dev1"]
		if got := matchFilter(filter, topic); got != want {
			t.Fatalf("matchFilter(%q, %q) = %v; mochi's index: %v", filter, topic, got, want)
		}
	})
}

// TestSubscriptionsAsMochi runs one device's session against the broker
// holding the subscriptions and against mochi holding them (the
// fallback), and requires the device to see the same: SUBACK and UNSUBACK
// reason codes, and every message with its QoS, retain flag and
// subscription identifier, in order. Markers published by the hub after
// each step make sure nothing else arrived.
func TestSubscriptionsAsMochi(t *testing.T) {
	run := func(t *testing.T, mochiHolds bool) []string {
		h := startOpts(t, Options{mochiWriteLoop: mochiHolds}, &fakeHandler{errs: map[string]error{}})
		if (h.b.mochi == nil) != mochiHolds {
			t.Fatalf("mochi holds the subscriptions = %v, want %v", h.b.mochi == nil, mochiHolds)
		}
		var seen []string
		pub := func(topic string, retain bool, qos byte) {
			t.Helper()
			if err := h.b.Publish(topic, []byte(topic), retain, qos); err != nil {
				t.Fatal(err)
			}
		}
		// retained before the device subscribes
		pub("devices/dev1/twin/desired", true, 1)
		pub("devices/dev1/config", true, 1)
		c := mustDial(t, h, "dev1")
		marker := 0
		// barrier records what arrived up to a marker of the hub, and
		// the retained messages a new subscription was sent (mochi may
		// queue them after the marker: own.go), then waits for the
		// device's acknowledgements (mochi refuses a SUBSCRIBE whose
		// packet id is that of a publish the device has not
		// acknowledged yet: packetIDInUse).
		barrier := func(step string, retained int) {
			t.Helper()
			marker++
			topic := fmt.Sprintf("devices/dev1/commands/marker%d", marker)
			pub(topic, false, 1)
			for markerSeen := false; !markerSeen || retained > 0; {
				m := receive(t, c, step+": "+topic)
				if m.Topic == topic {
					markerSeen = true
					continue
				}
				id := 0
				if m.Properties != nil && m.Properties.SubscriptionIdentifier != nil {
					id = *m.Properties.SubscriptionIdentifier
				}
				if m.Retain && retained > 0 {
					retained--
					// mochi sends it without the subscription's
					// identifier (own.go); the broker must send it with
					// one
					if id == 0 && !mochiHolds {
						t.Errorf("%s: retained %s without a subscription identifier", step, m.Topic)
					}
					id = -1
				}
				seen = append(seen, fmt.Sprintf("%s: %s qos=%d retain=%v id=%d payload=%s", step, m.Topic, m.QoS, m.Retain, id, m.Payload))
			}
			eventually.True(t, 5*time.Second, step+": acknowledged", func() bool {
				cl, ok := h.b.server.Clients.Get("dev1")
				return ok && cl.State.Inflight.Len() == 0
			})
		}
		subscribe := func(step string, id int, opts ...paho.SubscribeOptions) {
			t.Helper()
			s := &paho.Subscribe{Subscriptions: opts}
			if id > 0 {
				s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: &id}
			}
			sa, err := c.Subscribe(ctx5(t), s)
			if err != nil && sa == nil {
				t.Fatalf("%s: %v", step, err)
			}
			seen = append(seen, fmt.Sprintf("%s: suback %x", step, sa.Reasons))
		}
		unsubscribe := func(step string, filters ...string) {
			t.Helper()
			ua, err := c.Unsubscribe(ctx5(t), &paho.Unsubscribe{Topics: filters})
			if err != nil && ua == nil {
				t.Fatalf("%s: %v", step, err)
			}
			seen = append(seen, fmt.Sprintf("%s: unsuback %x", step, ua.Reasons))
		}

		subscribe("commands and desired", 1,
			paho.SubscribeOptions{Topic: "devices/dev1/commands/+", QoS: 1},
			paho.SubscribeOptions{Topic: "devices/dev1/twin/desired", QoS: 1})
		barrier("commands and desired", 1)
		subscribe("refused and invalid", 0,
			paho.SubscribeOptions{Topic: "devices/dev2/commands/+", QoS: 1},
			paho.SubscribeOptions{Topic: "devices/dev1/a/#/b", QoS: 1},
			paho.SubscribeOptions{Topic: "#", QoS: 0})
		barrier("refused and invalid", 0)
		subscribe("everything, no retained", 2,
			paho.SubscribeOptions{Topic: "devices/dev1/#", QoS: 0, RetainHandling: 2})
		barrier("everything, no retained", 0)
		pub("devices/dev1/commands/7", false, 1)
		pub("devices/dev1/twin/desired", true, 1) // a new retained version: live, so not retained
		pub("devices/dev1/firmware", false, 0)
		barrier("overlapping", 0)
		subscribe("config again, retained if new", 3,
			paho.SubscribeOptions{Topic: "devices/dev1/config", QoS: 1, RetainHandling: 1})
		subscribe("config again, not new", 3,
			paho.SubscribeOptions{Topic: "devices/dev1/config", QoS: 1, RetainHandling: 1})
		barrier("retain handling 1", 1)
		subscribe("retain as published", 4,
			paho.SubscribeOptions{Topic: "devices/dev1/config", QoS: 1, RetainAsPublished: true})
		barrier("retain as published", 1)
		pub("devices/dev1/config", true, 1)
		barrier("retain as published, live", 0)
		if _, err := c.Publish(ctx5(t), &paho.Publish{Topic: "devices/dev1/commands/own", QoS: 0, Payload: []byte("own")}); err != nil {
			t.Fatal(err)
		}
		// the device's own marker, processed after its publish
		if _, err := c.Publish(ctx5(t), &paho.Publish{Topic: "devices/dev1/commands/ownmarker", QoS: 0}); err != nil {
			t.Fatal(err)
		}
		for {
			m := receive(t, c, "the device's own marker")
			if m.Topic == "devices/dev1/commands/ownmarker" {
				break
			}
			seen = append(seen, fmt.Sprintf("the device's own publish: %s qos=%d payload=%s", m.Topic, m.QoS, m.Payload))
		}
		barrier("the device's own publish", 0)
		unsubscribe("unsubscribe", "devices/dev1/#", "devices/dev1/nothing", "devices/dev2/commands/+")
		pub("devices/dev1/commands/8", false, 1)
		pub("devices/dev1/firmware", false, 1)
		barrier("after unsubscribe", 0)
		subscribe("no local", 5, paho.SubscribeOptions{Topic: "devices/dev1/echo/+", QoS: 1, NoLocal: true})
		if _, err := c.Publish(ctx5(t), &paho.Publish{Topic: "devices/dev1/echo/1", QoS: 0, Payload: []byte("echo")}); err != nil {
			t.Fatal(err)
		}
		pub("devices/dev1/echo/2", false, 1)
		barrier("no local", 0)
		pub("devices/dev2/commands/1", false, 1) // another device's
		barrier("another device's topic", 0)
		if d := h.b.server.Info.MessagesDropped; d != 0 {
			t.Fatalf("%d messages dropped", d)
		}
		n := len(h.b.server.Topics.Subscribers("devices/dev1/commands/7").Subscriptions)
		if mochiHolds != (n > 0) {
			t.Fatalf("mochi's index has %d subscriptions of the device, mochi holds them = %v", n, mochiHolds)
		}
		return seen
	}
	var broker []string
	t.Run("broker holds the subscriptions", func(t *testing.T) { broker = run(t, false) })
	var mochi []string
	t.Run("mochi holds them", func(t *testing.T) { mochi = run(t, true) })
	if t.Failed() {
		return
	}
	t.Logf("the device saw:\n%s", strings.Join(broker, "\n"))
	if !reflect.DeepEqual(broker, mochi) {
		t.Fatalf("the device saw\n%s\n\nwith mochi holding the subscriptions:\n%s", strings.Join(broker, "\n"), strings.Join(mochi, "\n"))
	}
}

// TestReceiveMaximum: a v5 device that announces a receive maximum of 2
// is sent no more than 2 unacknowledged QoS 1 messages; the others wait
// in its inflight store and are sent, in order, as it acknowledges.
func TestReceiveMaximum(t *testing.T) {
	h := start(t)
	conn, err := net.Dial("tcp", h.b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan *paho.Publish, 16)
	c := paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: true,
		OnClientError:              func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			received <- pr.Packet
			return true, nil
		}},
	})
	rm := uint16(2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{
		ClientID: "dev1", Username: "dev1", UsernameFlag: true, Password: []byte("pw1"), PasswordFlag: true,
		KeepAlive: 30, CleanStart: true, Properties: &paho.ConnectProperties{ReceiveMaximum: &rm},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}); <-c.Done() })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/commands/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		if err := h.b.Publish(fmt.Sprintf("devices/dev1/commands/%d", i), nil, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	cl, ok := h.b.server.Clients.Get("dev1")
	if !ok {
		t.Fatal("no client")
	}
	o := &sessionOfConn(cl).out
	o.mu.Lock()
	waiting := len(o.waiting)
	o.mu.Unlock()
	if cl.State.Inflight.Len() != n || waiting != n-int(rm) {
		t.Fatalf("inflight %d with %d waiting for quota, want %d with %d waiting", cl.State.Inflight.Len(), waiting, n, n-int(rm))
	}
	for i := range n {
		select {
		case m := <-received:
			if want := fmt.Sprintf("devices/dev1/commands/%d", i); m.Topic != want {
				t.Fatalf("message %d: %s, want %s", i, m.Topic, want)
			}
			if err := c.Ack(m); err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d of %d not received", i+1, n)
		}
	}
}

// TestSubscriptionCap: a device holds at most maxSubscriptions; one more
// is refused with "quota exceeded", a filter it holds can still be
// subscribed to again (its options replaced), and one can be added once
// another was unsubscribed.
func TestSubscriptionCap(t *testing.T) {
	h := start(t)
	c := mustDial(t, h, "dev1")
	sub := func(filter string) byte {
		t.Helper()
		sa, err := c.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		if sa == nil {
			t.Fatalf("subscribe %s: %v", filter, err)
		}
		return sa.Reasons[0]
	}
	for i := range maxSubscriptions {
		if rc := sub(fmt.Sprintf("devices/dev1/s/%d", i)); rc != 1 {
			t.Fatalf("subscription %d refused: %#x", i, rc)
		}
	}
	if rc := sub("devices/dev1/one/more"); rc != packets.ErrQuotaExceeded.Code {
		t.Fatalf("subscription beyond the cap: %#x, want %#x", rc, packets.ErrQuotaExceeded.Code)
	}
	if rc := sub("devices/dev1/s/0"); rc != 1 {
		t.Fatalf("a held filter again: %#x", rc)
	}
	if _, err := c.Unsubscribe(ctx5(t), &paho.Unsubscribe{Topics: []string{"devices/dev1/s/0"}}); err != nil {
		t.Fatal(err)
	}
	if rc := sub("devices/dev1/one/more"); rc != 1 {
		t.Fatalf("subscription after an unsubscribe: %#x", rc)
	}
	if err := h.b.Publish("devices/dev1/one/more", []byte("x"), false, 1); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, c, "the publish"); m.Topic != "devices/dev1/one/more" {
		t.Fatalf("got %s", m.Topic)
	}
}
