package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/registry"
)

// benchDevices is the fleet size: 10,000, or DEVICEHUB_BENCH_DEVICES.
func benchDevices() int {
	if n, err := strconv.Atoi(os.Getenv("DEVICEHUB_BENCH_DEVICES")); err == nil && n > 0 {
		return n
	}
	return 10000
}

// benchFleet is a fleet of connected paho devices subscribed to their
// commands; each notes when a command's publish reached it (paho then
// sends the PUBACK at once).
type benchFleet struct {
	th      *testHub
	ids     []string
	mu      sync.Mutex
	arrived map[string]time.Time // command id → arrival
	count   atomic.Int64
}

func newBenchFleet(b *testing.B, devices int) *benchFleet {
	b.Helper()
	th := startHub(b, "ingest: {rate_limit: {rate: 0, burst: 0}}\n")
	f := &benchFleet{th: th, arrived: map[string]time.Time{}}
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var failed atomic.Value
	for i := range devices {
		id := fmt.Sprintf("cb-%05d", i)
		f.ids = append(f.ids, id)
		cr, err := th.Registry().Provision(ctx, registry.ProvisionRequest{ID: id, Type: "WeatherStation", Group: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f.connect(b, id, cr.MQTTUsername, cr.MQTTPassword); err != nil {
				failed.Store(err)
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return f
}

func (f *benchFleet) connect(b *testing.B, id, user, pass string) error {
	conn, err := net.Dial("tcp", f.th.MQTTAddr())
	if err != nil {
		return err
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			now := time.Now()
			t := pr.Packet.Topic
			f.mu.Lock()
			f.arrived[t[len(t)-len("cmd_")-24:]] = now
			f.mu.Unlock()
			f.count.Add(1)
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 300, CleanStart: true,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true}); err != nil {
		return fmt.Errorf("connect %s: %w", id, err)
	}
	if _, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/commands/+", QoS: 1}}}); err != nil {
		return fmt.Errorf("subscribe %s: %w", id, err)
	}
	b.Cleanup(func() { _ = cl.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return nil
}

// BenchmarkCommandDispatch measures commands sent one API call each
// (POST /api/v1/devices/{id}/commands, 64 callers at once) to 10,000
// connected devices: commands/s from the first call to the last device's
// receipt of its publish (the device's PUBACK follows at once), and the
// latency of each from its API call to that receipt.
//
//	go test ./internal/hub -run '^$' -bench CommandDispatch -benchtime 20000x -count 3
func BenchmarkCommandDispatch(b *testing.B) {
	const callers = 64
	devices := benchDevices()
	f := newBenchFleet(b, devices)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}}
	sent := make([]map[string]time.Time, callers)
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
	deadline := time.Now().Add(5 * time.Minute)
	for f.count.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d commands arrived", f.count.Load(), b.N)
		}
		time.Sleep(time.Millisecond) // polling the arrival count, not synchronisation
	}
	elapsed := time.Since(start)
	b.StopTimer()
	var lat []time.Duration
	f.mu.Lock()
	for _, m := range sent {
		for id, t0 := range m {
			lat = append(lat, f.arrived[id].Sub(t0))
		}
	}
	f.mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cmds/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkFleetCommand measures one fleet command (POST
// /api/v1/fleet/commands, target: the group of 10,000 connected devices):
// the time from the call to the last device's receipt of its publish, and
// how long the call itself took.
//
//	go test ./internal/hub -run '^$' -bench FleetCommand -benchtime 1x -count 3
func BenchmarkFleetCommand(b *testing.B) {
	devices := benchDevices()
	f := newBenchFleet(b, devices)
	b.ResetTimer()
	var total, call time.Duration
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
		deadline := time.Now().Add(5 * time.Minute)
		for f.count.Load() < before+int64(devices) {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d arrived", f.count.Load()-before, devices)
			}
			time.Sleep(time.Millisecond) // polling the arrival count, not synchronisation
		}
		total += time.Since(start)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-all-delivered")
	b.ReportMetric(float64(call.Microseconds())/1000/float64(b.N), "call-ms")
	b.ReportMetric(float64(devices*b.N)/total.Seconds(), "cmds/s")
}
