package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventually"
)

func freeBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize)
}

// postData posts a reading with a device's API key and returns the status
// and the error code of the answer.
func postData(t *testing.T, th *testHub, apiKey, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", th.base+"/api/v1/device/data", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error.Code
}

// TestDiskFullRefusal fills the filesystem of the database to below
// storage.min_free_bytes: device messages are refused (HTTP 507
// storage_full; MQTT v5 DISCONNECT 0x97, no PUBACK) and storage_low is
// stored; once space is freed they are taken again (storage_recovered).
// The database is on a 48 MiB tmpfs when the test may mount one (root);
// otherwise the floor is set above the real filesystem's free space, and
// only the refusal is checked.
func TestDiskFullRefusal(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	tmpfs := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=48m") == nil
	var floor uint64
	if tmpfs {
		// Registered before the hub's cleanup, so it runs after it.
		t.Cleanup(func() {
			if err := syscall.Unmount(mnt, 0); err != nil {
				t.Errorf("unmount %s: %v", mnt, err)
			}
		})
		floor = 24 << 20
	} else {
		t.Log("cannot mount a tmpfs: the floor is set above the free space of the real filesystem")
		floor = freeBytes(t, mnt) + 1<<30
	}
	th := startHub(t, fmt.Sprintf("storage:\n  min_free_bytes: %d\n  space_check_interval: 20ms\n  sqlite: {path: %s}\n", floor, filepath.Join(mnt, "hub.db")))
	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{Types: []events.Type{events.StorageLow, events.StorageRecovered}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cr := th.provision(t, "dev1", "WeatherStation")

	filler := filepath.Join(mnt, "filler")
	stored := 0
	if tmpfs {
		if code, _ := postData(t, th, cr.APIKey, `{"temperature": 1}`); code != 200 {
			t.Fatalf("post with room: status %d", code)
		}
		stored++
		// Leave 12 MiB: below the floor, far from full.
		if err := os.WriteFile(filler, make([]byte, freeBytes(t, mnt)-12<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	eventually.True(t, 10*time.Second, "storage_low", func() bool { return len(rec.of(events.StorageLow, "")) == 1 })
	if a, ok := rec.of(events.StorageLow, "")[0].Args.(*events.Storage); !ok || a.FloorBytes != floor || a.FreeBytes >= floor {
		t.Errorf("storage_low args %+v", rec.of(events.StorageLow, "")[0].Args)
	}
	if code, errCode := postData(t, th, cr.APIKey, `{"temperature": 2}`); code != 507 || errCode != "storage_full" {
		t.Errorf("post below the floor: status %d, code %q, want 507 storage_full", code, errCode)
	}

	// MQTT v5: no PUBACK, a DISCONNECT with 0x97 (quota exceeded).
	conn, err := net.Dial("tcp", th.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	gone := make(chan byte, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { gone <- d.ReasonCode }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "dev1", KeepAlive: 30, CleanStart: true,
		Username: cr.MQTTUsername, UsernameFlag: true, Password: []byte(cr.MQTTPassword), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if pr, err := c.Publish(pctx, &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{"temperature": 3}`)}); err == nil || (pr != nil && pr.ReasonCode < 0x80) {
		t.Errorf("publish below the floor = %+v, %v; want no PUBACK", pr, err)
	}
	select {
	case code := <-gone:
		if code != 0x97 {
			t.Errorf("DISCONNECT reason %#x, want 0x97", code)
		}
	case <-ctx.Done():
		t.Error("no DISCONNECT")
	}
	if n := th.readingCount(t, "dev1"); n != stored {
		t.Errorf("%d readings stored, want %d", n, stored)
	}
	if !tmpfs {
		return
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "storage_recovered", func() bool { return len(rec.of(events.StorageRecovered, "")) == 1 })
	if code, _ := postData(t, th, cr.APIKey, `{"temperature": 4}`); code != 200 {
		t.Errorf("post after recovery: status %d", code)
	}
	if n := th.readingCount(t, "dev1"); n != stored+1 {
		t.Errorf("%d readings stored, want %d", n, stored+1)
	}
}
