package hub_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/monitorclient"
)

// webhookReceiver is a real HTTP receiver of a monitor's deliveries: it
// checks their signatures and counts every event by Seq and type.
type webhookReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	secret string
	got    map[int64]int
	types  map[string]int
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	r := &webhookReceiver{got: map[int64]int{}, types: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		s := r.secret
		r.mu.Unlock()
		monitorclient.NewHandler(monitorclient.HandlerOptions{Secrets: []string{s}}, func(_ context.Context, bt *monitorclient.Batch) error {
			r.mu.Lock()
			for _, e := range bt.Events {
				r.got[e.Seq]++
				r.types[string(e.Type)]++
			}
			r.mu.Unlock()
			return nil
		}).ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *webhookReceiver) setSecret(s string) {
	r.mu.Lock()
	r.secret = s
	r.mu.Unlock()
}

func (r *webhookReceiver) count(typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.types[typ]
}

// TestClusterMonitorsChangedThroughOtherNode: a push monitor created,
// changed and deleted through the node that does not run the monitors is
// picked up by the node that does; a stream receiver connecting to the
// other node is refused with the name of the node running them.
func TestClusterMonitorsChangedThroughOtherNode(t *testing.T) {
	hubs := startCluster(t, 2, "monitors:\n  addr: 127.0.0.1:0\n  allow_private_targets: true\n  min_backoff: 10ms\n  max_backoff: 50ms\n")
	var owner, other *testHub
	eventually.True(t, 20*time.Second, "a node holds job/monitors", func() bool {
		switch leaseHolder(t, hubs[0], "job/monitors") {
		case "node-0":
			owner, other = hubs[0], hubs[1]
		case "node-1":
			owner, other = hubs[1], hubs[0]
		default:
			return false
		}
		return true
	})
	ownerID := leaseHolder(t, hubs[0], "job/monitors")
	ctx := context.Background()
	api := client.New(other.base, other.token, nil)
	rcv := newWebhookReceiver(t)
	d := 0.01
	hm, err := api.CreateHTTPMonitor(ctx, []string{"device_data_received"}, rcv.URL, client.MonitorSpec{Method: "POST", BatchDuration: &d})
	if err != nil {
		t.Fatal(err)
	}
	rcv.setSecret(hm.Secret)

	cr := owner.provision(t, "mon-x", "WeatherStation")
	mc := dialOn(t, owner, "mon-x", cr, "devices/mon-x/commands/+")
	if _, err := publish(t, mc, "devices/mon-x/data", `{"temperature": 1}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, "the monitor created through the other node delivers", func() bool {
		return rcv.count("device_data_received") == 1
	})

	// Changed through the other node: its new topics are delivered.
	if _, err := api.UpdateMonitor(ctx, hm.Monitor.ID, map[string]any{"topics": []string{"device_data_received", "device_disconnected"}}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, "the node running the monitors took the new topics", func() bool {
		m, err := client.New(owner.base, owner.token, nil).Monitor(ctx, hm.Monitor.ID)
		return err == nil && len(m.Topics) == 2
	})
	mc.Disconnect(&paho.Disconnect{ReasonCode: 0})
	eventually.True(t, 20*time.Second, "the changed monitor delivers its new topic", func() bool {
		return rcv.count("device_disconnected") == 1
	})

	// Deleted through the other node: the running node drops it.
	if err := api.DeleteMonitor(ctx, hm.Monitor.ID); err != nil {
		t.Fatal(err)
	}
	eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := client.New(owner.base, owner.token, nil).Monitor(ctx, hm.Monitor.ID)
		if err == nil {
			return fmt.Errorf("the node running the monitors still has %s", hm.Monitor.ID)
		}
		return nil
	})

	// A stream receiver at the node that does not run the monitors is
	// told which node does.
	tm, err := api.CreateTCPMonitor(ctx, []string{"device_data_received"}, client.MonitorSpec{})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = monitorclient.NewStream(monitorclient.StreamOptions{Addr: other.MonitorAddr(), MonitorID: tm.Monitor.ID, Token: tm.Token,
		Callback: func(*monitorclient.Batch) bool { return true }}).Run(sctx)
	if !errors.Is(err, monitorclient.ErrRefused) || !strings.Contains(err.Error(), ownerID) {
		t.Fatalf("stream at the node not running the monitors: %v, want refused naming %s", err, ownerID)
	}
	// At the node running them it is accepted (once it has the monitor).
	connected := make(chan struct{})
	var once sync.Once
	go func() {
		_ = monitorclient.NewStream(monitorclient.StreamOptions{Addr: owner.MonitorAddr(), MonitorID: tm.Monitor.ID, Token: tm.Token,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
			OnConnect: func(monitorclient.ConnectResponse) { once.Do(func() { close(connected) }) },
			Callback:  func(*monitorclient.Batch) bool { return true }}).Run(sctx)
	}()
	select {
	case <-connected:
	case <-sctx.Done():
		t.Fatal("the stream was not accepted by the node running the monitors")
	}
}
