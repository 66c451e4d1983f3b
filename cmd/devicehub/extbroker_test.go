package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/cluster/natstest"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/extbroker/mosquittotest"
)

// TestExternalBrokerRestart: readings stored exactly once through node
// restarts, in external-broker mode against a private Debian Mosquitto
// 2.0. Devices (paho MQTT v5 clients, QoS 1, a msg_id each) publish to
// Mosquitto; `devicehub serve` nodes (this test binary, as in the crash
// test) take them from a shared subscription with a persistent session
// and acknowledge each only after it is committed. In the middle of the
// stream a node is killed with SIGKILL and started again, then stopped
// with SIGTERM and started again, while the devices go on publishing
// (Mosquitto acknowledges them and queues them for the node's session).
// Then every reading the broker acknowledged to a device is stored
// exactly once.
//
// With DEVICEHUB_TEST_POSTGRES_DSN two nodes in cluster mode (PostgreSQL
// and an embedded NATS JetStream server) share the subscription;
// without it one node runs on SQLite.
func TestExternalBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("external-broker test: skipped with -short")
	}
	mq := mosquittotest.Start(t, "")

	dsn := os.Getenv("DEVICEHUB_TEST_POSTGRES_DSN")
	nodes := 1
	storage := ""
	if dsn != "" {
		nodes = 2
		b := make([]byte, 6)
		rand.Read(b)
		schema := "extbroker_e2e_" + hex.EncodeToString(b)
		db, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			db.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			db.Close(context.Background())
		})
		nc := natstest.Start(t, 1)
		urls, _ := json.Marshal(nc.URLs())
		storage = fmt.Sprintf(`storage:
  driver: postgres
  postgres: {dsn: %q, schema: %s}
cluster:
  nats: %s
  name: %s
  lease_ttl: 3s
  renew: 500ms
`, dsn, schema, urls, schema)
	} else {
		t.Log("DEVICEHUB_TEST_POSTGRES_DSN is not set: one node on SQLite (with it, two nodes on PostgreSQL share the subscription)")
	}

	type node struct {
		cfg  string
		proc *child
	}
	var ns []*node
	var firstDir string
	for i := range nodes {
		dir := t.TempDir()
		n := &node{cfg: filepath.Join(dir, "devicehub.yaml")}
		st := storage
		if st != "" {
			st = strings.Replace(st, "cluster:\n", fmt.Sprintf("cluster:\n  node_id: node-%d\n", i), 1)
		}
		cfg := fmt.Sprintf(`data_dir: %s
mqtt:
  addr: ""
  external: {url: %q, username: %s, password: %s, session_expiry: 1h}
http: {addr: %q}
ingest: {rate_limit: {rate: 0, burst: 0}}
%sdevice_types:
  WeatherStation:
    fields:
      temperature: {type: float}
      humidity: {type: float}
`, dir, mq.URL, mosquittotest.HubUser, mosquittotest.HubPassword, freeAddr(t), st)
		if err := os.WriteFile(n.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			firstDir = dir
		} else {
			for _, f := range []string{"admin.token", "registration.secret"} {
				if b, err := os.ReadFile(filepath.Join(firstDir, f)); err == nil {
					os.WriteFile(filepath.Join(dir, f), b, 0o600)
				}
			}
		}
		n.proc = startChild(t, n.cfg)
		ns = append(ns, n)
	}
	tok, err := os.ReadFile(filepath.Join(firstDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))

	// Devices are provisioned through the hub and given to Mosquitto's
	// password file (Debian's Mosquitto cannot ask /broker/auth).
	const devices = 8
	passwords := provisionDevices(t, ns[0].proc, token, devices)
	users := map[string]string{}
	for i, p := range passwords {
		users[fmt.Sprintf("d%02d", i)] = p
	}
	mq.AddDevices(t, users)

	var (
		mu    sync.Mutex
		acked = map[string][]string{}
		total int
	)
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return total }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range devices {
		id := fmt.Sprintf("d%02d", i)
		var cl *paho.Client
		var conn net.Conn
		eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			c, err := net.Dial("tcp", mq.Addr)
			if err != nil {
				return err
			}
			p := paho.NewClient(paho.ClientConfig{Conn: c})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := p.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
				Username: id, UsernameFlag: true, Password: []byte(passwords[i]), PasswordFlag: true}); err != nil {
				c.Close()
				return fmt.Errorf("%s: %w", id, err) // Mosquitto may not have read the password file yet
			}
			cl, conn = p, c
			return nil
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			// 50 readings a second each: a fleet's pace, which the node
			// takes in faster than it comes (the backlog of an outage
			// drains), not a flood.
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				msgID := fmt.Sprintf("%s-%d", id, n)
				payload := fmt.Sprintf(`{"temperature":%d.5,"humidity":40,"msg_id":%q}`, n%50, msgID)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				pr, err := cl.Publish(ctx, &paho.Publish{Topic: "devices/" + id + "/data", QoS: 1, Payload: []byte(payload)})
				cancel()
				if err != nil {
					t.Errorf("%s: publish: %v", id, err)
					return
				}
				if pr.ReasonCode >= 0x80 {
					t.Errorf("%s: publish refused: reason code 0x%02x", id, pr.ReasonCode)
					return
				}
				mu.Lock()
				acked[id] = append(acked[id], msgID)
				total++
				mu.Unlock()
			}
		}()
	}
	more := func(n int, what string) {
		t.Helper()
		target := ackedCount() + n
		eventually.True(t, 60*time.Second, what, func() bool { return ackedCount() >= target })
	}

	more(400, "400 readings acknowledged")
	victim := ns[len(ns)-1]
	victim.proc.kill9(t)
	t.Logf("SIGKILL after %d acknowledged", ackedCount())
	more(300, "300 readings acknowledged by the broker while the node is dead")
	victim.proc = startChild(t, victim.cfg)
	more(300, "300 readings after the restart")
	victim.proc.stop(t)
	t.Logf("SIGTERM after %d acknowledged", ackedCount())
	more(300, "300 readings acknowledged by the broker while the node is stopped")
	victim.proc = startChild(t, victim.cfg)
	more(200, "200 readings after the second restart")
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d readings acknowledged by Mosquitto", ackedCount())

	// Every acknowledged reading is stored, once: read the message log
	// and the readings through the API of the first node.
	api := client.New("http://"+ns[0].proc.http, token, nil)
	ctx := context.Background()
	stored := func(id string) (map[string]int, error) {
		got := map[string]int{}
		q := client.MessagesQuery{DeviceID: id, Limit: 1000}
		for {
			page, err := api.Messages(ctx, q)
			if err != nil {
				return nil, err
			}
			for _, m := range page.Messages {
				if m.Accepted && m.MsgID != "" {
					got[m.MsgID]++
				}
			}
			if page.Next == "" {
				return got, nil
			}
			q.Before = page.Next
		}
	}
	eventually.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		for id, ids := range acked {
			got, err := stored(id)
			if err != nil {
				return err
			}
			missing := 0
			for _, m := range ids {
				if got[m] == 0 {
					missing++
				}
			}
			if missing > 0 {
				return fmt.Errorf("%s: %d of %d acknowledged readings not stored yet", id, missing, len(ids))
			}
		}
		return nil
	})
	for id, ids := range acked {
		got, err := stored(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ids {
			if got[m] != 1 {
				t.Errorf("%s: acknowledged reading %s stored %d times", id, m, got[m])
			}
		}
		// One reading per message: no message stored twice under
		// another record either.
		readings := 0
		rq := client.ReadingsQuery{DeviceID: id, Limit: 1000}
		for {
			page, err := api.Readings(ctx, rq)
			if err != nil {
				t.Fatal(err)
			}
			readings += len(page.Readings)
			if page.Next == "" {
				break
			}
			rq.Cursor = page.Next
		}
		if readings != len(got) {
			t.Errorf("%s: %d readings for %d stored messages", id, readings, len(got))
		}
	}
}
