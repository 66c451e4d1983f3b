package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/childproc"
	"github.com/devicehub/devicehub/internal/cluster/natstest"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/sdk"
)

// clusterNode is one `devicehub serve` process of the cluster test, with
// fixed ports so that it comes back on them after a kill.
type clusterNode struct {
	id, cfg, mqtt, http string
	proc                *child
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestClusterKill9 runs three `devicehub serve` processes (this test
// binary acting as devicehub, as the crash test does) on one PostgreSQL
// schema and an embedded 3-server NATS JetStream cluster, with HAProxy in
// front of their MQTT listeners, and SDK devices streaming QoS 1 readings
// with msg_ids through HAProxy. Five times it kills a node with SIGKILL in
// the middle of the stream and starts it again. Then: every reading the
// devices enqueued (and so, once their outboxes are empty, every one
// acknowledged) is in PostgreSQL exactly once; every device is online and
// connected; a command sent through one node to a device on another is
// delivered and its result visible on the third.
func TestClusterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	dsn := os.Getenv("DEVICEHUB_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("DEVICEHUB_TEST_POSTGRES_DSN is not set: skipping the cluster test (it needs PostgreSQL)")
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr != nil {
			t.Skip("haproxy is not installed (Debian package haproxy): skipping the cluster test")
		}
		haproxy = "/usr/sbin/haproxy"
	}
	ctx := context.Background()
	b := make([]byte, 6)
	rand.Read(b)
	schema := "cluster_e2e_" + hex.EncodeToString(b)
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		db.Close(context.Background())
	})
	nc := natstest.Start(t, 3)
	natsURLs, _ := json.Marshal(nc.URLs())

	var nodes []*clusterNode
	var firstDir string
	for i := range 3 {
		dir := t.TempDir()
		n := &clusterNode{id: fmt.Sprintf("node-%d", i), cfg: filepath.Join(dir, "devicehub.yaml"), mqtt: freeAddr(t), http: freeAddr(t)}
		cfg := fmt.Sprintf(`data_dir: %s
mqtt: {addr: %q}
http: {addr: %q}
storage:
  driver: postgres
  postgres: {dsn: %q, schema: %s}
cluster:
  node_id: %s
  nats: %s
  name: %s
  stream_replicas: 3
  lease_ttl: 3s
  renew: 500ms
ingest: {rate_limit: {rate: 0, burst: 0}}
commands: {connect_delay: 200ms, resend_interval: 2s}
monitors: {allow_private_targets: true, min_backoff: 20ms, max_backoff: 200ms}
device_types:
  WeatherStation:
    fields:
      temperature: {type: float}
    commands: [reboot]
`, dir, n.mqtt, n.http, dsn, schema, n.id, natsURLs, schema)
		if err := os.WriteFile(n.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			firstDir = dir
			n.proc = startChild(t, n.cfg)
		} else {
			// The nodes share the first node's secrets (admin token, key secrets).
			for _, f := range []string{"admin.token", "registration.secret"} {
				if b, err := os.ReadFile(filepath.Join(firstDir, f)); err == nil {
					os.WriteFile(filepath.Join(dir, f), b, 0o600)
				}
			}
			n.proc = startChild(t, n.cfg)
		}
		nodes = append(nodes, n)
	}
	tok, err := os.ReadFile(filepath.Join(firstDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))

	// HAProxy in front of the three MQTT listeners.
	lb := freeAddr(t)
	hcfg := fmt.Sprintf(`global
    maxconn 1000
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend mqtt
    bind %s
    default_backend nodes
backend nodes
    balance roundrobin
`, lb)
	for i, n := range nodes {
		hcfg += fmt.Sprintf("    server n%d %s check inter 300ms fall 2 rise 1 on-marked-down shutdown-sessions\n", i, n.mqtt)
	}
	hpath := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(hpath, []byte(hcfg), 0o600); err != nil {
		t.Fatal(err)
	}
	hp := exec.Command(haproxy, "-db", "-f", hpath)
	childproc.DieWithParent(hp)
	if err := hp.Start(); err != nil {
		t.Fatal(err)
	}
	hpDone := make(chan struct{})
	go func() { hp.Wait(); close(hpDone) }()
	t.Cleanup(func() { hp.Process.Kill(); <-hpDone })
	eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		c, err := net.Dial("tcp", lb)
		if err == nil {
			c.Close()
		}
		return err
	})

	// SDK devices through HAProxy, provisioned through node 0.
	const devices = 6
	type dev struct {
		id     string
		client *sdk.Client
		mu     sync.Mutex
		msgIDs []string
	}
	var devs []*dev
	for i := range devices {
		id := fmt.Sprintf("cd%02d", i)
		code, body := apiCall(t, "POST", "http://"+nodes[0].http+"/api/v1/devices", token, fmt.Sprintf(`{"id":%q,"type":"WeatherStation"}`, id))
		if code != 201 {
			t.Fatalf("provision %s: %d %v", id, code, body)
		}
		cr := body["credentials"].(map[string]any)
		c, err := sdk.Start(ctx, sdk.Options{
			DeviceID:   id,
			DB:         filepath.Join(t.TempDir(), id+".db"),
			Server:     "http://" + nodes[0].http,
			MQTTServer: "mqtt://" + lb,
			Credentials: &sdk.Credentials{DeviceID: id, MQTTUsername: cr["mqtt_username"].(string),
				MQTTPassword: cr["mqtt_password"].(string), APIKey: cr["api_key"].(string)},
			OnCommand: func(cmd sdk.Command) sdk.Result {
				return sdk.Result{Status: "succeeded", Result: map[string]string{"by": id}}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		devs = append(devs, &dev{id: id, client: c})
	}

	// The stream: every device enqueues a reading every 40ms.
	streamCtx, stopStream := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := d.client.StreamSender("")
			tk := time.NewTicker(40 * time.Millisecond)
			defer tk.Stop()
			for n := 0; ; n++ {
				select {
				case <-streamCtx.Done():
					return
				case <-tk.C:
				}
				id, err := s.Enqueue([]byte(fmt.Sprintf(`{"temperature": %d.5}`, n%40)))
				if err != nil {
					t.Errorf("%s: enqueue: %v", d.id, err)
					return
				}
				d.mu.Lock()
				d.msgIDs = append(d.msgIDs, id)
				d.mu.Unlock()
			}
		}()
	}
	stored := func(since time.Time) int {
		var n int
		if err := db.QueryRow(ctx, `SELECT count(DISTINCT device_id) FROM `+schema+`.messages WHERE accepted AND received_at > $1`, since).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually.True(t, 60*time.Second, "every device streams", func() bool { return stored(time.Now().Add(-time.Second)) == devices })

	// A push monitor of the readings, created through node 2, delivering
	// to a real webhook receiver here (see killReceiver).
	rcv := newKillReceiver(t, dsn, schema)
	code, body := apiCall(t, "POST", "http://"+nodes[2].http+"/api/v1/monitors", token,
		fmt.Sprintf(`{"transport":"http","topics":["device_data_received"],"url":%q,"method":"POST","batch_duration":0.05}`, rcv.URL))
	if code != 201 {
		t.Fatalf("create the monitor: %d %v", code, body)
	}
	rcv.mu.Lock()
	rcv.secret, _ = body["secret"].(string)
	rcv.monitorID = body["monitor"].(map[string]any)["id"].(string)
	rcv.mu.Unlock()
	monStart, _ := body["monitor"].(map[string]any)["cursor"].(float64) // it delivers the events after
	eventually.True(t, 60*time.Second, "the monitor delivers", func() bool { return rcv.lastAck() > 0 })
	monitorOwner := func() string {
		var holder string
		db.QueryRow(ctx, `SELECT holder FROM `+schema+`.leases WHERE name = 'job/monitors' AND expires_at > now()`).Scan(&holder)
		return holder
	}

	// Five kills, one node at a time, each started again afterwards. The
	// node killed is the one running the monitor, in the middle of a
	// delivery (held unanswered by the receiver).
	var failovers, monFailovers []time.Duration
	for k := range 5 {
		held, answer := rcv.hold()
		select {
		case <-held:
		case <-time.After(60 * time.Second):
			t.Fatalf("kill %d: no delivery of the monitor to hold", k+1)
		}
		var n *clusterNode
		for _, c := range nodes {
			if c.id == monitorOwner() {
				n = c
			}
		}
		if n == nil {
			t.Fatalf("kill %d: no node holds job/monitors while it delivers", k+1)
		}
		var onNode int
		db.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.devices WHERE connected AND node = $1`, n.id).Scan(&onNode)
		killed := time.Now()
		n.proc.kill9(t)
		answer()
		// Readings flow again: every device stored a reading after the kill.
		eventually.True(t, 60*time.Second, fmt.Sprintf("kill %d (%s, %d devices on it): readings flow again from every device", k+1, n.id, onNode),
			func() bool { return stored(killed) == devices })
		// From the kill to the first reading after it of the last device.
		var flowing time.Time
		if err := db.QueryRow(ctx, `SELECT max(first) FROM (SELECT min(received_at) AS first FROM `+schema+`.messages
			WHERE accepted AND received_at > $1 GROUP BY device_id) f`, killed).Scan(&flowing); err != nil {
			t.Fatal(err)
		}
		failovers = append(failovers, flowing.Sub(killed))
		eventually.True(t, 60*time.Second, fmt.Sprintf("kill %d (%s): the monitor delivers again from a survivor", k+1, n.id), func() bool {
			return !rcv.firstAckAfter(killed).IsZero()
		})
		monFailovers = append(monFailovers, rcv.firstAckAfter(killed).Sub(killed))
		t.Logf("kill %d: the monitor delivered again %v after the kill of %s", k+1, monFailovers[k].Round(time.Millisecond), n.id)
		t.Logf("kill %d: %s held %d devices; readings from every device again after %v", k+1, n.id, onNode, failovers[k].Round(time.Millisecond))
		n.proc = startChild(t, n.cfg)
	}
	stopStream()
	wg.Wait()
	slices.Sort(failovers)
	t.Logf("failover (kill to readings from every device): p50 %v, max (p99 of 5) %v", failovers[2].Round(time.Millisecond), failovers[4].Round(time.Millisecond))
	slices.Sort(monFailovers)
	t.Logf("monitor failover (kill of its node to the next delivery acknowledged): p50 %v, max %v", monFailovers[2].Round(time.Millisecond), monFailovers[4].Round(time.Millisecond))

	// Every enqueued reading acknowledged (the outboxes empty), and stored once.
	for _, d := range devs {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		if err := d.client.WaitSent(wctx); err != nil {
			t.Fatalf("%s: outbox not emptied: %v (pending %d)", d.id, err, d.client.PendingMessages())
		}
		cancel()
	}
	total := 0
	for _, d := range devs {
		rows, err := db.Query(ctx, `SELECT msg_id, count(*) FROM `+schema+`.messages WHERE device_id = $1 AND accepted GROUP BY msg_id`, d.id)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for rows.Next() {
			var m string
			var c int
			rows.Scan(&m, &c)
			got[m] = c
		}
		rows.Close()
		for _, m := range d.msgIDs {
			if got[m] != 1 {
				t.Errorf("%s: acknowledged reading %s stored %d times", d.id, m, got[m])
			}
		}
		var readings int
		db.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.readings WHERE device_id = $1`, d.id).Scan(&readings)
		if readings != len(d.msgIDs) {
			t.Errorf("%s: %d readings stored, %d enqueued and acknowledged", d.id, readings, len(d.msgIDs))
		}
		total += len(d.msgIDs)
	}
	t.Logf("%d readings acknowledged and stored exactly once through 5 kills", total)

	// The monitor: every data event stored was acknowledged by the
	// receiver exactly once, none acknowledged came again, and deliveries
	// never overlapped (one node at a time).
	var dataSeqs []int64
	rows, err := db.Query(ctx, `SELECT seq FROM `+schema+`.events WHERE type = 'device_data_received' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var seq int64
		rows.Scan(&seq)
		if seq > int64(monStart) {
			dataSeqs = append(dataSeqs, seq)
		}
	}
	rows.Close()
	eventually.True(t, 60*time.Second, "the monitor delivered every data event", func() bool {
		return len(dataSeqs) > 0 && rcv.lastAck() >= dataSeqs[len(dataSeqs)-1]
	})
	rcv.check(t, dataSeqs)
	t.Logf("monitor: %d data events each acknowledged once through 5 kills of the node running it", len(dataSeqs))

	// Every device is back online, and stays so (no stale offline).
	online := func() int {
		var n int
		db.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.devices WHERE connected AND status = 'online'`).Scan(&n)
		return n
	}
	eventually.True(t, 30*time.Second, "every device online and connected", func() bool { return online() == devices })
	var stale int
	db.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.devices WHERE NOT connected OR status <> 'online'`).Scan(&stale)
	if stale != 0 {
		t.Fatalf("%d devices offline after the kills", stale)
	}

	// The fan-out lag (commit on another node to publication on this
	// node's bus), as each node measured it: logged, not asserted.
	for _, n := range nodes {
		resp, err := http.Get("http://" + n.http + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var sum, count float64
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "devicehub_cluster_fanout_lag_seconds_sum "); ok {
				sum, _ = strconv.ParseFloat(v, 64)
			}
			if v, ok := strings.CutPrefix(line, "devicehub_cluster_fanout_lag_seconds_count "); ok {
				count, _ = strconv.ParseFloat(v, 64)
			}
		}
		if count > 0 {
			t.Logf("%s: fan-out lag over %.0f events from other nodes since its last start: mean %.2f ms", n.id, count, sum/count*1000)
		}
	}

	// A command through node A to a device on node B, its result read on node C.
	var holder string
	if err := db.QueryRow(ctx, `SELECT node FROM `+schema+`.devices WHERE id = 'cd00'`).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	var a, c *clusterNode
	for _, n := range nodes {
		if n.id != holder {
			if a == nil {
				a = n
			} else {
				c = n
			}
		}
	}
	code, body = apiCall(t, "POST", "http://"+a.http+"/api/v1/devices/cd00/commands", token, `{"command":"reboot"}`)
	if code >= 300 {
		t.Fatalf("send through %s: %d %v", a.id, code, body)
	}
	cmdID := body["command"].(map[string]any)["id"].(string)
	eventually.True(t, 30*time.Second, fmt.Sprintf("the command sent through %s to the device on %s succeeded, seen on %s", a.id, holder, c.id), func() bool {
		_, body := apiCall(t, "GET", "http://"+c.http+"/api/v1/commands/"+cmdID, token, "")
		cmd, _ := body["command"].(map[string]any)
		return cmd != nil && cmd["status"] == "succeeded"
	})
}
