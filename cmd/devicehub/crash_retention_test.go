package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

var expiredRE = regexp.MustCompile(`devicehub_retention_expired_total\{what="readings"\} (\d+)`)

// expiredReadings reads the hub's count of expired readings from /metrics.
func expiredReadings(hub *child) int {
	resp, err := http.Get("http://" + hub.http + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := expiredRE.FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// prefillOld publishes, from every device, readings two hours old: what
// the retention policy of the test expires.
func prefillOld(t *testing.T, hub *child, passwords []string, perDevice int) {
	t.Helper()
	old := time.Now().Add(-2 * time.Hour)
	for i, pw := range passwords {
		id := fmt.Sprintf("d%02d", i)
		conn, err := net.Dial("tcp", hub.mqtt)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho.NewClient(paho.ClientConfig{Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := cl.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
			Username: id, UsernameFlag: true, Password: []byte(pw), PasswordFlag: true}); err != nil {
			t.Fatal(err)
		}
		for sent := 0; sent < perDevice; sent += 500 {
			var b strings.Builder
			b.WriteByte('[')
			for j := range 500 {
				if j > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"temperature":1.5,"humidity":40,"ts":%d}`, old.Add(time.Duration(sent+j)*time.Millisecond).UnixMilli())
			}
			b.WriteByte(']')
			if pr, err := cl.Publish(ctx, &paho.Publish{Topic: "devices/" + id + "/data", QoS: 1, Payload: []byte(b.String())}); err != nil || pr.ReasonCode != 0 {
				t.Fatalf("prefill %s: %+v, %v", id, pr, err)
			}
		}
		cl.Disconnect(&paho.Disconnect{})
		conn.Close()
		cancel()
	}
}

// oldLeft counts the readings older than cutoff in the store at path.
func oldLeft(t *testing.T, path string, devices int, cutoff time.Time) int {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	for i := range devices {
		page, err := st.QueryReadings(context.Background(), readings.Query{DeviceID: fmt.Sprintf("d%02d", i), To: cutoff, Limit: readings.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Readings)
	}
	return n
}

// TestKill9DuringRetention kills the hub with SIGKILL while its retention
// pass deletes expired readings in batches and devices publish at full
// rate, restarts it, and checks that every acknowledged reading is stored
// exactly once and that the expired ones are all gone once the restarted
// hub's retention is done: nothing acknowledged lost, nothing duplicated,
// nothing expired resurrected.
func TestKill9DuringRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	hub, dir, cfgPath, token := startCrashHub(t, "retention: {readings: 1h, interval: 1s, batch: 50}\n")
	const devices = 20
	passwords := provisionDevices(t, hub, token, devices)
	prefillOld(t, hub, passwords, 2000)

	// Kill once retention has deleted some of the 40,000 expired readings.
	started := make(chan struct{})
	go func() {
		defer close(started)
		for expiredReadings(hub) == 0 {
			select {
			case <-hub.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	acked, total := loadUntilKilled(t, hub, passwords, started, 2000)
	dbPath := filepath.Join(dir, "devicehub.db")
	cutoff := time.Now().Add(-time.Hour)
	t.Logf("acknowledged before SIGKILL: %d messages; expired readings left: %d of %d", total, oldLeft(t, dbPath, devices, cutoff), devices*2000)

	hub = startChild(t, cfgPath)
	eventually.True(t, 60*time.Second, "expired readings deleted after the restart", func() bool {
		for i := range devices {
			q := url.Values{"to": {cutoff.Format(time.RFC3339Nano)}, "limit": {"1"}}
			req, _ := http.NewRequest("GET", "http://"+hub.http+"/api/v1/devices/"+fmt.Sprintf("d%02d", i)+"/readings?"+q.Encode(), nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"readings":[]`) {
				return false
			}
		}
		return true
	})
	hub.stop(t)
	checkAcked(t, dbPath, acked, 0)
}
