package broker

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// connectBody encodes a CONNECT and returns what follows its fixed header.
func connectBody(f *testing.F, version byte, c packets.ConnectParams) []byte {
	f.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version, Connect: c}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		f.Fatal(err)
	}
	var fh packets.FixedHeader
	b := buf.Bytes()
	if err := fh.Decode(b[0]); err != nil {
		f.Fatal(err)
	}
	// Skip the fixed header: one type byte and the remaining length.
	i := 1
	for b[i]&0x80 != 0 {
		i++
	}
	return b[i+1:]
}

// FuzzConnect feeds arbitrary CONNECT packets through mochi's decoder to
// the hook's decision over the fields it reads (client id, username,
// password, will flag and topic). Whatever the bytes, it must not panic,
// and it may accept only the device's own identity with its password and
// a will that is a publish under the device's own prefix.
func FuzzConnect(f *testing.F) {
	will := func(c packets.ConnectParams, topic string) packets.ConnectParams {
		c.WillFlag, c.WillTopic, c.WillPayload = true, topic, []byte("x")
		return c
	}
	good := packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "dev1", Clean: true, Keepalive: 30,
		UsernameFlag: true, Username: []byte("dev1"), PasswordFlag: true, Password: []byte("pw1")}
	for _, v := range []byte{4, 5} {
		f.Add(v, connectBody(f, v, good))
		f.Add(v, connectBody(f, v, will(good, "devices/dev1/status")))
		f.Add(v, connectBody(f, v, will(good, "devices/dev1/#")))
		f.Add(v, connectBody(f, v, will(good, "devices/dev2/status")))
		other := good
		other.Username = []byte("dev2")
		f.Add(v, connectBody(f, v, other))
		bad := good
		bad.Password = []byte("pw2")
		f.Add(v, connectBody(f, v, bad))
	}
	b, err := New(Options{Addr: "127.0.0.1:0"}, Deps{
		Authenticator:  fakeAuth{"dev1": {password: "pw1", typ: "sensor"}, "dev2": {password: "pw2", typ: "sensor"}},
		PublishHandler: &fakeHandler{errs: map[string]error{}}, Presence: &fakePresence{},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, version byte, body []byte) {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect, Remaining: len(body)}, ProtocolVersion: version}
		if err := pk.ConnectDecode(body); err != nil {
			return // mochi refuses it before the hook
		}
		if pk.ConnectValidate() != packets.CodeSuccess {
			return
		}
		typ, v := b.connectVerdict(&pk.Connect)
		if v.why != "" {
			if typ != "" {
				t.Fatalf("refused (%s) with a type %q", v.why, typ)
			}
			return
		}
		c := pk.Connect
		id, user, pw := c.ClientIdentifier, string(c.Username), string(c.Password)
		want := map[string]string{"dev1": "pw1", "dev2": "pw2"}[id]
		if id != user || want == "" || pw != want || typ != "sensor" {
			t.Fatalf("accepted client %q user %q password %q (type %q)", id, user, pw, typ)
		}
		if c.WillFlag {
			prefix := "devices/" + id + "/"
			if !strings.HasPrefix(c.WillTopic, prefix) || len(c.WillTopic) == len(prefix) || strings.ContainsAny(c.WillTopic, "+#") {
				t.Fatalf("accepted will topic %q for %s", c.WillTopic, id)
			}
		}
	})
}
