package broker

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/eventually"
)

// TestInputWithConnect sends packets in the same write as the CONNECT:
// they are in mochi's reader once the session is established, not on the
// socket, and must be processed without waiting for more input.
func TestInputWithConnect(t *testing.T) {
	h := start(t)
	pingreq := []byte{0xC0, 0}
	pingresp := []byte{0xD0, 0}
	tests := []struct {
		name  string
		after []byte // sent with the CONNECT
		want  []byte // read after the CONNACK
	}{
		{"one PINGREQ", pingreq, pingresp},
		{"two PINGREQs", append(append([]byte{}, pingreq...), pingreq...), append(append([]byte{}, pingresp...), pingresp...)},
		{"a QoS 1 publish", publish311("devices/dev1/data", `{"t":1}`, 9), []byte{0x40, 2, 0, 9}},
		{"half a PINGREQ, then the rest", pingreq[:1], pingresp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", h.b.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second)) // a failure, not a synchronisation
			if _, err := conn.Write(append(connect311("dev1", "dev1", "pw1"), tt.after...)); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4+len(tt.want))
			if _, err := io.ReadFull(conn, got[:4]); err != nil {
				t.Fatalf("read CONNACK: %v", err)
			}
			if got[0] != 0x20 || got[3] != 0 {
				t.Fatalf("CONNACK = %x", got[:4])
			}
			if len(tt.after) == 1 { // the rest of the PINGREQ
				if _, err := conn.Write(pingreq[1:]); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := io.ReadFull(conn, got[4:]); err != nil {
				t.Fatalf("read after CONNACK: %v", err)
			}
			if !bytes.Equal(got[4:], tt.want) {
				t.Fatalf("after CONNACK got %x, want %x", got[4:], tt.want)
			}
		})
	}
}

// TestSessionTakeoverCarriesOver: a connection that takes over a
// persistent session of its device (clean start false) finds it present,
// with its subscriptions; a clean start does not.
func TestSessionTakeoverCarriesOver(t *testing.T) {
	expiry := uint32(60)
	persistent := func(c *paho.Connect) {
		c.CleanStart = false
		c.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	tests := []struct {
		name        string
		second      []connectOpt
		wantPresent bool
	}{
		{"persistent", []connectOpt{persistent}, true},
		{"clean start", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t)
			first := mustDial(t, h, "dev1", persistent)
			if _, err := first.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/commands/+", QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
			second, ca, err := dial(t, h.b.Addr(), "dev1", "dev1", "pw1", tt.second...)
			if err != nil {
				t.Fatalf("second connect: %v", err)
			}
			if ca.SessionPresent != tt.wantPresent {
				t.Fatalf("session present = %v, want %v", ca.SessionPresent, tt.wantPresent)
			}
			select {
			case d := <-first.disconnects:
				if d.ReasonCode != 0x8E {
					t.Fatalf("first session DISCONNECT = %#x, want 0x8E", d.ReasonCode)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("first session not disconnected")
			}
			if !tt.wantPresent {
				if _, err := second.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/commands/+", QoS: 1}}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := h.b.Publish("devices/dev1/commands/7", []byte(`{"command":"x"}`), false, 1); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-second.received:
				if m.Topic != "devices/dev1/commands/7" {
					t.Fatalf("got %s", m.Topic)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the new connection did not get the publish")
			}
		})
	}
}

// FuzzConnectionInput sends arbitrary bytes after a valid CONNECT, split
// in two writes at an arbitrary point, through a real connection to the
// broker's own connection loop (serve.go): whatever they are, the broker
// must not panic, must end the connection once the device closes its
// side (no loop left waiting with input it already buffered), and must
// still serve the next device.
func FuzzConnectionInput(f *testing.F) {
	pingreq := []byte{0xC0, 0}
	f.Add(pingreq, 1)
	f.Add(append(append([]byte{}, pingreq...), pingreq...), 3)
	f.Add(publish311("devices/dev1/data", `{"t":1}`, 9), 5)
	f.Add([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, 2) // a length of more than 4 bytes
	f.Add([]byte{0xC0, 0x80, 0x00}, 1)                   // a length in more bytes than needed
	f.Add([]byte{0xE0, 0}, 0)                            // DISCONNECT
	f.Add([]byte{0x10, 0x02, 0x00, 0x00}, 2)             // a second CONNECT
	f.Fuzz(func(t *testing.T, input []byte, split int) {
		if len(input) > 4096 {
			return
		}
		h := start(t)
		conn, err := net.Dial("tcp", h.b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a failure, not a synchronisation
		if split < 0 {
			split = -split
		}
		split %= len(input) + 1
		if _, err := conn.Write(append(connect311("dev1", "dev1", "pw1"), input[:split]...)); err != nil {
			t.Fatal(err)
		}
		// The broker may have closed the connection already: a failed
		// write of the rest is an answer too.
		_, _ = conn.Write(input[split:])
		_ = conn.(*net.TCPConn).CloseWrite()
		// The end is EOF, or a reset when the broker closed with input
		// unread; only the deadline means it never ended.
		if _, err := io.Copy(io.Discard, conn); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection did not end after the device closed its side: %v", err)
			}
		}
		// The broker still serves a device.
		next, err := net.Dial("tcp", h.b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer next.Close()
		_ = next.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := next.Write(append(connect311("dev2", "dev2", "pw2"), pingreq...)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 6)
		if _, err := io.ReadFull(next, got); err != nil {
			t.Fatalf("next device: %v", err)
		}
		if got[0] != 0x20 || got[3] != 0 || got[4] != 0xD0 {
			t.Fatalf("next device got %x, want a CONNACK and a PINGRESP", got)
		}
	})
}

// TestWriteLoopWithSubscription: with mochi's write loop (the fallback
// of writer.go) a connection's loop is started with its first SUBSCRIBE,
// not before (startWriteLoop), ends with the connection, and the device
// gets what is published to it. When the broker holds the subscriptions
// no goroutine writes for it until a message is queued.
func TestWriteLoopWithSubscription(t *testing.T) {
	for _, tt := range []struct {
		name      string
		mochiLoop bool
	}{
		{"broker holds the subscriptions", false},
		{"mochi write loop", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startOpts(t, Options{mochiWriteLoop: tt.mochiLoop}, &fakeHandler{errs: map[string]error{}})
			if got := h.b.mochi == nil; got != tt.mochiLoop {
				t.Fatalf("mochi write loop = %v, want %v", got, tt.mochiLoop)
			}
			c := mustDial(t, h, "dev1")
			if _, err := c.Publish(ctx5(t), &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{}`)}); err != nil {
				t.Fatalf("publish without a write loop: %v", err)
			}
			if n := h.b.writers.Load(); n != 0 {
				t.Fatalf("%d writers before any subscription", n)
			}
			if _, err := c.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/commands/+", QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
			if n, want := h.b.writers.Load(), map[bool]int64{false: 0, true: 1}[tt.mochiLoop]; n != want {
				t.Fatalf("%d writers after a subscription, want %d", n, want)
			}
			for i := range 3 {
				if err := h.b.Publish("devices/dev1/commands/7", []byte(`{"command":"x"}`), false, byte(i%2)); err != nil {
					t.Fatal(err)
				}
				select {
				case <-c.received:
				case <-time.After(5 * time.Second):
					t.Fatalf("publish %d not received", i)
				}
			}
			if err := c.Disconnect(&paho.Disconnect{}); err != nil {
				t.Fatal(err)
			}
			if !tt.mochiLoop {
				return // the writer ends after WriterIdle (TestWriterIdlesAndRestarts)
			}
			eventually.True(t, 5*time.Second, "mochi's write loop ended with its connection", func() bool { return h.b.writers.Load() == 0 })
		})
	}
}

// TestExpiredSessionLeavesNoSubscription: once a persistent session
// expired, its subscriptions are gone from mochi's topic index (mochi's
// expiry removes only the client), so a new connection with the same
// client id is not sent what the old session subscribed to, through a
// write loop it does not have.
func TestExpiredSessionLeavesNoSubscription(t *testing.T) {
	h := start(t)
	expiry := uint32(1)
	first := mustDial(t, h, "dev1", func(c *paho.Connect) {
		c.CleanStart = false
		c.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	})
	const topic = "devices/dev1/commands/7"
	if _, err := first.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/commands/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := first.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "session expired", func() bool {
		_, ok := h.b.server.Clients.Get("dev1")
		return !ok
	})
	if n := len(h.b.server.Topics.Subscribers(topic).Subscriptions); n != 0 {
		t.Fatalf("%d subscriptions left in the topic index after the session expired", n)
	}
	second := mustDial(t, h, "dev1")
	if err := h.b.Publish(topic, []byte(`{"command":"x"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Publish(ctx5(t), &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{}`)}); err != nil {
		t.Fatalf("publish of the new connection: %v", err)
	}
	select {
	case m := <-second.received:
		t.Fatalf("the new connection got %s, subscribed to by the expired session", m.Topic)
	default:
	}
}
