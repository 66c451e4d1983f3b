package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// gatedHandler is a PublishStarter whose commits the test makes happen,
// one by one and in any order: each QoS 1 publish waits for a value on
// its gate (nil: stored; an error: not stored), as it would wait for the
// commit path.
type gatedHandler struct {
	mu      sync.Mutex
	gates   map[string]chan error // by topic
	started chan string           // topics, in the order StartPublish took them
}

func newGatedHandler() *gatedHandler {
	return &gatedHandler{gates: map[string]chan error{}, started: make(chan string, 64)}
}

func (g *gatedHandler) gate(topic string) chan error {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.gates[topic]
	if !ok {
		c = make(chan error)
		g.gates[topic] = c
	}
	return c
}

func (g *gatedHandler) HandlePublish(context.Context, *Publish) error { return nil }

func (g *gatedHandler) StartPublish(ctx context.Context, p *Publish, done func(error)) (bool, error) {
	gate := g.gate(p.Topic)
	g.started <- p.Topic
	go func() {
		select {
		case err := <-gate:
			done(err)
		case <-ctx.Done(): // the connection ended
			done(ctx.Err())
		}
	}()
	return true, nil
}

// commit lets topic's publish finish with err (nil: stored).
func (g *gatedHandler) commit(t *testing.T, topic string, err error) {
	t.Helper()
	select {
	case g.gate(topic) <- err:
	case <-time.After(10 * time.Second):
		t.Fatalf("nobody waits for the commit of %s", topic)
	}
}

// tapConn records the bytes of an MQTT connection in both directions, so
// that a test sees the packets in the order they crossed the wire. It is a
// sync.Locker, which paho takes around the several writes of one packet
// when the connection is not a *net.TCPConn (whose writev is atomic).
type tapConn struct {
	net.Conn
	sync.Mutex // paho's write lock
	mu         sync.Mutex
	in, out    []byte
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.in = append(c.in, b[:n]...)
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) Write(b []byte) (int, error) {
	c.mu.Lock() // held across the write: out is in wire order
	defer c.mu.Unlock()
	n, err := c.Conn.Write(b)
	c.out = append(c.out, b[:n]...)
	return n, err
}

var _ sync.Locker = (*tapConn)(nil)

type rawPacket struct {
	typ, flags byte
	body       []byte
}

// splitPackets cuts a byte stream into MQTT packets (fixed header, then
// the remaining length as a variable byte integer). A packet not read in
// full yet is left out.
func splitPackets(t *testing.T, b []byte) []rawPacket {
	t.Helper()
	var out []rawPacket
	for len(b) > 0 {
		n, mul, i := 0, 1, 1
		for {
			if i >= len(b) {
				return out // the length is not read in full yet
			}
			if i > 4 {
				t.Fatalf("bad remaining length: % x", b)
			}
			n += int(b[i]&0x7f) * mul
			mul *= 128
			i++
			if b[i-1]&0x80 == 0 {
				break
			}
		}
		if len(b) < i+n {
			return out
		}
		out = append(out, rawPacket{typ: b[0] >> 4, flags: b[0] & 0x0f, body: b[i : i+n]})
		b = b[i+n:]
	}
	return out
}

// publishIDs returns the topics and packet ids of the QoS 1 publishes the
// client sent, in wire order.
func (c *tapConn) publishIDs(t *testing.T) (topics []string, ids []uint16) {
	c.mu.Lock()
	out := append([]byte(nil), c.out...)
	c.mu.Unlock()
	for _, p := range splitPackets(t, out) {
		if p.typ != 3 || (p.flags>>1)&3 != 1 {
			continue
		}
		tl := int(p.body[0])<<8 | int(p.body[1])
		topics = append(topics, string(p.body[2:2+tl]))
		ids = append(ids, uint16(p.body[2+tl])<<8|uint16(p.body[3+tl]))
	}
	return topics, ids
}

// received lists what the broker sent after the CONNACK: "puback <id>
// <reason>" and "disconnect <reason>", in wire order.
func (c *tapConn) received(t *testing.T) []string {
	c.mu.Lock()
	in := append([]byte(nil), c.in...)
	c.mu.Unlock()
	var out []string
	for _, p := range splitPackets(t, in) {
		switch p.typ {
		case 4:
			reason := byte(0)
			if len(p.body) > 2 {
				reason = p.body[2]
			}
			out = append(out, fmt.Sprintf("puback %d %#x", uint16(p.body[0])<<8|uint16(p.body[1]), reason))
		case 14:
			reason := byte(0)
			if len(p.body) > 0 {
				reason = p.body[0]
			}
			out = append(out, fmt.Sprintf("disconnect %#x", reason))
		}
	}
	return out
}

// dialTapped connects dev1 as an MQTT v5 paho client over a tapConn.
func dialTapped(t *testing.T, h *harness) (*paho.Client, *tapConn, chan *paho.Disconnect) {
	t.Helper()
	nc, err := net.Dial("tcp", h.b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tap := &tapConn{Conn: nc}
	disconnects := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{
		Conn:               tap,
		OnServerDisconnect: func(d *paho.Disconnect) { disconnects <- d },
		OnClientError:      func(error) {},
	})
	if _, err := c.Connect(ctx5(t), &paho.Connect{
		ClientID: "dev1", Username: "dev1", UsernameFlag: true,
		Password: []byte("pw1"), PasswordFlag: true, KeepAlive: 30, CleanStart: true,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		<-c.Done()
	})
	return c, tap, disconnects
}

type publishResult struct {
	topic string
	pr    *paho.PublishResponse
	err   error
}

// publishAll sends a QoS 1 publish on each topic, each from its own
// goroutine that waits for the PUBACK, and returns a channel of their
// outcomes. The next publish starts once the handler took the previous
// one: the broker read it without waiting for its commit, and the wire
// order is the order of topics.
func publishAll(ctx context.Context, t *testing.T, c *paho.Client, g *gatedHandler, topics []string) chan publishResult {
	t.Helper()
	res := make(chan publishResult, len(topics))
	for _, topic := range topics {
		go func() {
			pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"t":1}`)})
			res <- publishResult{topic, pr, err}
		}()
		select {
		case got := <-g.started:
			if got != topic {
				t.Fatalf("handler took %s, want %s", got, topic)
			}
		case r := <-res:
			t.Fatalf("publish %s ended before the broker took it: %+v, %v", r.topic, r.pr, r.err)
		case <-time.After(10 * time.Second):
			t.Fatalf("the broker did not take %s", topic)
		}
	}
	return res
}

// TestPubacksInOrder: several QoS 1 publishes of one client are taken in
// before any of them is stored, and their PUBACKs go out in the order the
// publishes arrived, each only after its own commit, however the commits
// are ordered.
func TestPubacksInOrder(t *testing.T) {
	g := newGatedHandler()
	h := startWith(t, g)
	c, tap, _ := dialTapped(t, h)

	var topics []string
	for i := range 5 {
		topics = append(topics, fmt.Sprintf("devices/dev1/data/s%d", i))
	}
	res := publishAll(ctx5(t), t, c, g, topics)
	order := topics
	if got := tap.received(t); len(got) != 0 {
		t.Fatalf("before any commit the broker sent %v, want nothing", got)
	}
	// Store them newest first: each PUBACK must still wait for the
	// older publishes.
	for i := len(order) - 1; i >= 0; i-- {
		g.commit(t, order[i], nil)
		if i > 0 {
			if got := tap.received(t); len(got) != 0 {
				t.Fatalf("with %s not stored yet the broker sent %v, want nothing", order[0], got)
			}
		}
	}
	for range topics {
		r := <-res
		if r.err != nil || r.pr.ReasonCode != 0 {
			t.Fatalf("publish %s: %+v, %v", r.topic, r.pr, r.err)
		}
	}
	sentTopics, ids := tap.publishIDs(t)
	if fmt.Sprint(sentTopics) != fmt.Sprint(order) {
		t.Fatalf("handler took %v, the client sent %v: want the wire order", order, sentTopics)
	}
	var want []string
	for _, id := range ids {
		want = append(want, fmt.Sprintf("puback %d 0x0", id))
	}
	if got := tap.received(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("broker sent %v, want %v (PUBACKs in publish order)", got, want)
	}
}

// TestPubackNeverForUnstored: a publish whose commit fails is never
// acknowledged, nor is any publish after it (even one stored before it
// failed); the client is disconnected with 0x83 and sends them again.
func TestPubackNeverForUnstored(t *testing.T) {
	g := newGatedHandler()
	h := startWith(t, g)
	c, tap, disconnects := dialTapped(t, h)
	topics := []string{"devices/dev1/data/a", "devices/dev1/data/b", "devices/dev1/data/c"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := publishAll(ctx, t, c, g, topics)
	order := topics
	g.commit(t, order[2], nil)
	g.commit(t, order[1], errors.New("disk on fire"))
	g.commit(t, order[0], nil)

	select {
	case d := <-disconnects:
		if d.ReasonCode != 0x83 {
			t.Fatalf("DISCONNECT reason %#x, want 0x83", d.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client not disconnected after a failed commit")
	}
	for range topics {
		r := <-res
		if r.topic == order[0] {
			// paho keeps the unacknowledged publishes for a resend:
			// end their calls.
			cancel()
			if r.err != nil || r.pr.ReasonCode != 0 {
				t.Fatalf("publish %s (stored first): %+v, %v", r.topic, r.pr, r.err)
			}
		} else if r.err == nil {
			t.Fatalf("publish %s after the failed one was acknowledged: %+v", r.topic, r.pr)
		}
	}
	_, ids := tap.publishIDs(t)
	want := []string{fmt.Sprintf("puback %d 0x0", ids[0]), "disconnect 0x83"}
	if got := tap.received(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("broker sent %v, want %v", got, want)
	}
}

// sessionOfDevice returns the broker's session of the connected device id.
func sessionOfDevice(t *testing.T, b *Broker, id string) *session {
	t.Helper()
	var found *session
	b.conns.Range(func(_, v any) bool {
		if s := v.(*session); s.deviceID == id && s.client.Load() != nil {
			found = s
			return false
		}
		return true
	})
	if found == nil {
		t.Fatalf("no session of %s", id)
	}
	return found
}

// checkFor polls fn until it is true, failing the test after wait.
func checkFor(t *testing.T, wait time.Duration, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", wait, what)
		}
		time.Sleep(time.Millisecond) // polling, not synchronising
	}
}

// TestBlockedDeviceHoldsNoOtherPuback: a device whose socket does not take
// its PUBACK (its writer blocked in the write, here by holding the lock
// mochi holds across a write) holds neither the commit path, which
// settles every device's publishes in one goroutine, nor another device's
// acknowledgements. Once its socket drains it gets its PUBACK.
func TestBlockedDeviceHoldsNoOtherPuback(t *testing.T) {
	st := newStoredHandler()
	st.run(t)
	h := startWith(t, st)
	// dev1 sends no PINGREQ: paho's pinger may send one at once, and
	// mochi's read loop writes the PINGRESP itself, so it would wait on
	// the lock held below and never read dev1's publish.
	slow := mustDialWith(t, h, "dev1", withoutPings)
	fast := mustDial(t, h, "dev2")
	cl := sessionOfDevice(t, h.b, "dev1").client.Load()

	cl.Lock() // dev1's socket takes nothing from now on
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			cl.Unlock()
		}
	}
	defer unlock()
	slowDone := make(chan error, 1)
	go func() {
		_, err := slow.Publish(ctx5(t), &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{"t":1}`)})
		slowDone <- err
	}()
	// Its publish is stored and settled: its PUBACK waits for the socket
	// (the writer took it from the queue, and gives its window token back
	// once written).
	q := &sessionOfDevice(t, h.b, "dev1").pubacks
	checkFor(t, 5*time.Second, "dev1's publish not settled", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.window) == 1 && (len(q.q) == 0 || q.q[0].settled)
	})
	for i := range 20 {
		if _, err := fast.Publish(ctx5(t), &paho.Publish{Topic: "devices/dev2/data", QoS: 1, Payload: []byte(`{"t":1}`)}); err != nil {
			t.Fatalf("dev2's publish %d while dev1's socket is blocked: %v", i, err)
		}
	}
	select {
	case err := <-slowDone:
		t.Fatalf("dev1 got its PUBACK (%v) through a blocked socket", err)
	default:
	}
	unlock()
	if err := <-slowDone; err != nil {
		t.Fatalf("dev1's publish once its socket drained: %v", err)
	}
}

// TestPublishNotStoredInTime: a publish whose commit does not come within
// the HandlerTimeout is not acknowledged and its connection is closed
// (0x83), by the broker's watchdog; no goroutine or timer per message
// waits for it.
func TestPublishNotStoredInTime(t *testing.T) {
	g := newGatedHandler()
	h := startOpts(t, Options{HandlerTimeout: 200 * time.Millisecond}, g)
	c, tap, disconnects := dialTapped(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := publishAll(ctx, t, c, g, []string{"devices/dev1/data/a", "devices/dev1/data/b"})
	select {
	case d := <-disconnects:
		if d.ReasonCode != 0x83 {
			t.Fatalf("DISCONNECT reason %#x, want 0x83", d.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client not disconnected when its publish was not stored in time")
	}
	cancel() // paho keeps the unacknowledged publishes for a resend
	for range 2 {
		if r := <-res; r.err == nil {
			t.Fatalf("publish %s acknowledged: %+v", r.topic, r.pr)
		}
	}
	if got := tap.received(t); fmt.Sprint(got) != "[disconnect 0x83]" {
		t.Fatalf("broker sent %v, want only the DISCONNECT", got)
	}
}

// TestPubacksBesideMochiWriteLoop: when mochi runs its own write loop for
// a subscribed client (the fallback of writer.go), the broker's writer
// still writes the PUBACKs of its publishes.
func TestPubacksBesideMochiWriteLoop(t *testing.T) {
	st := newStoredHandler()
	st.run(t)
	h := startOpts(t, Options{mochiWriteLoop: true}, st)
	c := mustDial(t, h, "dev1")
	if _, err := c.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/commands/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := c.Publish(ctx5(t), &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{"t":1}`)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// TestPubackWire: the PUBACK the writer writes itself (writePuback) is
// the one mochi encodes, in every protocol version.
func TestPubackWire(t *testing.T) {
	for _, v := range []byte{3, 4, 5} {
		for _, id := range []uint16{1, 0x1234, 0xFFFF} {
			pk := packets.Packet{
				FixedHeader:     packets.FixedHeader{Type: packets.Puback},
				PacketID:        id,
				ReasonCode:      packets.CodeSuccess.Code,
				ProtocolVersion: v,
			}
			var buf bytes.Buffer
			if err := pk.PubackEncode(&buf); err != nil {
				t.Fatal(err)
			}
			if got := pubackWire(id); !bytes.Equal(got[:], buf.Bytes()) {
				t.Errorf("v%d id %d: %x, mochi encodes %x", v, id, got, buf.Bytes())
			}
		}
	}
}
