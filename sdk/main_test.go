package sdk_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/hub"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/sdk"
)

// TestMain lets the test binary act as a device program or as the hub, for
// the tests that kill one of them with SIGKILL (see children_test.go).
func TestMain(m *testing.M) {
	switch os.Getenv("SDK_TEST_ROLE") {
	case "":
	case "hub":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := hub.Serve(ctx, os.Getenv("SDK_TEST_CONFIG"), config.Overrides{})
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "hub:", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		os.Exit(deviceChild())
	}
	goleak.VerifyTestMain(m,
		// Only the test client's idle keep-alive connections may remain
		// (see internal/hub's TestMain).
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	)
}

const testTypes = `
device_types:
  Meter:
    fields:
      seq:         {type: int}
      temperature: {type: float}
      blob:        {type: string}
    max_payload_bytes: 4194304
    commands: [reboot, set_interval]
`

// freePort returns a TCP address that was free a moment ago, for a hub
// that must come back on the same port.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// hubConfig writes a hub configuration in dir and returns its path.
func hubConfig(t testing.TB, dir, mqttAddr string) string {
	t.Helper()
	if mqttAddr == "" {
		mqttAddr = "127.0.0.1:0"
	}
	yaml := fmt.Sprintf("data_dir: %s\nmqtt:\n  addr: %s\nhttp:\n  addr: 127.0.0.1:0\ningest: {rate_limit: {rate: 0, burst: 0}}\ncommit: {linger: 0s}\n%s", dir, mqttAddr, testTypes)
	path := filepath.Join(dir, "devicehub.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type testHub struct {
	*hub.Hub
	dir   string
	token string
	api   *client.Client
	stop  func()
}

// startHub runs a hub in this process on dir (a new temporary directory if
// ""), with its MQTT listener on mqttAddr ("" for a random port).
func startHub(t testing.TB, dir, mqttAddr string) *testHub {
	t.Helper()
	return startHubWith(t, dir, mqttAddr, nil)
}

// startHubWith is startHub with a change to the loaded configuration
// (which may set what the configuration file would refuse, such as a short
// provisioning.operation_ttl).
func startHubWith(t testing.TB, dir, mqttAddr string, change func(*config.Config)) *testHub {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg, err := config.Load(hubConfig(t, dir, mqttAddr), func(string) (string, bool) { return "", false }, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h, err := hub.New(ctx, cfg, testLogger())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-h.Ready():
	case err := <-done:
		t.Fatalf("hub stopped before ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("hub not ready after 20s")
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	th := &testHub{Hub: h, dir: dir, token: strings.TrimSpace(string(tok)), stop: stop}
	th.api = client.New("http://"+h.HTTPAddr(), th.token, nil)
	return th
}

func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("SDK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// provision creates a device through the REST API.
func provision(t testing.TB, api *client.Client, id string) *sdk.Credentials {
	t.Helper()
	p, err := api.ProvisionDevice(context.Background(), client.ProvisionRequest{ID: id, Type: "Meter"})
	if err != nil {
		t.Fatalf("provision %s: %v", id, err)
	}
	c := p.Credentials
	return &sdk.Credentials{DeviceID: c.DeviceID, MQTTUsername: c.MQTTUsername, MQTTPassword: c.MQTTPassword, APIKey: c.APIKey}
}

// storedMessages returns the accepted message log records of a device, oldest
// first.
func storedMessages(t testing.TB, st messagelog.Store, deviceID string) []messagelog.Message {
	t.Helper()
	var out []messagelog.Message
	before := int64(0)
	for {
		msgs, err := st.ListMessages(context.Background(), messagelog.Query{DeviceID: deviceID, Before: before, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msgs...)
		if len(msgs) < 1000 {
			break
		}
		before = msgs[len(msgs)-1].ID
	}
	// Newest first → oldest first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func startClient(t testing.TB, o sdk.Options) *sdk.Client {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger()
	}
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = 20*time.Millisecond, 500*time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := sdk.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// child is a test binary started in a role (device or hub).
type child struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

// startChild runs this test binary in role with env, collecting the lines
// it prints to stdout (and, for the hub, stderr).
func startChild(t testing.TB, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "SDK_TEST_ROLE="+role), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errp, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 1<<16), done: make(chan struct{})}
	var wg sync.WaitGroup
	for _, r := range []io.Reader{out, errp} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				if testing.Verbose() && os.Getenv("SDK_TEST_LOG") != "" {
					fmt.Fprintln(os.Stderr, role+":", sc.Text())
				}
				c.lines <- sc.Text()
			}
			io.Copy(io.Discard, r)
		}()
	}
	go func() {
		wg.Wait()
		cmd.Wait()
		close(c.lines)
		close(c.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

func (c *child) kill9(t testing.TB) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// expect reads lines until one matches re, and returns its submatches.
func (c *child) expect(t testing.TB, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	tm := time.NewTimer(d)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("child ended before printing %s", re)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-tm.C:
			t.Fatalf("child did not print %s within %v", re, d)
		}
	}
}
