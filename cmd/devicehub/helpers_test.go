package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
)

// e2eHub is a devicehub binary serving on random ports, with its admin
// token and an API client.
type e2eHub struct {
	*child
	dir   string
	admin string
	api   *client.Client
}

// startE2E writes a configuration (WeatherStation type, random ports,
// extra YAML appended) and starts `devicehub serve` with it.
func startE2E(t *testing.T, extra string) *e2eHub {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "devicehub.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
mqtt: {addr: "127.0.0.1:0"}
http: {addr: "127.0.0.1:0"}
ingest: {rate_limit: {rate: 0, burst: 0}}
device_types:
  WeatherStation:
    fields:
      temperature: {type: float}
%s`, dir, extra)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, cfgPath)
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(tok))
	return &e2eHub{child: c, dir: dir, admin: admin, api: client.New("http://"+c.http, admin, nil)}
}

func (h *e2eHub) url() string { return "http://" + h.http }

// cli runs the devicehub binary with args against the hub (as the token
// given, "" for the admin's) and returns its stdout, stderr and exit code.
func (h *e2eHub) cli(t *testing.T, token string, args ...string) (string, string, int) {
	t.Helper()
	if token == "" {
		token = h.admin
	}
	cmd := exec.Command(os.Args[0], append(args, "--server", h.url(), "--token", token)...)
	cmd.Env = append(os.Environ(), "DEVICEHUB_TEST_CHILD=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// cliJSON runs the binary with --output json and decodes its stdout into
// v; the command must succeed.
func (h *e2eHub) cliJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out, errs, code := h.cli(t, "", append(args, "--output", "json")...)
	if code != 0 {
		t.Fatalf("devicehub %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("devicehub %s: output %q: %v", strings.Join(args, " "), out, err)
	}
}

// provision provisions a device with the CLI and returns its credentials.
func (h *e2eHub) provision(t *testing.T, id string) client.Credentials {
	t.Helper()
	var c client.Credentials
	h.cliJSON(t, &c, "provision", id, "--type", "WeatherStation")
	return c
}

// mqttResult is the outcome of an MQTT v5 CONNECT.
type mqttResult struct {
	cl   *paho.Client
	code byte // CONNACK reason code; 0 accepted
}

// connect connects a real paho v5 client as id with password; the
// connection is closed when the test ends.
func (h *e2eHub) connect(t *testing.T, id, password string) mqttResult {
	t.Helper()
	conn, err := net.Dial("tcp", h.mqtt)
	if err != nil {
		t.Fatal(err)
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := cl.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Username: id, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
	if ca == nil {
		conn.Close()
		if err == nil {
			err = errors.New("no CONNACK")
		}
		t.Fatalf("connect %s: %v", id, err)
	}
	if ca.ReasonCode != 0 {
		conn.Close()
		return mqttResult{code: ca.ReasonCode}
	}
	t.Cleanup(func() {
		_ = cl.Disconnect(&paho.Disconnect{})
		conn.Close()
	})
	return mqttResult{cl: cl}
}

// mustConnect connects and publishes one reading with QoS 1.
func (h *e2eHub) mustConnect(t *testing.T, id, password string) *paho.Client {
	t.Helper()
	r := h.connect(t, id, password)
	if r.code != 0 {
		t.Fatalf("connect %s: CONNACK 0x%02x", id, r.code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := r.cl.Publish(ctx, &paho.Publish{Topic: "devices/" + id + "/data", QoS: 1, Payload: []byte(`{"temperature":21.5}`)})
	if err != nil || pr.ReasonCode >= 0x80 {
		t.Fatalf("publish as %s: %v %+v", id, err, pr)
	}
	return r.cl
}

// refused asserts that id cannot connect with password, with the CONNACK
// reason code want.
func (h *e2eHub) refused(t *testing.T, id, password string, want byte) {
	t.Helper()
	if r := h.connect(t, id, password); r.code != want {
		t.Fatalf("connect %s: CONNACK 0x%02x, want 0x%02x", id, r.code, want)
	}
}

// waitClosed waits until the hub has closed cl's connection.
func waitClosed(t *testing.T, cl *paho.Client) {
	t.Helper()
	select {
	case <-cl.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the hub did not close the connection")
	}
}

// apiCall sends a JSON request with a bearer token ("" for none) and
// returns the status and the decoded body.
func apiCall(t *testing.T, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	var rd *strings.Reader
	if body == "" {
		rd = strings.NewReader("")
	} else {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// apiCode returns the error code of an error answer.
func apiCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// codeOf returns the API error code in err's chain.
func codeOf(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
