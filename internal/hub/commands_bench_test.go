package hub_test

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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/childproc"
	"github.com/devicehub/devicehub/internal/registry"
)

// benchDevices is the fleet size: 10,000, or DEVICEHUB_BENCH_DEVICES.
func benchDevices() int {
	if n, err := strconv.Atoi(os.Getenv("DEVICEHUB_BENCH_DEVICES")); err == nil && n > 0 {
		return n
	}
	return 10000
}

// The command benchmarks' devices run in a child process (this test
// binary started again with fleetChildEnv set, see TestMain): a process
// may hold 20,000 open files here, and 10,000 devices need 10,000 sockets
// on each side.
const (
	fleetChildEnv = "DEVICEHUB_BENCH_FLEET_CHILD" // the credentials file
	fleetAddrEnv  = "DEVICEHUB_BENCH_FLEET_ADDR"  // the hub's MQTT address
	fleetIdleEnv  = "DEVICEHUB_BENCH_FLEET_IDLE"  // set: connect only, 10 s keepalive, no subscription
)

// benchFleet is a hub with connected paho devices (in a child process)
// subscribed to their commands at QoS 1. It follows the hub's
// device_command_delivered events: each is the device's PUBACK as the
// hub received it (the event's time) and recorded it (its arrival here,
// after the commit).
type benchFleet struct {
	th        *testHub
	ids       []string
	mu        sync.Mutex
	delivered map[string]time.Time // command id → the hub received the PUBACK
	lastSeen  time.Time            // the last delivered event reached this subscriber
	count     atomic.Int64
}

func newBenchFleet(b *testing.B, devices int) *benchFleet {
	b.Helper()
	th := startHub(b, "ingest: {rate_limit: {rate: 0, burst: 0}}\n")
	f := &benchFleet{th: th, delivered: map[string]time.Time{}}
	sub, err := th.Subscribe(events.Filter{Types: []events.Type{events.DeviceCommandDelivered}}, 0, func(e events.Event) {
		a, ok := e.Args.(*events.CommandDelivered)
		if !ok {
			return
		}
		now := time.Now()
		f.mu.Lock()
		f.delivered[a.CommandID] = e.Time
		f.lastSeen = now
		f.mu.Unlock()
		f.count.Add(1)
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sub.Close)

	f.ids = startFleet(b, th, "cb-", devices, false, nil)
	return f
}

// startFleet provisions devices WeatherStations named prefix00000... and
// connects them from a child process (see runFleetChild; idle: see
// childDevice); it returns their ids once all are connected, and the
// child disconnects them when the benchmark ends. beforeConnect, if set,
// runs once the devices are provisioned, before the first connects.
func startFleet(b *testing.B, th *testHub, prefix string, devices int, idle bool, beforeConnect func()) []string {
	b.Helper()
	ctx := context.Background()
	var ids []string
	var lines strings.Builder
	for i := range devices {
		id := fmt.Sprintf("%s%05d", prefix, i)
		ids = append(ids, id)
		cr, err := th.Registry().Provision(ctx, registry.ProvisionRequest{ID: id, Type: "WeatherStation", Group: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&lines, "%s %s %s\n", id, cr.MQTTUsername, cr.MQTTPassword)
	}
	credsFile := filepath.Join(b.TempDir(), "fleet.txt")
	if err := os.WriteFile(credsFile, []byte(lines.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	if beforeConnect != nil {
		beforeConnect()
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fleetChildEnv+"="+credsFile, fleetAddrEnv+"="+th.MQTTAddr())
	if idle {
		cmd.Env = append(cmd.Env, fleetIdleEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	childproc.DieWithParent(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the child disconnects its devices and exits
		if err := cmd.Wait(); err != nil {
			b.Errorf("device process: %v", err)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != fmt.Sprintf("ready %d\n", devices) {
		b.Fatalf("device process: %q %v", line, err)
	}
	return ids
}

// runFleetChild is the device process: it connects every device of the
// credentials file, subscribes each to its commands at QoS 1 (paho
// acknowledges every publish at once), prints "ready N" and keeps them
// connected until its stdin closes.
func runFleetChild(credsFile, addr string) int {
	b, err := os.ReadFile(credsFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex
	var clients []*paho.Client
	var failed atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, l := range lines {
		fs := strings.Fields(l)
		if len(fs) != 3 {
			fmt.Fprintf(os.Stderr, "bad line %q\n", l)
			return 1
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			cl, err := childDevice(addr, fs[0], fs[1], fs[2], os.Getenv(fleetIdleEnv) != "")
			if err != nil {
				failed.Store(err)
				return
			}
			mu.Lock()
			clients = append(clients, cl)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %d\n", len(clients))
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, cl := range clients {
		_ = cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
	return 0
}

// childDevice connects one device. An idle device is the bench's
// connections scenario's: a 10 s keepalive and no subscription; the
// others keep 300 s and subscribe to their commands at QoS 1.
func childDevice(addr, id, user, pass string, idle bool) (*paho.Client, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(paho.PublishReceived) (bool, error) { return true, nil }}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	keepAlive := uint16(300)
	if idle {
		keepAlive = 10
	}
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: keepAlive, CleanStart: true,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true}); err != nil {
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	if idle && os.Getenv("DEVICEHUB_BENCH_SUBSCRIBE") != "" {
		// as the Go SDK's devices subscribe after every connect
		if _, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: "devices/" + id + "/commands/+", QoS: 1},
			{Topic: "devices/" + id + "/twin/desired", QoS: 1},
		}}); err != nil {
			return nil, fmt.Errorf("subscribe %s: %w", id, err)
		}
	}
	if idle {
		return cl, nil
	}
	if _, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/commands/+", QoS: 1}}}); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", id, err)
	}
	return cl, nil
}

// waitDelivered waits until n delivered events arrived in total.
func (f *benchFleet) waitDelivered(b *testing.B, n int64) {
	deadline := time.Now().Add(5 * time.Minute)
	for f.count.Load() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d commands delivered", f.count.Load(), n)
		}
		time.Sleep(time.Millisecond) // polling the delivered count, not synchronisation
	}
}

// BenchmarkCommandDispatch measures commands sent one API call each
// (POST /api/v1/devices/{id}/commands, 64 callers at once) to 10,000
// connected devices (in another process): commands/s from the first call
// to the hub's receipt of the last device's PUBACK, and the latency of
// each command from its API call to that PUBACK (the time of its
// device_command_delivered event).
//
//	go test ./internal/hub -run '^$' -bench CommandDispatch -benchtime 20000x -count 3
func BenchmarkCommandDispatch(b *testing.B) {
	const callers = 64
	devices := benchDevices()
	f := newBenchFleet(b, devices)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}}
	sent := make([]map[string]time.Time, callers)
	before := f.count.Load()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := range callers {
		sent[w] = map[string]time.Time{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				dev := f.ids[int(i)%devices]
				t0 := time.Now()
				req, _ := http.NewRequest("POST", f.th.base+"/api/v1/devices/"+dev+"/commands", jsonBody(map[string]any{"command": "reboot"}))
				req.Header.Set("Authorization", "Bearer "+f.th.token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				var out struct {
					Command struct {
						ID     string `json:"id"`
						Status string `json:"status"`
					} `json:"command"`
				}
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 201 {
					b.Errorf("send: %d %+v %v", resp.StatusCode, out, err)
					return
				}
				sent[w][out.Command.ID] = t0
			}
		}()
	}
	wg.Wait()
	f.waitDelivered(b, before+int64(b.N))
	b.StopTimer()
	var lat []time.Duration
	var last time.Time
	f.mu.Lock()
	for _, m := range sent {
		for id, t0 := range m {
			at, ok := f.delivered[id]
			if !ok {
				b.Fatalf("command %s: no delivered event", id)
			}
			lat = append(lat, at.Sub(t0))
			if at.After(last) {
				last = at
			}
		}
	}
	recorded := f.lastSeen
	f.mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/last.Sub(start).Seconds(), "cmds/s")
	b.ReportMetric(float64(b.N)/recorded.Sub(start).Seconds(), "recorded-cmds/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkFleetCommand measures one fleet command (POST
// /api/v1/fleet/commands, target: the group of 10,000 connected devices,
// in another process): the time from the call to the hub's receipt of
// the last device's PUBACK, to the last delivered state recorded, and
// how long the call itself took.
//
//	go test ./internal/hub -run '^$' -bench FleetCommand -benchtime 1x -count 3
func BenchmarkFleetCommand(b *testing.B) {
	devices := benchDevices()
	f := newBenchFleet(b, devices)
	b.ResetTimer()
	var total, recorded, call time.Duration
	for range b.N {
		before := f.count.Load()
		start := time.Now()
		var out struct {
			Job struct {
				ID string `json:"id"`
			} `json:"job"`
		}
		req, _ := http.NewRequest("POST", f.th.base+"/api/v1/fleet/commands", jsonBody(map[string]any{"command": "reboot", "target": map[string]any{"group": "bench"}}))
		req.Header.Set("Authorization", "Bearer "+f.th.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 202 {
			b.Fatalf("start: %d %v", resp.StatusCode, err)
		}
		call += time.Since(start)
		f.waitDelivered(b, before+int64(devices))
		var last time.Time
		f.mu.Lock()
		for _, at := range f.delivered {
			if at.After(last) {
				last = at
			}
		}
		clear(f.delivered)
		seen := f.lastSeen
		f.mu.Unlock()
		total += last.Sub(start)
		recorded += seen.Sub(start)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-all-delivered")
	b.ReportMetric(recorded.Seconds()/float64(b.N), "s-to-all-recorded")
	b.ReportMetric(float64(call.Microseconds())/1000/float64(b.N), "call-ms")
	b.ReportMetric(float64(devices*b.N)/total.Seconds(), "cmds/s")
}
