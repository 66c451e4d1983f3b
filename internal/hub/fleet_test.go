package hub_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/eventually"
)

// answeringDevice connects a real MQTT client (paho) that subscribes to
// its commands and answers each with succeeded.
func answeringDevice(t testing.TB, addr, id string, c creds) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var cl *paho.Client
	answers := make(chan string, 16)
	cl = paho.NewClient(paho.ClientConfig{Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case answers <- pr.Packet.Topic:
			default:
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 60, CleanStart: true,
		Username: c.MQTTUsername, UsernameFlag: true, Password: []byte(c.MQTTPassword), PasswordFlag: true}); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	if _, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/commands/+", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe %s: %v", id, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-cl.Done():
				return
			case topic := <-answers:
				pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, _ = cl.Publish(pctx, &paho.Publish{Topic: topic + "/result", QoS: 1, Payload: []byte(`{"status":"succeeded"}`)})
				pcancel()
			}
		}
	}()
	t.Cleanup(func() {
		_ = cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
		<-done
	})
}

// TestE2EFleetCommand: one call sends a command to 1,000 connected
// devices of a group; the call answers at once with a job, which fans
// out in the background; the summary counts them all succeeded, and the
// per-device list pages through the thousand.
func TestE2EFleetCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 devices: not in -short")
	}
	const n = 1000
	th := startHub(t, "")
	th.do(t, "POST", "/api/v1/groups", map[string]any{"id": "fleet", "name": "fleet"}, nil)
	cs := make([]creds, n)
	for i := range n {
		id := fmt.Sprintf("fl-%04d", i)
		var out struct {
			Credentials creds `json:"credentials"`
		}
		tags := []string{}
		if i%2 == 0 {
			tags = append(tags, "even")
		}
		if code := th.do(t, "POST", "/api/v1/devices", map[string]any{"id": id, "type": "WeatherStation", "group": "fleet", "tags": tags}, &out); code != 201 {
			t.Fatalf("provision %s: %d", id, code)
		}
		cs[i] = out.Credentials
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			answeringDevice(t, th.MQTTAddr(), fmt.Sprintf("fl-%04d", i), cs[i])
		}()
	}
	wg.Wait()

	type jobAnswer struct {
		Job struct {
			ID      string `json:"id"`
			Status  string `json:"status"`
			Targets int    `json:"targets"`
			Refused int    `json:"refused"`
		} `json:"job"`
		Summary *struct {
			Queued, Sent, Delivered, Succeeded, Failed, Expired int
		} `json:"summary"`
	}
	var started jobAnswer
	if code := th.do(t, "POST", "/api/v1/fleet/commands", map[string]any{"command": "reboot", "target": map[string]any{"group": "fleet"}}, &started); code != 202 || started.Job.ID == "" {
		t.Fatalf("start: %d %+v", code, started)
	}
	var got jobAnswer
	// The results can all be in before the fan-out marks the job done:
	// wait for both.
	eventually.True(t, 120*time.Second, "1,000 commands succeeded and the job done", func() bool {
		got = jobAnswer{}
		th.do(t, "GET", "/api/v1/fleet/commands/"+started.Job.ID, nil, &got)
		return got.Summary != nil && got.Summary.Succeeded == n && got.Job.Status == "done"
	})
	if got.Job.Status != "done" || got.Job.Targets != n || got.Job.Refused != 0 {
		t.Fatalf("job %+v", got.Job)
	}
	// The per-device list pages through all of them, once each.
	seen := map[string]bool{}
	for after, pages := "", 0; ; pages++ {
		var page struct {
			Commands []struct {
				DeviceID string `json:"device_id"`
				Status   string `json:"status"`
				JobID    string `json:"job_id"`
			} `json:"commands"`
			Next string `json:"next"`
		}
		th.do(t, "GET", "/api/v1/fleet/commands/"+started.Job.ID+"/devices?limit=300&after="+after, nil, &page)
		for _, c := range page.Commands {
			if seen[c.DeviceID] || c.Status != "succeeded" || c.JobID != started.Job.ID {
				t.Fatalf("page %d: %+v", pages, c)
			}
			seen[c.DeviceID] = true
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if len(seen) != n {
		t.Fatalf("listed %d devices, want %d", len(seen), n)
	}

	// A filter by tag, online only: the even half.
	var tagged jobAnswer
	th.do(t, "POST", "/api/v1/fleet/commands", map[string]any{"command": "set_interval", "payload": map[string]any{"seconds": 5},
		"target": map[string]any{"group": "fleet", "tag": "even", "online_only": true}}, &tagged)
	eventually.True(t, 120*time.Second, "500 commands succeeded", func() bool {
		got = jobAnswer{}
		th.do(t, "GET", "/api/v1/fleet/commands/"+tagged.Job.ID, nil, &got)
		return got.Summary != nil && got.Summary.Succeeded == n/2 && got.Job.Status == "done"
	})
	if got.Job.Targets != n/2 {
		t.Fatalf("tagged job %+v", got.Job)
	}
	if !strings.HasPrefix(started.Job.ID, "job_") {
		t.Fatalf("job id %q", started.Job.ID)
	}
}
