package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/childproc"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

// TestMain lets the test binary act as the devicehub binary: the crash test
// starts it as a child process and kills it with SIGKILL.
func TestMain(m *testing.M) {
	if os.Getenv("DEVICEHUB_TEST_CHILD") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type child struct {
	cmd        *exec.Cmd
	mqtt       string
	http       string
	brokerAuth string // "" unless broker_auth is enabled
	done       chan struct{}

	mu    sync.Mutex
	lines []string // every line the child logged
}

// logLines returns every line the child logged so far.
func (c *child) logLines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

var servingRE = regexp.MustCompile(`devicehub serving.*mqtt=(\S+) http=(\S+) broker_auth=(\S*)`)

// startChild runs `devicehub serve` in a child process and waits until it
// serves.
func startChild(t *testing.T, cfgPath string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "DEVICEHUB_TEST_CHILD=1")
	childproc.DieWithParent(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	found := make(chan [3]string, 1)
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.lines = append(c.lines, line)
			c.mu.Unlock()
			if testing.Verbose() {
				fmt.Fprintln(os.Stderr, "child:", line)
			}
			if m := servingRE.FindStringSubmatch(line); m != nil {
				found <- [3]string{m[1], m[2], strings.Trim(m[3], `"`)}
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
	}()
	select {
	case a := <-found:
		c.mqtt, c.http, c.brokerAuth = a[0], a[1], a[2]
	case <-c.done:
		t.Fatal("child exited before serving")
	case <-time.After(60 * time.Second):
		t.Fatal("child not serving after 60s")
	}
	return c
}

func (c *child) kill9(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
}

func (c *child) stop(t *testing.T) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("child did not stop on SIGTERM")
	}
}

// startCrashHub starts a hub for the kill -9 tests on a fresh data
// directory: random ports, no ingest rate limit, the WeatherStation type
// and extra, more YAML (a retention line). It returns the hub, its data
// directory and config file (to start it again), and the admin token.
func startCrashHub(t *testing.T, extra string) (hub *child, dir, cfgPath, token string) {
	t.Helper()
	dir = t.TempDir()
	cfgPath = filepath.Join(dir, "devicehub.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
mqtt: {addr: "127.0.0.1:0"}
http: {addr: "127.0.0.1:0"}
ingest: {rate_limit: {rate: 0, burst: 0}}
%sdevice_types:
  WeatherStation:
    fields:
      temperature: {type: float}
      humidity: {type: float}
`, dir, extra)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	hub = startChild(t, cfgPath)
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return hub, dir, cfgPath, strings.TrimSpace(string(tok))
}

// TestKill9LosesNoAcknowledgedReading publishes QoS 1 readings from many
// clients, kills the hub with SIGKILL in the middle of the load, restarts
// it, and checks that every reading whose PUBACK a client received is in
// the store exactly once.
func TestKill9LosesNoAcknowledgedReading(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	hub, dir, cfgPath, token := startCrashHub(t, "")

	const devices = 20
	passwords := provisionDevices(t, hub, token, devices)
	acked, total := loadUntilKilled(t, hub, passwords, nil, 3000)
	t.Logf("acknowledged before SIGKILL: %d messages", total)

	// Restart: the hub must come back on the same data directory.
	hub = startChild(t, cfgPath)
	hub.stop(t)

	checkAcked(t, filepath.Join(dir, "devicehub.db"), acked, 0)
}

// provisionDevices provisions devices d00, d01, ... of type
// WeatherStation and returns their MQTT passwords.
func provisionDevices(t *testing.T, hub *child, token string, devices int) []string {
	t.Helper()
	passwords := make([]string, devices)
	for i := range devices {
		body := fmt.Sprintf(`{"id":"d%02d","type":"WeatherStation"}`, i)
		req, _ := http.NewRequest("POST", "http://"+hub.http+"/api/v1/devices", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Credentials struct {
				MQTTPassword string `json:"mqtt_password"`
			} `json:"credentials"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("provision: status %d", resp.StatusCode)
		}
		passwords[i] = out.Credentials.MQTTPassword
	}
	return passwords
}

// loadUntilKilled publishes QoS 1 readings (with a msg_id each) from every
// device until enough were acknowledged, then (after started, if given, is
// closed) kills the hub with SIGKILL in the middle of the load. It returns
// the msg_ids acknowledged per device.
func loadUntilKilled(t *testing.T, hub *child, passwords []string, started <-chan struct{}, enough int) (map[string][]string, int) {
	t.Helper()
	var (
		mu    sync.Mutex
		acked = map[string][]string{} // device → msg_ids acknowledged
		total int
	)
	reached := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for i := range passwords {
		id := fmt.Sprintf("d%02d", i)
		conn, err := net.Dial("tcp", hub.mqtt)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho.NewClient(paho.ClientConfig{Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cl.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
			Username: id, UsernameFlag: true, Password: []byte(passwords[i]), PasswordFlag: true})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			for n := 0; n < 100000; n++ {
				msgID := fmt.Sprintf("%s-%d", id, n)
				payload := fmt.Sprintf(`{"temperature":%d.5,"humidity":40,"msg_id":%q}`, n%50, msgID)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := cl.Publish(ctx, &paho.Publish{Topic: "devices/" + id + "/data", QoS: 1, Payload: []byte(payload)})
				cancel()
				if err != nil {
					return // the hub is gone
				}
				mu.Lock()
				acked[id] = append(acked[id], msgID)
				total++
				if total >= enough {
					once.Do(func() { close(reached) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-reached:
	case <-time.After(120 * time.Second):
		t.Fatalf("load did not reach %d acknowledged messages in 120s", enough)
	}
	if started != nil {
		select {
		case <-started:
		case <-time.After(120 * time.Second):
			t.Fatal("not started after 120s")
		}
	}
	hub.kill9(t) // mid-load: clients are still publishing
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return acked, total
}

// checkAcked opens the store of a stopped hub and checks that every
// acknowledged msg_id is stored exactly once, with its one reading, and
// that each device has extra readings more (older ones that were not
// expired).
func checkAcked(t *testing.T, path string, acked map[string][]string, extra int64) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for id, ids := range acked {
		stored := map[string]int{}
		before := int64(0)
		for {
			msgs, err := st.ListMessages(context.Background(), messagelog.Query{DeviceID: id, Before: before, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if m.Accepted && m.MsgID != "" {
					stored[m.MsgID]++
				}
			}
			if len(msgs) < 1000 {
				break
			}
			before = msgs[len(msgs)-1].ID
		}
		for _, m := range ids {
			if stored[m] != 1 {
				t.Errorf("%s: acknowledged message %s stored %d times", id, m, stored[m])
			}
		}
		n, err := st.CountReadings(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(len(stored))+extra {
			t.Errorf("%s: %d readings for %d stored messages (+%d)", id, n, len(stored), extra)
		}
		if n < int64(len(ids)) {
			t.Errorf("%s: %d readings stored, %d acknowledged", id, n, len(ids))
		}
	}
}
