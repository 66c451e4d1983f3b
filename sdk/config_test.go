package sdk_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/sdk"
)

// TestE2EConfig: a device with OnConfig against the real hub. A template
// change reaches it (retained notice, HTTP download, checksum verified),
// it applies and reports, and the status moves to applied; an error from
// OnConfig is reported with its text; a configuration changed while the
// device was offline is applied when it comes back; a report made while
// the hub is down is sent on reconnect.
func TestE2EConfig(t *testing.T) {
	dir, mqttAddr := t.TempDir(), freePort(t)
	th := startHub(t, dir, mqttAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	creds := provision(t, th.api, "cfg-1")
	tpl := func(server string) client.TemplateSpec {
		return client.TemplateSpec{ID: "ntp", Config: map[string]any{"ntp": map[string]any{"server": server, "device": "{{ device_id }}"}}}
	}
	if _, err := th.api.CreateTemplate(ctx, tpl("a.example")); err != nil {
		t.Fatal(err)
	}
	if _, err := th.api.SetDeviceConfig(ctx, "cfg-1", client.DeviceConfigUpdate{Templates: &[]string{"ntp"}}); err != nil {
		t.Fatal(err)
	}
	status := func(want string) *client.DeviceConfig {
		t.Helper()
		var got *client.DeviceConfig
		eventually.True(t, 30*time.Second, "config status "+want, func() bool {
			c, err := th.api.DeviceConfig(ctx, "cfg-1")
			if err != nil {
				t.Fatal(err)
			}
			got = c
			return c.Status == want
		})
		return got
	}

	type applied struct {
		cfg sdk.Config
	}
	got := make(chan applied, 16)
	var fail error // read by OnConfig between client lifetimes only
	opts := func() sdk.Options {
		return sdk.Options{DB: filepath.Join(dir, "device.db"), Server: "http://" + th.HTTPAddr(), MQTTServer: "mqtt://" + mqttAddr,
			Credentials: creds, OnConfig: func(c sdk.Config) error { got <- applied{c}; return fail }}
	}
	next := func() sdk.Config {
		t.Helper()
		select {
		case a := <-got:
			sum := sha256.Sum256(a.cfg.Data)
			if hex.EncodeToString(sum[:]) != a.cfg.Checksum || a.cfg.Backend != "json" {
				t.Fatalf("config %+v: checksum is not the bytes'", a.cfg)
			}
			return a.cfg
		case <-ctx.Done():
			t.Fatal("OnConfig not called")
		}
		return sdk.Config{}
	}

	// Online: the current configuration, then a template change.
	c := startClient(t, opts())
	first := next()
	if !strings.Contains(string(first.Data), `"a.example"`) || !strings.Contains(string(first.Data), `"cfg-1"`) {
		t.Fatalf("config %s", first.Data)
	}
	if s := status("applied"); s.Checksum != first.Checksum || s.AppliedChecksum != first.Checksum {
		t.Fatalf("status %+v, applied %s", s, first.Checksum)
	}
	if _, err := th.api.UpdateTemplate(ctx, "ntp", tpl("b.example")); err != nil {
		t.Fatal(err)
	}
	second := next()
	if second.Checksum == first.Checksum || !strings.Contains(string(second.Data), `"b.example"`) {
		t.Fatalf("after the edit: %s", second.Data)
	}
	if s := status("applied"); s.Checksum != second.Checksum {
		t.Fatalf("status %+v, applied %s", s, second.Checksum)
	}

	// Offline while the template changes; back with an OnConfig that
	// fails: the error text is the status's.
	c.Close()
	if _, err := th.api.UpdateTemplate(ctx, "ntp", tpl("c.example")); err != nil {
		t.Fatal(err)
	}
	status("modified")
	fail = errors.New("ntp server c.example unreachable")
	c = startClient(t, opts())
	third := next()
	if !strings.Contains(string(third.Data), `"c.example"`) {
		t.Fatalf("after reconnect: %s", third.Data)
	}
	if s := status("error"); s.Error != fail.Error() || s.Checksum != third.Checksum {
		t.Fatalf("status %+v", s)
	}
	c.Close()

	// The report of a configuration applied while the hub is down waits in
	// the outbox and is sent once the hub is back.
	fail = nil
	if _, err := th.api.UpdateTemplate(ctx, "ntp", tpl("d.example")); err != nil {
		t.Fatal(err)
	}
	status("modified")
	release := make(chan struct{})
	o := opts()
	o.OnConfig = func(c sdk.Config) error {
		got <- applied{c}
		<-release
		return nil
	}
	c = startClient(t, o)
	fourth := next()
	th.stop()
	close(release)
	eventually.True(t, 10*time.Second, "the report in the outbox", func() bool { return c.PendingMessages() == 1 })
	th = startHub(t, dir, mqttAddr)
	if err := c.WaitSent(ctx); err != nil {
		t.Fatal(err)
	}
	if s := status("applied"); s.Checksum != fourth.Checksum {
		t.Fatalf("status %+v, applied %s", s, fourth.Checksum)
	}
	select {
	case a := <-got:
		t.Fatalf("configuration %s given again", a.cfg.Checksum)
	default:
	}
}
