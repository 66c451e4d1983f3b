package broker

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/eventually"
)

// connectAll connects n paho clients as dev1 at the same instant and
// returns those that got a successful CONNACK.
func connectAll(t *testing.T, addr string, n int) []*paho.Client {
	t.Helper()
	var (
		mu  sync.Mutex
		ok  []*paho.Client
		wg  sync.WaitGroup
		go_ = make(chan struct{})
	)
	for range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}, OnServerDisconnect: func(*paho.Disconnect) {}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-go_
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ca, err := c.Connect(ctx, &paho.Connect{ClientID: "dev1", Username: "dev1", UsernameFlag: true,
				Password: []byte("pw1"), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
			if err == nil && ca.ReasonCode == 0 {
				mu.Lock()
				ok = append(ok, c)
				mu.Unlock()
			}
		}()
	}
	close(go_)
	wg.Wait()
	return ok
}

func alive(cs []*paho.Client) int {
	n := 0
	for _, c := range cs {
		select {
		case <-c.Done():
		default:
			n++
		}
	}
	return n
}

// Finding 2: eight simultaneous CONNECTs of one device leave exactly one
// session, and Kick closes it (and any other) and refuses what they send.
func TestSimultaneousConnectsThenKick(t *testing.T) {
	h := start(t)
	cs := connectAll(t, h.b.Addr(), 8)
	if len(cs) == 0 {
		t.Fatal("no connection accepted")
	}
	eventually.True(t, 5*time.Second, "one session left", func() bool { return h.b.Sessions("dev1") == 1 && alive(cs) == 1 })

	var last *paho.Client
	for _, c := range cs {
		select {
		case <-c.Done():
		default:
			last = c
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := last.Publish(ctx, &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{}`)}); err != nil {
		t.Fatalf("publish from the live session: %v", err)
	}
	before := len(h.handler.published())

	h.b.Kick("dev1", "test")
	eventually.True(t, 5*time.Second, "every session closed", func() bool { return alive(cs) == 0 && h.b.Sessions("dev1") == 0 })
	if _, err := last.Publish(ctx, &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{}`)}); err == nil {
		t.Error("publish after kick acknowledged")
	}
	if got := len(h.handler.published()); got != before {
		t.Errorf("%d messages handed on after the kick", got-before)
	}
	// The device's last connection ended: told once (ingest frees its
	// chunks), not once per replaced session.
	eventually.True(t, 5*time.Second, "device gone", func() bool { return h.gone.count("dev1") >= 1 })
	if n := h.gone.count("dev1"); n != 1 {
		t.Errorf("device gone told %d times, want 1", n)
	}
	// Presence hears the end of every session it heard of.
	eventually.True(t, 5*time.Second, "presence hears every end", func() bool {
		return len(h.presence.find("connected", "dev1")) == len(h.presence.find("disconnected", "dev1"))
	})
}

// A session marked closed is refused at once, before its connection is
// gone: publishes and subscriptions alike.
func TestClosedSessionRefused(t *testing.T) {
	h := start(t)
	c := mustDial(t, h, "dev1")
	var s *session
	h.b.conns.Range(func(_, v any) bool {
		if x := v.(*session); x.deviceID == "dev1" {
			s = x
		}
		return true
	})
	if s == nil {
		t.Fatal("no session")
	}
	s.superseded.Store(true) // as a newer connection would, before mochi's takeover closes it
	ctx := ctx5(t)
	pr, err := c.Publish(ctx, &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{}`)})
	if err == nil && pr != nil && pr.ReasonCode < 0x80 {
		t.Error("publish of a superseded session acknowledged")
	}
	if n := len(h.handler.published()); n != 0 {
		t.Errorf("%d messages of a superseded session handed on", n)
	}
}
