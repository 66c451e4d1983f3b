package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
)

// CONNACK reason codes the hub answers a refused device with.
const (
	connackBadCredentials = 0x86
	connackNotAuthorized  = 0x87
)

const e2eSharedSecret = "e2e-shared-secret-0123"

// TestE2EProvisioning runs every way of provisioning against the real
// binary on random ports, each to a device that connects over MQTT with
// what it got, and the ways of taking credentials away.
func TestE2EProvisioning(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	h := startE2E(t, fmt.Sprintf("registration: {shared_secret: %q}\nbroker_auth: {enabled: true, addr: \"127.0.0.1:0\"}\n", e2eSharedSecret))
	ctx := context.Background()
	dev := client.New(h.url(), "", nil) // a device: no operator token

	t.Run("operator provisions", func(t *testing.T) {
		c := h.provision(t, "op-1")
		if c.DeviceID != "op-1" || c.MQTTPassword == "" {
			t.Fatalf("credentials %+v", c)
		}
		h.mustConnect(t, "op-1", c.MQTTPassword)
		// Re-provisioning: new credentials, the old ones stop working.
		var again client.Credentials
		h.cliJSON(t, &again, "provision", "op-1", "--type", "WeatherStation", "--replace")
		h.refused(t, "op-1", c.MQTTPassword, connackBadCredentials)
		h.mustConnect(t, "op-1", again.MQTTPassword)
	})

	t.Run("token, operation, approval with another id", func(t *testing.T) {
		var tok client.ProvisioningToken
		h.cliJSON(t, &tok, "provisioning", "tokens", "create", "--type", "WeatherStation", "--group", "field", "--max-uses", "5")
		op, err := dev.CreateOperation(ctx, tok.Secret, "asked-1")
		if err != nil {
			t.Fatal(err)
		}
		if st, err := dev.PollOperation(ctx, op.ID, op.Secret); err != nil || st.Status != "pending" || st.Credentials != nil {
			t.Fatalf("poll before approval: %+v %v", st, err)
		}
		out, _, code := h.cli(t, "", "provisioning", "list")
		if code != 0 || !strings.Contains(out, op.ID) || !strings.Contains(out, op.VerificationCode) {
			t.Fatalf("provisioning list (exit %d) does not show %s with its code %s:\n%s", code, op.ID, op.VerificationCode, out)
		}
		if _, errs, code := h.cli(t, "", "provisioning", "approve", op.ID, "--device-id", "over-1"); code != 0 {
			t.Fatalf("approve: exit %d: %s", code, errs)
		}
		st, err := dev.PollOperation(ctx, op.ID, op.Secret)
		if err != nil || st.Status != "approved" || st.DeviceID != "over-1" || st.Credentials == nil {
			t.Fatalf("poll after approval: %+v %v", st, err)
		}
		if _, err := dev.PollOperation(ctx, op.ID, op.Secret); codeOf(err) != "already_delivered" {
			t.Fatalf("second poll: %v, want already_delivered", err)
		}
		h.mustConnect(t, "over-1", st.Credentials.MQTTPassword)
		d, err := h.api.GetDevice(ctx, "over-1")
		if err != nil || d.Group != "field" {
			t.Errorf("device %+v %v", d, err)
		}
		// The operation is decided: approving again is a conflict, and
		// the CLI says so with exit code 1.
		if _, errs, code := h.cli(t, "", "provisioning", "approve", op.ID); code != 1 || !strings.Contains(errs, "operation_decided") {
			t.Errorf("approve twice: exit %d: %s", code, errs)
		}
	})

	t.Run("auto-approving token", func(t *testing.T) {
		tok, err := h.api.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{DeviceType: "WeatherStation", AutoApprove: true})
		if err != nil {
			t.Fatal(err)
		}
		op, err := dev.CreateOperation(ctx, tok.Secret, "auto-1")
		if err != nil {
			t.Fatal(err)
		}
		st, err := dev.PollOperation(ctx, op.ID, op.Secret)
		if err != nil || st.Status != "approved" || st.Credentials == nil {
			t.Fatalf("poll: %+v %v", st, err)
		}
		h.mustConnect(t, "auto-1", st.Credentials.MQTTPassword)
	})

	t.Run("token expiry", func(t *testing.T) {
		exp := time.Now().Add(time.Second)
		tok, err := h.api.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{DeviceType: "WeatherStation", ExpiresAt: &exp})
		if err != nil {
			t.Fatal(err)
		}
		var last error
		eventually.True(t, 10*time.Second, "token refused as expired", func() bool {
			_, last = dev.CreateOperation(ctx, tok.Secret, "")
			return last != nil
		})
		if codeOf(last) != "token_expired" || client.StatusOf(last) != 401 {
			t.Fatalf("expired token: %v", last)
		}
	})

	t.Run("token quota", func(t *testing.T) {
		tok, err := h.api.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{DeviceType: "WeatherStation", MaxUses: 2})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := dev.CreateOperation(ctx, tok.Secret, ""); err != nil {
				t.Fatalf("use %d: %v", i+1, err)
			}
		}
		if _, err := dev.CreateOperation(ctx, tok.Secret, ""); codeOf(err) != "token_exhausted" || client.StatusOf(err) != 403 {
			t.Fatalf("third use: %v", err)
		}
		toks, err := h.api.ListProvisioningTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range toks {
			if tt.ID == tok.ID && tt.Uses != 2 {
				t.Errorf("uses %d, want 2", tt.Uses)
			}
		}
	})

	t.Run("revoked token", func(t *testing.T) {
		tok, err := h.api.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{DeviceType: "WeatherStation"})
		if err != nil {
			t.Fatal(err)
		}
		if _, errs, code := h.cli(t, "", "provisioning", "tokens", "revoke", tok.ID); code != 0 {
			t.Fatalf("revoke: exit %d %s", code, errs)
		}
		if _, err := dev.CreateOperation(ctx, tok.Secret, ""); codeOf(err) != "token_revoked" {
			t.Fatalf("revoked token: %v", err)
		}
		if _, err := dev.CreateOperation(ctx, "dhp_not-a-token", ""); codeOf(err) != "invalid_token" {
			t.Fatalf("unknown token: %v", err)
		}
	})

	t.Run("rejected operation", func(t *testing.T) {
		tok, err := h.api.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{DeviceType: "WeatherStation"})
		if err != nil {
			t.Fatal(err)
		}
		op, err := dev.CreateOperation(ctx, tok.Secret, "rej-1")
		if err != nil {
			t.Fatal(err)
		}
		if _, errs, code := h.cli(t, "", "provisioning", "reject", op.ID, "--reason", "not ours"); code != 0 {
			t.Fatalf("reject: exit %d %s", code, errs)
		}
		st, err := dev.PollOperation(ctx, op.ID, op.Secret)
		if err != nil || st.Status != "rejected" || st.Reason != "not ours" || st.Credentials != nil {
			t.Fatalf("poll: %+v %v", st, err)
		}
		if _, err := h.api.ApproveOperation(ctx, op.ID, ""); codeOf(err) != "operation_rejected" {
			t.Fatalf("approve rejected: %v", err)
		}
		if _, err := h.api.GetDevice(ctx, "rej-1"); client.StatusOf(err) != 404 {
			t.Errorf("rejected device exists: %v", err)
		}
	})

	t.Run("self-registration and factory reset", func(t *testing.T) {
		req := client.RegisterRequest{SharedSecret: e2eSharedSecret, Key: "mac-00:11:22:33:44:55", Type: "WeatherStation", DeviceID: "reg-1"}
		first, err := dev.Register(ctx, req)
		if err != nil || !first.IsNew || first.DeviceID != "reg-1" {
			t.Fatalf("register: %+v %v", first, err)
		}
		h.mustConnect(t, "reg-1", first.Credentials.MQTTPassword)
		again, err := dev.Register(ctx, req)
		if err != nil || again.IsNew || again.DeviceID != "reg-1" {
			t.Fatalf("register again: %+v %v", again, err)
		}
		h.refused(t, "reg-1", first.Credentials.MQTTPassword, connackBadCredentials)
		h.mustConnect(t, "reg-1", again.Credentials.MQTTPassword)
		req.SharedSecret = "wrong-secret-0123456"
		if _, err := dev.Register(ctx, req); codeOf(err) != "bad_shared_secret" {
			t.Errorf("bad shared secret: %v", err)
		}
	})

	t.Run("rotation overlap", func(t *testing.T) {
		old := h.provision(t, "rot-1")
		var r client.Rotated
		h.cliJSON(t, &r, "devices", "rotate", "rot-1", "--overlap", "1h")
		if r.OldValidUntil == nil || r.Credentials.MQTTPassword == "" {
			t.Fatalf("rotated %+v", r)
		}
		// Both work until the new ones are used.
		h.mustConnect(t, "rot-1", old.MQTTPassword)
		h.mustConnect(t, "rot-1", old.MQTTPassword)
		h.mustConnect(t, "rot-1", r.Credentials.MQTTPassword)
		h.refused(t, "rot-1", old.MQTTPassword, connackBadCredentials)
		h.mustConnect(t, "rot-1", r.Credentials.MQTTPassword)

		// Without an overlap the old ones stop at once.
		var r2 client.Rotated
		h.cliJSON(t, &r2, "devices", "rotate", "rot-1", "--overlap", "0s")
		h.refused(t, "rot-1", r.Credentials.MQTTPassword, connackBadCredentials)
		h.mustConnect(t, "rot-1", r2.Credentials.MQTTPassword)
	})

	t.Run("disable cuts off, enable lets in", func(t *testing.T) {
		c := h.provision(t, "dis-1")
		live := h.mustConnect(t, "dis-1", c.MQTTPassword)
		if _, errs, code := h.cli(t, "", "devices", "disable", "dis-1", "--reason", "stolen"); code != 0 {
			t.Fatalf("disable: exit %d %s", code, errs)
		}
		waitClosed(t, live)
		h.refused(t, "dis-1", c.MQTTPassword, connackNotAuthorized)
		if st, _ := apiCall(t, "POST", h.url()+"/api/v1/device/data", c.APIKey, `{"temperature":1}`); st != 403 {
			t.Errorf("disabled device posts over HTTP: %d", st)
		}
		if _, errs, code := h.cli(t, "", "devices", "enable", "dis-1"); code != 0 {
			t.Fatalf("enable: exit %d %s", code, errs)
		}
		h.mustConnect(t, "dis-1", c.MQTTPassword)
	})

	t.Run("revoke cuts off", func(t *testing.T) {
		c := h.provision(t, "rev-1")
		live := h.mustConnect(t, "rev-1", c.MQTTPassword)
		if _, errs, code := h.cli(t, "", "devices", "revoke", "rev-1"); code != 0 {
			t.Fatalf("revoke: exit %d %s", code, errs)
		}
		waitClosed(t, live)
		h.refused(t, "rev-1", c.MQTTPassword, connackBadCredentials)
		if st, _ := apiCall(t, "POST", h.url()+"/api/v1/device/data", c.APIKey, `{"temperature":1}`); st != 401 {
			t.Errorf("revoked device posts over HTTP: %d", st)
		}
		// Rotating gives it working credentials again.
		var r client.Rotated
		h.cliJSON(t, &r, "devices", "rotate", "rev-1")
		h.mustConnect(t, "rev-1", r.Credentials.MQTTPassword)
	})

	t.Run("roles", func(t *testing.T) { testE2ERoles(t, h) })
	t.Run("broker auth answers like the embedded broker", func(t *testing.T) { testE2EBrokerAuth(t, h) })
}

// testE2ERoles creates a token of each role with `devicehub token create`
// and tries a representative set of endpoints with each, and without one.
func testE2ERoles(t *testing.T, h *e2eHub) {
	tokens := map[string]string{"": ""}
	for _, role := range []string{"viewer", "operator", "admin"} {
		var tok client.Token
		h.cliJSON(t, &tok, "token", "create", "--name", "e2e-"+role, "--role", role)
		tokens[role] = tok.Secret
	}
	h.provision(t, "role-1")
	rank := map[string]int{"": 0, "viewer": 1, "operator": 2, "admin": 3}
	calls := []struct {
		method, path, body, least string
	}{
		{"GET", "/api/v1/devices", "", "viewer"},
		{"GET", "/api/v1/devices/role-1", "", "viewer"},
		{"GET", "/api/v1/groups", "", "viewer"},
		{"PATCH", "/api/v1/devices/role-1", `{"name":"x"}`, "operator"},
		{"POST", "/api/v1/devices/role-1/disable", "", "operator"},
		{"POST", "/api/v1/devices/role-1/enable", "", "operator"},
		{"POST", "/api/v1/devices/role-1/provision", `{"type":"WeatherStation","replace":true}`, "operator"},
		{"POST", "/api/v1/groups", `{"id":"g-%s"}`, "operator"},
		{"GET", "/api/v1/provisioning/operations", "", "operator"},
		{"POST", "/api/v1/provisioning/tokens", `{"device_type":"WeatherStation"}`, "admin"},
		{"GET", "/api/v1/provisioning/tokens", "", "admin"},
		{"GET", "/api/v1/tokens", "", "admin"},
		{"GET", "/api/v1/audit", "", "admin"},
	}
	for _, c := range calls {
		for _, role := range []string{"", "viewer", "operator", "admin"} {
			body := c.body
			if strings.Contains(body, "%s") {
				body = fmt.Sprintf(body, role)
			}
			st, out := apiCall(t, c.method, h.url()+c.path, tokens[role], body)
			switch {
			case role == "":
				if st != 401 {
					t.Errorf("anonymous %s %s: %d %v", c.method, c.path, st, out)
				}
			case rank[role] >= rank[c.least]:
				if st >= 300 {
					t.Errorf("%s %s %s: %d %v", role, c.method, c.path, st, out)
				}
			default:
				if st != 403 || apiCode(out) != "forbidden" {
					t.Errorf("%s %s %s: %d %v, want 403 forbidden", role, c.method, c.path, st, out)
				}
			}
		}
	}
	// The CLI says the same with its exit codes: 4 for refused.
	if _, _, code := h.cli(t, tokens["viewer"], "devices", "disable", "role-1"); code != 4 {
		t.Errorf("viewer disables: exit %d, want 4", code)
	}
	if _, _, code := h.cli(t, tokens["operator"], "provisioning", "tokens", "list"); code != 4 {
		t.Errorf("operator lists provisioning tokens: exit %d, want 4", code)
	}
	if _, _, code := h.cli(t, tokens["operator"], "devices", "get", "nope"); code != 3 {
		t.Errorf("get unknown device: exit %d, want 3", code)
	}
}

// testE2EBrokerAuth asks /broker/auth and /broker/acl, in EMQX's and
// mosquitto-go-auth's formats, the questions of one table of cases, and
// compares each answer with what the embedded broker does.
func testE2EBrokerAuth(t *testing.T, h *e2eHub) {
	a := h.provision(t, "ba-a")
	h.provision(t, "ba-b")
	d := h.provision(t, "ba-dis")
	if _, errs, code := h.cli(t, "", "devices", "disable", "ba-dis"); code != 0 {
		t.Fatalf("disable: %s", errs)
	}
	ctx := context.Background()
	type check struct {
		name         string
		id, password string
		topic        string // "": a connect check
		write        bool
		allow        bool
	}
	cases := []check{
		{name: "allowed", id: "ba-a", password: a.MQTTPassword, allow: true},
		{name: "wrong password", id: "ba-a", password: "nope"},
		{name: "unknown device", id: "ba-zz", password: "nope"},
		{name: "disabled", id: "ba-dis", password: d.MQTTPassword},
		{name: "own publish", id: "ba-a", password: a.MQTTPassword, topic: "devices/ba-a/data", write: true, allow: true},
		{name: "own subscribe", id: "ba-a", password: a.MQTTPassword, topic: "devices/ba-a/commands/#", allow: true},
		{name: "cross-device publish", id: "ba-a", password: a.MQTTPassword, topic: "devices/ba-b/data", write: true},
		{name: "cross-device subscribe", id: "ba-a", password: a.MQTTPassword, topic: "devices/ba-b/#"},
		{name: "wildcard subscribe", id: "ba-a", password: a.MQTTPassword, topic: "devices/+/data"},
	}
	// Never on the public HTTP address (finding 8): a password oracle
	// there would let anyone guess.
	if st, out := apiCall(t, "POST", h.url()+"/broker/auth?format=emqx", "",
		fmt.Sprintf(`{"clientid":"ba-a","username":"ba-a","password":%q}`, a.MQTTPassword)); st == http.StatusOK {
		t.Errorf("/broker/auth served on the public address: %d %v", st, out)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The embedded broker.
			r := h.connect(t, c.id, c.password)
			var embedded bool
			switch {
			case c.topic == "":
				embedded = r.code == 0
			case r.code != 0:
				t.Fatalf("connect: 0x%02x", r.code)
			case c.write:
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				pr, err := r.cl.Publish(cctx, &paho.Publish{Topic: c.topic, QoS: 1, Payload: []byte(`{"temperature":1}`)})
				cancel()
				embedded = err == nil && pr != nil && pr.ReasonCode < 0x80
			default:
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				sa, err := r.cl.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: c.topic, QoS: 1}}})
				cancel()
				embedded = err == nil && sa != nil && len(sa.Reasons) == 1 && sa.Reasons[0] < 0x80
			}
			if embedded != c.allow {
				t.Errorf("embedded broker: allowed %v, want %v", embedded, c.allow)
			}
			// The HTTP auth endpoints, in both formats.
			path, emqx, mosq := "/broker/auth", fmt.Sprintf(`{"clientid":%q,"username":%q,"password":%q}`, c.id, c.id, c.password), ""
			mosq = emqx
			if c.topic != "" {
				path = "/broker/acl"
				action, acc := "subscribe", 4
				if c.write {
					action, acc = "publish", 2
				}
				emqx = fmt.Sprintf(`{"clientid":%q,"username":%q,"topic":%q,"action":%q}`, c.id, c.id, c.topic, action)
				mosq = fmt.Sprintf(`{"clientid":%q,"username":%q,"topic":%q,"acc":%d}`, c.id, c.id, c.topic, acc)
			}
			authURL := "http://" + h.brokerAuth
			st, out := apiCall(t, "POST", authURL+path+"?format=emqx", "", emqx)
			if got := st == http.StatusOK && out["result"] == "allow"; got != embedded {
				t.Errorf("EMQX %s: %d %v, embedded broker allowed %v", path, st, out, embedded)
			}
			st, out = apiCall(t, "POST", authURL+path+"?format=mosquitto", "", mosq)
			if got := st == http.StatusOK; got != embedded {
				t.Errorf("mosquitto %s: %d %v, embedded broker allowed %v", path, st, out, embedded)
			}
		})
	}
}
