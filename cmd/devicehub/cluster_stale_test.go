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
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/cluster/natstest"
	"github.com/devicehub/devicehub/internal/eventually"
)

// TestClusterStaleDisconnect forces the window between a takeover's
// commit and the old node hearing of it, which is milliseconds with a
// working fan-out: two `devicehub serve` nodes on one PostgreSQL schema,
// each on a NATS server of its own (so neither hears of the other's
// events over NATS) and with a log read of an hour (so neither reads
// them from the log either). A device connects to node a, then to node
// b, which takes it over; node a still holds the old session, not
// knowing. Then the old connection breaks, and node a reports its
// disconnect. The store refuses it: no device_disconnected of the old
// session is in the event log, the device stays online through node b,
// and both connects' events are there.
func TestClusterStaleDisconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	dsn := os.Getenv("DEVICEHUB_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("DEVICEHUB_TEST_POSTGRES_DSN is not set: skipping the cluster test (it needs PostgreSQL)")
	}
	ctx := context.Background()
	b := make([]byte, 6)
	rand.Read(b)
	schema := "cluster_stale_" + hex.EncodeToString(b)
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		db.Close(context.Background())
	})

	var nodes []*clusterNode
	var firstDir string
	for i := range 2 {
		nc := natstest.Start(t, 1) // one NATS server per node: no fan-out between them
		natsURLs, _ := json.Marshal(nc.URLs())
		dir := t.TempDir()
		n := &clusterNode{id: fmt.Sprintf("node-%c", 'a'+i), cfg: filepath.Join(dir, "devicehub.yaml"), mqtt: freeAddr(t), http: freeAddr(t)}
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
  lease_ttl: 3s
  renew: 500ms
  log_poll: 1h
device_types:
  WeatherStation:
    fields:
      temperature: {type: float}
`, dir, n.mqtt, n.http, dsn, schema, n.id, natsURLs, schema)
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
		nodes = append(nodes, n)
	}
	a, bn := nodes[0], nodes[1]
	tok, err := os.ReadFile(filepath.Join(firstDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))

	const id = "stale01"
	code, body := apiCall(t, "POST", "http://"+a.http+"/api/v1/devices", token, fmt.Sprintf(`{"id":%q,"type":"WeatherStation"}`, id))
	if code != 201 {
		t.Fatalf("provision %s: %d %v", id, code, body)
	}
	cr := body["credentials"].(map[string]any)
	connect := func(n *clusterNode) (net.Conn, *paho.Client) {
		t.Helper()
		conn, err := net.Dial("tcp", n.mqtt)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho.NewClient(paho.ClientConfig{Conn: conn})
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		ca, err := cl.Connect(cctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
			Username: cr["mqtt_username"].(string), UsernameFlag: true, Password: []byte(cr["mqtt_password"].(string)), PasswordFlag: true})
		if err != nil || ca.ReasonCode != 0 {
			t.Fatalf("connect to %s: %v %+v", n.id, err, ca)
		}
		return conn, cl
	}
	type session struct {
		node      string
		gen       int64
		connected bool
	}
	stored := func() session {
		var s session
		if err := db.QueryRow(ctx, `SELECT coalesce(node, ''), coalesce(session_gen, 0), connected FROM `+schema+`.devices WHERE id = $1`, id).Scan(&s.node, &s.gen, &s.connected); err != nil {
			t.Fatal(err)
		}
		return s
	}

	connA, clA := connect(a)
	eventually.True(t, 20*time.Second, "the session on node a is stored", func() bool {
		s := stored()
		return s.connected && s.node == a.id
	})
	genA := stored().gen
	_, clB := connect(bn)
	t.Cleanup(func() { clB.Disconnect(&paho.Disconnect{}) })
	eventually.True(t, 20*time.Second, "the takeover by node b is stored", func() bool {
		s := stored()
		return s.connected && s.node == bn.id && s.gen > genA
	})
	genB := stored().gen
	// Node a has not heard of it: it still holds the old session.
	select {
	case <-clA.Done():
		t.Fatal("node a closed the old session: it heard of the takeover, the window is not forced")
	default:
	}

	// The old connection breaks (no DISCONNECT): node a reports it, and
	// either the store refuses it (node a counts it) or, as before the
	// fix, writes its device_disconnected.
	connA.Close()
	eventually.True(t, 20*time.Second, "node a reported the old session's disconnect", func() bool {
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.events WHERE device_id = $1 AND type = 'device_disconnected'`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0 || metric(t, a, "devicehub_presence_stale_changes_total") == 1
	})

	rows, err := db.Query(ctx, `SELECT type, args->>'generation', coalesce(args->>'node', '') FROM `+schema+`.events
		WHERE device_id = $1 AND type IN ('device_connected', 'device_disconnected') ORDER BY seq`, id)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var typ, gen, node string
		if err := rows.Scan(&typ, &gen, &node); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s g%s %s", typ, gen, node))
	}
	rows.Close()
	want := []string{
		fmt.Sprintf("device_connected g%d %s", genA, a.id),
		fmt.Sprintf("device_connected g%d %s", genB, bn.id),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("presence events of %s:\n got  %q\n want %q", id, got, want)
	}
	var status string
	if err := db.QueryRow(ctx, `SELECT status FROM `+schema+`.devices WHERE id = $1`, id).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if s := stored(); !s.connected || s.node != bn.id || s.gen != genB || status != "online" {
		t.Fatalf("device after the stale disconnect = %+v status %q, want connected through %s (g%d), online", s, status, bn.id, genB)
	}
}

// metric reads a counter or gauge without labels from a node's /metrics.
func metric(t *testing.T, n *clusterNode, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
