package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// takenHandler is a PublishStarter that records every message it is
// handed and stores it at once (its done callback on a goroutine of its
// own, as the committer's); a QoS 2 message goes to HandlePublish, and is
// recorded too.
type takenHandler struct {
	mu      sync.Mutex
	got     []Publish
	started atomic.Int64 // StartPublish calls
	wg      sync.WaitGroup
}

func (h *takenHandler) record(p *Publish) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, *p)
}

func (h *takenHandler) HandlePublish(_ context.Context, p *Publish) error {
	h.record(p)
	return nil
}

func (h *takenHandler) StartPublish(_ context.Context, p *Publish, done func(error)) (bool, error) {
	h.record(p)
	h.started.Add(1)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		done(nil)
	}()
	return true, nil
}

// stored summarises what the handler was handed, in order.
func (h *takenHandler) stored() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range h.got {
		out = append(out, fmt.Sprintf("%s qos=%d utf8=%v type=%q %q", p.Topic, p.QoS, p.PayloadFormatUTF8, p.ContentType, p.Payload))
	}
	return out
}

// rawPublish encodes a PUBLISH byte by byte (mochi's encoder refuses
// some of the malformed ones the tests send): version 4 or 5, the raw v5
// properties props (after their length).
func rawPublish(version, qos byte, retain bool, topic string, id uint16, props []byte, payload string) []byte {
	var body []byte
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	if qos > 0 {
		body = append(body, byte(id>>8), byte(id))
	}
	if version == 5 {
		body = appendVarint(body, len(props))
		body = append(body, props...)
	}
	body = append(body, payload...)
	first := byte(0x30) | qos<<1
	if retain {
		first |= 1
	}
	return append(appendVarint([]byte{first}, len(body)), body...)
}

// appendVarint appends n as an MQTT variable byte integer.
func appendVarint(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// Raw v5 publish properties.
func propAlias(a uint16) []byte { return []byte{0x23, byte(a >> 8), byte(a)} }

func propContentType(s string) []byte {
	return append([]byte{0x03, byte(len(s) >> 8), byte(len(s))}, s...)
}

// rawConnect encodes the CONNECT of a device of the test harness with
// protocol version 4 or 5.
func rawConnect(t testing.TB, version byte, id, pw string) []byte {
	t.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: id, UsernameFlag: true, Username: []byte(id), PasswordFlag: true, Password: []byte(pw),
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// answerOf names a packet the broker sent: its type, and the packet id
// and reason code of an acknowledgement, the reason code of a DISCONNECT.
func answerOf(first byte, body []byte) string {
	name := map[byte]string{2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 7: "PUBCOMP", 13: "PINGRESP", 14: "DISCONNECT"}[first>>4]
	if name == "" {
		name = fmt.Sprintf("type %d", first>>4)
	}
	switch first >> 4 {
	case 4, 5, 7:
		if len(body) >= 2 {
			name += fmt.Sprintf(" %d", int(body[0])<<8|int(body[1]))
		}
		if len(body) >= 3 {
			name += fmt.Sprintf(" %#02x", body[2])
		}
	case 14:
		if len(body) >= 1 {
			name += fmt.Sprintf(" %#02x", body[0])
		}
	}
	return name
}

// exchangeOutcome is what a device saw and the hub did for its packets.
type exchangeOutcome struct {
	answers  []string // what the broker sent after the CONNACK, sorted (a PUBACK of a stored message comes from the writer, in no fixed order with the inline answers)
	closed   bool     // the broker closed the connection
	stored   []string // what the PublishHandler was handed
	counters string   // mochi's $SYS figures and the broker's accounting
}

// exchange connects device dev1 with the protocol version to a broker
// with opts whose PublishHandler is a takenHandler, sends pks and a
// PINGREQ, and returns what came of them: the answers up to the PINGRESP
// and the PUBACKs of every message stored, or up to the broker closing
// the connection.
func exchange(t *testing.T, opts Options, version byte, pks [][]byte) exchangeOutcome {
	t.Helper()
	th := &takenHandler{}
	h := startOpts(t, opts, th)
	t.Cleanup(th.wg.Wait)
	if own := h.b.starter != nil; own == opts.mochiPublish {
		t.Fatalf("the read loop takes QoS 1 publishes in itself = %v with mochiPublish %v", own, opts.mochiPublish)
	}
	conn, err := net.Dial("tcp", h.b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a failure, not a synchronisation
	r := bufio.NewReader(conn)
	if _, err := conn.Write(rawConnect(t, version, "dev1", "pw1")); err != nil {
		t.Fatal(err)
	}
	first, body, err := readPacket311(r)
	if err != nil || first>>4 != packets.Connack || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: %#x % x, %v", first, body, err)
	}
	// Written as one, so that the broker reads them together, as a
	// device's pipelined publishes; the broker may close before the end.
	var in []byte
	for _, pk := range pks {
		in = append(in, pk...)
	}
	_, _ = conn.Write(append(in, 0xC0, 0))

	var out exchangeOutcome
	pong, acked := false, int64(0)
	for !pong || acked < th.started.Load() {
		first, body, err := readPacket311(r)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no answer in time; so far %v", out.answers)
			}
			out.closed = true
			break
		}
		s := answerOf(first, body)
		out.answers = append(out.answers, s)
		switch {
		case first>>4 == packets.Pingresp:
			pong = true
		case first>>4 == packets.Puback && (len(body) == 2 || body[2] == 0):
			acked++
		}
	}
	slices.Sort(out.answers)
	if out.closed {
		// The counters are final once the session's end cleared its
		// inflight store and removed the client (a clean start).
		checkFor(t, 10*time.Second, "the session did not end", func() bool {
			_, ok := h.b.server.Clients.Get("dev1")
			return !ok
		})
	}
	out.stored = th.stored()
	info := h.b.server.Info
	out.counters = fmt.Sprintf("packets=%d messages=%d bytes=%d inflight=%d retained=%d dropped=%d activity=%d",
		atomic.LoadInt64(&info.PacketsReceived), atomic.LoadInt64(&info.MessagesReceived), atomic.LoadInt64(&info.BytesReceived),
		atomic.LoadInt64(&info.Inflight), atomic.LoadInt64(&info.Retained), atomic.LoadInt64(&info.MessagesDropped),
		h.presence.activity.Load())
	return out
}

// TestOwnPublishAsMochi: a device's QoS 1 PUBLISH taken in by the read
// loop (publish.go) gets what mochi's processing gave it, check by check:
// the same answers, the same connection kept or closed, the same
// messages stored, the same counters; each row is sent through both
// paths.
func TestOwnPublishAsMochi(t *testing.T) {
	const data = "devices/dev1/data"
	pub5 := func(topic string, id uint16, props ...[]byte) []byte {
		return rawPublish(5, 1, false, topic, id, slices.Concat(props...), `{"t":1}`)
	}
	pub4 := func(topic string, id uint16) []byte { return rawPublish(4, 1, false, topic, id, nil, `{"t":1}`) }
	stored := func(topic string, qos byte) string {
		return fmt.Sprintf("%s qos=%d utf8=false type=\"\" %q", topic, qos, `{"t":1}`)
	}
	for _, tt := range []struct {
		name    string
		opts    Options
		version byte
		pks     [][]byte
		answers []string
		closed  bool
		stored  []string
	}{
		{name: "stored", version: 5, pks: [][]byte{pub5(data, 1)},
			answers: []string{"PINGRESP", "PUBACK 1"}, stored: []string{stored(data, 1)}},
		{name: "stored, 3.1.1", version: 4, pks: [][]byte{pub4(data, 1)},
			answers: []string{"PINGRESP", "PUBACK 1"}, stored: []string{stored(data, 1)}},
		{name: "pipelined, in order", version: 5, pks: [][]byte{pub5(data, 1), pub5(data+"/2", 2), pub5(data+"/3", 3)},
			answers: []string{"PINGRESP", "PUBACK 1", "PUBACK 2", "PUBACK 3"}, stored: []string{stored(data, 1), stored(data+"/2", 1), stored(data+"/3", 1)}},
		{name: "payload format and content type", version: 5, pks: [][]byte{pub5(data, 1, []byte{0x01, 1}, propContentType("application/json"))},
			answers: []string{"PINGRESP", "PUBACK 1"}, stored: []string{data + ` qos=1 utf8=true type="application/json" "{\"t\":1}"`}},
		{name: "retain flag: stored, not retained", version: 5, pks: [][]byte{rawPublish(5, 1, true, data, 1, nil, `{"t":1}`)},
			answers: []string{"PINGRESP", "PUBACK 1"}, stored: []string{stored(data, 1)}},
		{name: "packet id 0", version: 5, pks: [][]byte{pub5(data, 0)},
			answers: []string{"DISCONNECT 0x82"}, closed: true},
		{name: "packet id 0, 3.1.1", version: 4, pks: [][]byte{pub4(data, 0)},
			closed: true},
		{name: "wildcard in the topic", version: 5, pks: [][]byte{pub5("devices/dev1/+", 1)},
			answers: []string{"DISCONNECT 0x82"}, closed: true},
		{name: "no topic, no alias", version: 5, pks: [][]byte{pub5("", 1)},
			answers: []string{"DISCONNECT 0x82"}, closed: true},
		{name: "topic alias beyond the maximum", version: 5, pks: [][]byte{pub5(data, 1, propAlias(17))},
			answers: []string{"DISCONNECT 0x94"}, closed: true},
		{name: "topic alias 0", version: 5, pks: [][]byte{pub5(data, 1, propAlias(0))},
			answers: []string{"DISCONNECT 0x94"}, closed: true},
		{name: "subscription identifier", version: 5, pks: [][]byte{pub5(data, 1, []byte{0x0B, 1})},
			answers: []string{"DISCONNECT 0x82"}, closed: true},
		{name: "$SYS topic: dropped unanswered", version: 5, pks: [][]byte{pub5("$SYS/broker/x", 1), pub5(data, 2)},
			answers: []string{"PINGRESP", "PUBACK 2"}, stored: []string{stored(data, 1)}},
		{name: "not authorized", version: 5, pks: [][]byte{pub5("devices/dev2/data", 1), pub5(data, 2)},
			answers: []string{"PINGRESP", "PUBACK 1 0x87", "PUBACK 2"}, stored: []string{stored(data, 1)}},
		{name: "not authorized, 3.1.1", version: 4, pks: [][]byte{pub4("devices/dev2/data", 1), pub4(data, 2)},
			answers: []string{"DISCONNECT"}, closed: true},
		{name: "topic alias set, then used alone (the ACL sees no topic, as with mochi)", version: 5,
			pks:     [][]byte{pub5(data, 1, propAlias(3)), pub5("", 2, propAlias(3)), pub5(data+"/b", 3, propAlias(3))},
			answers: []string{"PINGRESP", "PUBACK 1", "PUBACK 2 0x87", "PUBACK 3"}, stored: []string{stored(data, 1), stored(data+"/b", 1)}},
		{name: "packet id of an unreleased QoS 2 publish", version: 5,
			pks:     [][]byte{rawPublish(5, 2, false, data, 5, nil, `{"t":1}`), pub5(data+"/b", 5)},
			answers: []string{"PINGRESP", "PUBREC 5", "PUBREC 5 0x91"}, stored: []string{stored(data, 2)}},
		{name: "receive maximum used up by QoS 2", version: 5, opts: Options{ReceiveMaximum: 1},
			pks:     [][]byte{rawPublish(5, 2, false, data, 1, nil, `{"t":1}`), pub5(data+"/b", 2)},
			answers: []string{"DISCONNECT 0x93", "PUBREC 1"}, closed: true, stored: []string{stored(data, 2)}},
		{name: "packet too large", version: 5, opts: Options{MaxPacketSize: 64},
			pks:    [][]byte{rawPublish(5, 1, false, data, 1, nil, strings.Repeat("x", 100))},
			closed: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			own := exchange(t, tt.opts, tt.version, tt.pks)
			opts := tt.opts
			opts.mochiPublish = true
			mochi := exchange(t, opts, tt.version, tt.pks)
			if !reflect.DeepEqual(own, mochi) {
				t.Errorf("taken in by the read loop:\n%+v\nthrough mochi:\n%+v", own, mochi)
			}
			if !slices.Equal(own.answers, tt.answers) || own.closed != tt.closed || !slices.Equal(own.stored, tt.stored) {
				t.Errorf("answers %q, closed %v, stored %q\nwant %q, closed %v, stored %q", own.answers, own.closed, own.stored, tt.answers, tt.closed, tt.stored)
			}
		})
	}
}

// TestOwnPublishLeavesCommandInFlight: a device's QoS 1 publish with the
// packet id of a command of the hub that awaits the device's PUBACK
// leaves the command in flight when the read loop takes it in; mochi
// deletes the command from the inflight store (publish.go).
func TestOwnPublishLeavesCommandInFlight(t *testing.T) {
	for _, tt := range []struct {
		name         string
		mochiPublish bool
		kept         bool
	}{
		{"taken in by the read loop", false, true},
		{"through mochi", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := newStoredHandler()
			st.run(t)
			h := startOpts(t, Options{mochiPublish: tt.mochiPublish}, st)
			conn, r, code := dial311(t, h.b.Addr(), "dev1", "dev1", "pw1")
			if code != 0 {
				t.Fatalf("return code %#x", code)
			}
			next := func(want byte) []byte {
				t.Helper()
				typ, body, err := readPacket311(r)
				if err != nil || typ>>4 != want {
					t.Fatalf("got packet %#x % x, %v; want type %d", typ, body, err, want)
				}
				return body
			}
			if _, err := conn.Write(subscribe311("devices/dev1/commands/+", 1)); err != nil {
				t.Fatal(err)
			}
			next(packets.Suback)
			if err := h.b.Publish("devices/dev1/commands/reboot", []byte("{}"), false, 1); err != nil {
				t.Fatal(err)
			}
			body := next(packets.Publish)
			n := int(body[0])<<8 | int(body[1])
			id := uint16(body[2+n])<<8 | uint16(body[3+n])
			if _, err := conn.Write(publish311("devices/dev1/data", "{}", id)); err != nil {
				t.Fatal(err)
			}
			if ack := next(packets.Puback); uint16(ack[0])<<8|uint16(ack[1]) != id {
				t.Fatalf("PUBACK % x, want packet id %d", ack, id)
			}
			cl, ok := h.b.server.Clients.Get("dev1")
			if !ok {
				t.Fatal("no client")
			}
			if _, kept := cl.State.Inflight.Get(id); kept != tt.kept {
				t.Fatalf("command %d in flight = %v, want %v", id, kept, tt.kept)
			}
		})
	}
}

// TestReceiveQuotaAccess: the receive quota is found in mochi's inflight
// store and read as its methods leave it; a type without it is refused.
func TestReceiveQuotaAccess(t *testing.T) {
	off, err := findReceiveQuota(reflect.TypeFor[mqtt.Inflight]())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkReceiveQuota(off); err != nil {
		t.Fatal(err)
	}
	//lint:ignore U1000 its fields are read through reflect only
	type wider struct{ receiveQuota int64 }
	for _, typ := range []reflect.Type{reflect.TypeFor[struct{ sendQuota int32 }](), reflect.TypeFor[wider]()} {
		if _, err := findReceiveQuota(typ); err == nil {
			t.Errorf("receive quota found in %s", typ)
		}
	}
}

// FuzzPublishInput sends arbitrary bytes after a valid MQTT 5 CONNECT to
// a broker whose read loop takes QoS 1 publishes in itself (publish.go):
// v5 properties (topic aliases, subscription identifiers, payload
// format) reach its checks. Whatever they are, the broker must not
// panic, must hand on only messages under the device's own prefix, must
// end the connection once the device closes its side, and must still
// serve the next device.
func FuzzPublishInput(f *testing.F) {
	const data = "devices/dev1/data"
	f.Add(rawPublish(5, 1, false, data, 1, nil, `{"t":1}`))
	f.Add(rawPublish(5, 1, false, data, 0, nil, `{"t":1}`))
	f.Add(rawPublish(5, 1, false, "devices/dev1/+", 1, nil, ""))
	f.Add(rawPublish(5, 1, true, data, 1, slices.Concat([]byte{0x01, 1}, propContentType("application/json")), `{"t":1}`))
	f.Add(slices.Concat(rawPublish(5, 1, false, data, 1, propAlias(3), "a"), rawPublish(5, 1, false, "", 2, propAlias(3), "b")))
	f.Add(rawPublish(5, 1, false, data, 1, propAlias(17), ""))
	f.Add(rawPublish(5, 1, false, data, 1, []byte{0x0B, 1}, ""))
	f.Add(rawPublish(5, 1, false, "devices/dev2/data", 1, nil, ""))
	f.Add(rawPublish(5, 1, false, "$SYS/x", 1, nil, ""))
	f.Add(slices.Concat(rawPublish(5, 2, false, data, 5, nil, ""), rawPublish(5, 1, false, data, 5, nil, "")))
	f.Add(rawPublish(5, 1, false, data, 1, []byte{0x23, 0}, "")) // a property cut short
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) > 4096 {
			return
		}
		th := &takenHandler{}
		h := startWith(t, th)
		t.Cleanup(th.wg.Wait)
		if h.b.starter == nil {
			t.Fatal("the read loop does not take QoS 1 publishes in")
		}
		conn, err := net.Dial("tcp", h.b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a failure, not a synchronisation
		if _, err := conn.Write(slices.Concat(rawConnect(t, 5, "dev1", "pw1"), input)); err != nil {
			t.Fatal(err)
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, conn); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection did not end after the device closed its side: %v", err)
			}
		}
		for _, s := range th.stored() {
			if !strings.HasPrefix(s, "devices/dev1/") {
				t.Fatalf("handed on a message outside the device's prefix: %s", s)
			}
		}
		next, err := net.Dial("tcp", h.b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer next.Close()
		_ = next.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := next.Write(append(rawConnect(t, 5, "dev2", "pw2"), 0xC0, 0)); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(next)
		for _, want := range []byte{packets.Connack, packets.Pingresp} {
			if typ, body, err := readPacket311(r); err != nil || typ>>4 != want {
				t.Fatalf("next device got %#x % x, %v; want packet type %d", typ, body, err, want)
			}
		}
	})
}
