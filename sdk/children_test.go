package sdk_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/store/sqlite"
	"github.com/devicehub/devicehub/sdk"
)

// deviceChild is the device program of the crash tests, run by TestMain
// with SDK_TEST_ROLE set. It prints one line per step on stdout, which the
// parent reads.
func deviceChild() int {
	role := os.Getenv("SDK_TEST_ROLE")
	creds, err := sdk.ParseCredentials([]byte(os.Getenv("SDK_CREDS")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := sdk.Options{
		DB: os.Getenv("SDK_DB"), MQTTServer: os.Getenv("SDK_MQTT"), Credentials: creds,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
	}
	switch role {
	case "cmd-block":
		opts.OnCommand = func(cmd sdk.Command) sdk.Result {
			fmt.Printf("got %s\n", cmd.ID)
			select {} // never returns: the parent kills the process
		}
	case "cmd-answer":
		opts.OnCommand = func(cmd sdk.Command) sdk.Result {
			fmt.Printf("answered %s\n", cmd.ID)
			return sdk.Result{Status: "succeeded", Result: map[string]any{"echo": cmd.Name}}
		}
	}
	c, err := sdk.Start(context.Background(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	fmt.Println("started")
	switch role {
	case "device-loop":
		start, _ := strconv.Atoi(os.Getenv("SDK_START"))
		streams := []*sdk.StreamSender{c.StreamSender("a"), c.StreamSender("b")}
		for n := start; ; n++ {
			s := streams[n%2]
			id := "m-" + strconv.Itoa(n)
			if _, err := s.Enqueue(fmt.Appendf(nil, `{"seq": %d, "temperature": %d.5}`, n, rand.IntN(40)), sdk.MessageID(id)); err != nil {
				fmt.Fprintln(os.Stderr, "enqueue:", err)
				return 1
			}
			fmt.Printf("ok %d\n", n)
		}
	case "drain", "cmd-answer":
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if role == "cmd-answer" {
			waitLine(ctx, func() bool { s := c.Stats(); return s.Acked+s.Rejected > 0 }) // the hub refuses results today (unknown_topic)
		}
		if err := c.WaitSent(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "wait sent:", err)
			return 1
		}
		fmt.Printf("drained %d\n", c.PendingMessages())
	case "cmd-block":
		select {}
	}
	return 0
}

// waitLine polls cond (child side; no testing.T here).
func waitLine(ctx context.Context, cond func() bool) {
	for !cond() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	okRE      = regexp.MustCompile(`^ok (\d+)$`)
	startedRE = regexp.MustCompile(`^started$`)
	drainedRE = regexp.MustCompile(`^drained (\d+)$`)
	servingRE = regexp.MustCompile(`devicehub serving.*mqtt=(\S+) http=(\S+)`)
)

func credsJSON(c *sdk.Credentials) string {
	return fmt.Sprintf(`{"device_id":%q,"mqtt_username":%q,"mqtt_password":%q}`, c.DeviceID, c.MQTTUsername, c.MQTTPassword)
}

// TestKill9DeviceLosesNothing kills the device program with SIGKILL while
// it enqueues, 20 times, then lets it drain: the hub must hold every
// reading Enqueue returned for, exactly once, and in order per stream.
func TestKill9DeviceLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("crash loop: skipped with -short")
	}
	th := startHub(t, "", "")
	creds := provision(t, th.api, "crashy")
	db := t.TempDir() + "/device.db"
	env := []string{"SDK_DB=" + db, "SDK_MQTT=mqtt://" + th.MQTTAddr(), "SDK_CREDS=" + credsJSON(creds)}

	acked := map[string]bool{}
	const cycles = 20
	for cycle := range cycles {
		ch := startChild(t, "device-loop", append(env, fmt.Sprintf("SDK_START=%d", cycle*1_000_000))...)
		ch.expect(t, startedRE, 20*time.Second)
		// Let it enqueue (and send) for a while, then kill it mid-flight;
		// the while starts at its first reading, however loaded the machine.
		acked["m-"+ch.expect(t, okRE, 20*time.Second)[1]] = true
		deadline := time.After(time.Duration(50+rand.IntN(250)) * time.Millisecond)
	read:
		for {
			select {
			case l := <-ch.lines:
				if m := okRE.FindStringSubmatch(l); m != nil {
					acked["m-"+m[1]] = true
				}
			case <-deadline:
				break read
			}
		}
		ch.kill9(t)
		for l := range ch.lines { // what it printed before dying
			if m := okRE.FindStringSubmatch(l); m != nil {
				acked["m-"+m[1]] = true
			}
		}
	}
	ch := startChild(t, "drain", env...)
	ch.expect(t, drainedRE, 60*time.Second)
	<-ch.done
	t.Logf("%d readings enqueued over %d kills", len(acked), cycles)

	stored := map[string]int{}
	last := map[string]int{}
	for _, m := range storedMessages(t, th.Store(), "crashy") {
		if !m.Accepted {
			t.Errorf("rejected message %s: %s %s", m.MsgID, m.Code, m.Reason)
			continue
		}
		stored[m.MsgID]++
		n, _ := strconv.Atoi(strings.TrimPrefix(m.MsgID, "m-"))
		if prev, ok := last[m.Topic]; ok && n <= prev {
			t.Errorf("%s: %s stored after m-%d", m.Topic, m.MsgID, prev)
		}
		last[m.Topic] = n
	}
	for id := range acked {
		if stored[id] != 1 {
			t.Errorf("enqueued %s stored %d times", id, stored[id])
		}
	}
	for id, n := range stored {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	n, err := th.Store().CountReadings(context.Background(), "crashy")
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(stored)) {
		t.Errorf("%d readings for %d messages", n, len(stored))
	}
	if len(acked) < cycles {
		t.Errorf("only %d readings enqueued", len(acked))
	}
}

// TestKill9HubLosesNothing kills the hub with SIGKILL while devices send,
// restarts it, and checks that every enqueued reading is stored once.
func TestKill9HubLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("hub crash: skipped with -short")
	}
	dir := t.TempDir()
	addr := freePort(t)
	cfg := hubConfig(t, dir, addr)
	hubc := startChild(t, "hub", "SDK_TEST_CONFIG="+cfg)
	m := hubc.expect(t, servingRE, 60*time.Second)
	tok, err := os.ReadFile(dir + "/admin.token")
	if err != nil {
		t.Fatal(err)
	}
	api := client.New("http://"+m[2], strings.TrimSpace(string(tok)), nil)

	const devices = 3
	clients := make([]*sdk.Client, devices)
	for i := range devices {
		creds := provision(t, api, fmt.Sprintf("hk%d", i))
		clients[i] = startClient(t, sdk.Options{DB: filepath.Join(t.TempDir(), "device.db"), MQTTServer: "mqtt://" + addr, Credentials: creds})
	}
	var (
		mu      sync.Mutex
		acked   = make([][]string, devices)
		stopped = make(chan struct{})
		wg      sync.WaitGroup
	)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := c.StreamSender("")
			for n := 0; ; n++ {
				select {
				case <-stopped:
					return
				default:
				}
				id := fmt.Sprintf("hk%d-%d", i, n)
				if _, err := s.Enqueue(fmt.Appendf(nil, `{"seq": %d}`, n), sdk.MessageID(id)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[i] = append(acked[i], id)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond) // pace: a device, not a benchmark
			}
		}()
	}
	eventually.True(t, 30*time.Second, "readings acknowledged", func() bool {
		for _, c := range clients {
			if c.Stats().Acked < 300 {
				return false
			}
		}
		return true
	})
	t0 := time.Now()
	hubc.kill9(t)
	hubc = startChild(t, "hub", "SDK_TEST_CONFIG="+cfg)
	hubc.expect(t, servingRE, 60*time.Second)
	t.Logf("hub restarted in %v", time.Since(t0))
	eventually.True(t, 30*time.Second, "reconnects", func() bool {
		for _, c := range clients {
			if c.Stats().Reconnects < 1 || c.Stats().Acked < 600 {
				return false
			}
		}
		return true
	})
	close(stopped)
	wg.Wait()
	t.Logf("load stopped after %v", time.Since(t0))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, c := range clients {
		if err := c.WaitSent(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	t.Logf("drained after %v", time.Since(t0))
	hubc.cmd.Process.Signal(syscall.SIGTERM)
	<-hubc.done

	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(dir, "devicehub.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, ids := range acked {
		dev := fmt.Sprintf("hk%d", i)
		stored := map[string]int{}
		for _, m := range storedMessages(t, st, dev) {
			if m.Accepted {
				stored[m.MsgID]++
			}
		}
		for _, id := range ids {
			if stored[id] != 1 {
				t.Errorf("%s: %s stored %d times", dev, id, stored[id])
			}
		}
		if n, _ := st.CountReadings(ctx, dev); n != int64(len(ids)) || len(stored) != len(ids) {
			t.Errorf("%s: %d readings and %d messages stored, %d enqueued", dev, n, len(stored), len(ids))
		}
		t.Logf("%s: %d readings, reconnects %d", dev, len(ids), clients[i].Stats().Reconnects)
	}
}

// TestCommandSurvivesDeviceCrash: a command whose handler never returned
// (the device was killed in it) is handled again after a restart, from the
// local database, and its result reaches the hub's command service.
func TestCommandSurvivesDeviceCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("device crash: skipped with -short")
	}
	th := startHub(t, "", "")
	creds := provision(t, th.api, "cmdc")
	env := []string{"SDK_DB=" + t.TempDir() + "/device.db", "SDK_MQTT=mqtt://" + th.MQTTAddr(), "SDK_CREDS=" + credsJSON(creds)}
	ch := startChild(t, "cmd-block", env...)
	ch.expect(t, startedRE, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Sent through the API: the hub publishes it now, or when the device
	// has connected.
	cmd, err := th.api.SendCommand(ctx, "cmdc", client.SendCommandRequest{Command: "reboot"})
	if err != nil {
		t.Fatal(err)
	}
	ch.expect(t, regexp.MustCompile(`^got `+regexp.QuoteMeta(cmd.ID)+`$`), 40*time.Second)
	ch.kill9(t)

	ch = startChild(t, "cmd-answer", env...)
	ch.expect(t, regexp.MustCompile(`^answered `+regexp.QuoteMeta(cmd.ID)+`$`), 20*time.Second)
	ch.expect(t, drainedRE, 30*time.Second)
	done, err := th.api.WaitCommand(ctx, cmd.ID, 20*time.Millisecond)
	if err != nil || done.Status != "succeeded" {
		t.Fatalf("command %+v %v, want succeeded", done, err)
	}
}
