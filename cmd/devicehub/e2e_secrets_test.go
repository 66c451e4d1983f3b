package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
)

// connectPacket encodes an MQTT 3.1.1 CONNECT.
func connectPacket(t *testing.T, id, password string) []byte {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Clean: true, Keepalive: 30,
			UsernameFlag: true, Username: []byte(id), PasswordFlag: true, Password: []byte(password)}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// secretForms are the ways a secret shows in a log line: plainly,
// base64-encoded (JSON's []byte) or as byte values (%v of a []byte).
func secretForms(s string) []string {
	return []string{s, base64.StdEncoding.EncodeToString([]byte(s)), base64.RawStdEncoding.EncodeToString([]byte(s)),
		strings.Trim(fmt.Sprint([]byte(s)), "[]")}
}

// Finding 7: an end-to-end run at debug level that issues every kind of
// credential (operator provisioning, rotation, registration, provisioning
// tokens and operations, operator tokens), uses them over MQTT and HTTP,
// sends a second CONNECT on an open session (mochi logs that packet), and
// guesses wrong; then every line the hub logged is searched for every
// secret it issued or was sent.
func TestE2ENoSecretInLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	h := startE2E(t, fmt.Sprintf("log: {level: debug}\nregistration: {shared_secret: %q, default_type: WeatherStation}\n", e2eSharedSecret))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev := client.New(h.url(), "", nil)
	secrets := map[string]string{"admin token": h.admin, "shared secret": e2eSharedSecret}
	add := func(what string, c client.Credentials) {
		secrets[what+" password"], secrets[what+" api key"] = c.MQTTPassword, c.APIKey
	}

	c := h.provision(t, "sec-1")
	add("provisioned", c)
	h.mustConnect(t, "sec-1", c.MQTTPassword)
	if st, _ := apiCall(t, "POST", h.url()+"/api/v1/device/data", c.APIKey, `{"temperature":1}`); st != 200 && st != 201 {
		t.Fatalf("data over HTTP: %d", st)
	}

	// A second CONNECT on an open session: mochi logs the packet.
	conn, err := net.Dial("tcp", h.mqtt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := connectPacket(t, "sec-1", c.MQTTPassword)
	if _, err := conn.Write(append(append([]byte(nil), p...), p...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Read(make([]byte, 64)) // the CONNACK, then the connection ends

	rot, err := h.api.RotateDevice(ctx, "sec-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	add("rotated", rot.Credentials)
	h.mustConnect(t, "sec-1", rot.Credentials.MQTTPassword)

	const hwKey = "hardware-key-AA:BB:CC:DD:EE:FF-serial-42"
	secrets["hardware key"] = hwKey
	reg, err := dev.Register(ctx, client.RegisterRequest{SharedSecret: e2eSharedSecret, Key: hwKey})
	if err != nil {
		t.Fatal(err)
	}
	add("registered", reg.Credentials)
	h.mustConnect(t, reg.DeviceID, reg.Credentials.MQTTPassword)

	tok, err := h.api.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{DeviceType: "WeatherStation", AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	secrets["provisioning token"] = tok.Secret
	op, err := dev.CreateOperation(ctx, tok.Secret, "sec-op")
	if err != nil {
		t.Fatal(err)
	}
	secrets["operation secret"] = op.Secret
	st, err := dev.PollOperation(ctx, op.ID, op.Secret)
	if err != nil || st.Credentials == nil {
		t.Fatalf("poll: %+v %v", st, err)
	}
	add("operation", *st.Credentials)

	otok, err := h.api.CreateToken(ctx, "sec-viewer", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	secrets["operator token"] = otok.Secret
	if st, _ := apiCall(t, "GET", h.url()+"/api/v1/devices", otok.Secret, ""); st != 200 {
		t.Fatalf("list with the operator token: %d", st)
	}

	// Wrong guesses of each kind: the guess is not logged either.
	const guess = "guess-0123456789-abcdef"
	secrets["guess"] = guess
	h.refused(t, "sec-1", guess, connackBadCredentials)
	_, _ = dev.Register(ctx, client.RegisterRequest{SharedSecret: guess, Key: hwKey})
	_, _ = dev.CreateOperation(ctx, guess, "")
	_, _ = apiCall(t, "GET", h.url()+"/api/v1/devices", guess, "")
	_, _ = apiCall(t, "POST", h.url()+"/api/v1/device/data", guess, `{"temperature":1}`)

	// Everything above is logged by now: the hub logs before it answers,
	// except the end of the double-CONNECT connection, waited for here.
	eventually.True(t, 10*time.Second, "the double CONNECT logged", func() bool {
		for _, l := range h.logLines() {
			if strings.Contains(l, "client disconnected") || strings.Contains(l, "error processing packet") {
				return true
			}
		}
		return false
	})
	// The first-start banner prints the admin token once, for the operator
	// (README tour); it is the one line allowed to, and not a log line.
	var lines []string
	all := h.logLines()
	for i := 0; i < len(all); i++ {
		if strings.Contains(all[i], "Admin token (saved in") {
			i++ // the token itself, on the next line
			continue
		}
		lines = append(lines, all[i])
	}
	if len(lines) < 20 {
		t.Fatalf("only %d log lines: is debug logging on?", len(lines))
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s: empty", what)
		}
		for _, form := range secretForms(s) {
			for _, l := range lines {
				if strings.Contains(l, form) {
					t.Errorf("%s in a log line: %s", what, l)
				}
			}
		}
	}
}
