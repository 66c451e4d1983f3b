package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/twin"
)

func testDeviceCommands(t *testing.T, b Backend) {
	st := b
	ctx := context.Background()
	provision(t, b, "d1", "d2")

	newCmd := func(id string, sec int) *commit.Change {
		return &commit.Change{DeviceID: "d1", Ops: []commit.Op{&commands.Change{Create: &commands.Command{
			ID: id, Command: "reboot", Payload: []byte(`{"delay":5}`), Status: commands.StatusPending,
			CreatedAt: at(sec), ExpiresAt: at(sec + 3600), UpdatedAt: at(sec),
		}}}}
	}
	c1, c2 := newCmd("c1", 1), newCmd("c2", 2)
	mustCommit(t, b, c1, c2)
	if c1.Err != nil || c2.Err != nil {
		t.Fatal(c1.Err, c2.Err)
	}
	dup := newCmd("c1", 3)
	mustCommit(t, b, dup)
	wantErr(t, "create twice", dup.Err, commit.ErrConflict)

	// Sent, with its event; then answered with the device's message.
	sentAt := at(4)
	sent := &commit.Change{DeviceID: "d1", Ops: []commit.Op{&commands.Change{ID: "c1", Status: commands.StatusSent,
		From: []string{commands.StatusPending, commands.StatusSent}, SentAt: &sentAt, At: at(4)}},
		Events: []commit.Event{mustEvent(t, events.Event{Type: events.DeviceCommandSent, Time: at(4), DeviceID: "d1",
			Args: &events.CommandSent{CommandID: "c1", Command: "reboot"}})}}
	wrongDevice := &commit.Change{DeviceID: "d2", Ops: []commit.Op{&commands.Change{ID: "c2", Status: commands.StatusSent, At: at(4)}}}
	mustCommit(t, b, sent, wrongDevice)
	if sent.Err != nil {
		t.Fatal(sent.Err)
	}
	checkSeqs(t, sent, true)
	wantErr(t, "update of another device's command", wrongDevice.Err, commit.ErrConflict)

	result := &commit.Change{DeviceID: "d1",
		Ops: []commit.Op{&readings.Message{ID: nextMessageID(), Topic: "devices/d1/commands/c1/result", Transport: "mqtt", QoS: 1,
			Payload: []byte(`{"status":"succeeded"}`), Accepted: true, ReceivedAt: at(5)}, &commands.Change{ID: "c1", Status: commands.StatusSucceeded, Result: []byte(`{"ok":true}`), At: at(5)}}}
	expireC1 := &commit.Change{DeviceID: "d1", Ops: []commit.Op{&commands.Change{ID: "c1", Status: commands.StatusExpired,
		From: []string{commands.StatusPending, commands.StatusSent}, At: at(6)}}}
	mustCommit(t, b, result, expireC1)
	if result.Err != nil {
		t.Fatal(result.Err)
	}
	wantErr(t, "expire an answered command", expireC1.Err, commit.ErrConflict)

	got, err := st.GetCommand(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != commands.StatusSucceeded || got.Sends != 1 || got.SentAt == nil || !got.SentAt.Equal(at(4)) ||
		got.FinishedAt == nil || !got.FinishedAt.Equal(at(5)) || !got.CreatedAt.Equal(at(1)) || !got.ExpiresAt.Equal(at(3601)) {
		t.Errorf("c1 %+v", got)
	}
	equalJSON(t, "payload", jsonValue(t, got.Payload), map[string]any{"delay": 5.0})
	equalJSON(t, "result", jsonValue(t, got.Result), map[string]any{"ok": true})
	if _, err := st.GetCommand(ctx, "nope"); !errors.Is(err, commands.ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}

	list, err := st.ListCommands(ctx, commands.ListOptions{DeviceID: "d1", Limit: 10})
	if err != nil || len(list) != 2 || list[0].ID != "c2" || list[1].ID != "c1" {
		t.Errorf("list %+v %v", list, err)
	}
	list, err = st.ListCommands(ctx, commands.ListOptions{DeviceID: "d1", Status: commands.StatusPending, Limit: 10})
	if err != nil || len(list) != 1 || list[0].ID != "c2" {
		t.Errorf("list pending %+v %v", list, err)
	}
	open, err := st.OpenCommands(ctx)
	if err != nil || len(open) != 1 || open[0].ID != "c2" {
		t.Errorf("open %+v %v", open, err)
	}
}

func testDeviceTwin(t *testing.T, b Backend) {
	st := b
	ctx := context.Background()
	provision(t, b, "t1")
	tw, err := st.GetTwin(ctx, "t1")
	if err != nil || tw.DesiredVersion != 0 || len(tw.Desired) != 0 || len(tw.Reported) != 0 {
		t.Fatalf("empty twin %+v %v", tw, err)
	}
	desired := func(v int64, values string) *commit.Change {
		return &commit.Change{DeviceID: "t1", Ops: []commit.Op{&twin.Change{Desired: []byte(values), DesiredVersion: v, At: at(int(v))}}}
	}
	reported := func(patch string, sec int) *commit.Change {
		return &commit.Change{DeviceID: "t1", Ops: []commit.Op{&twin.Change{Reported: []byte(patch), At: at(sec)}}}
	}
	// A reported patch before any desired properties, then versions 1
	// and 2; a stale version 2 conflicts.
	r1 := reported(`{"fw":"1.0","net":{"rssi":-70,"ssid":"a"}}`, 1)
	d1, d2, stale := desired(1, `{"interval":10}`), desired(2, `{"interval":20}`), desired(2, `{"interval":30}`)
	r2 := reported(`{"net":{"rssi":-60,"ssid":null},"led":true}`, 3)
	mustCommit(t, b, r1, d1, d2, stale, r2)
	for _, ch := range []*commit.Change{r1, d1, d2, r2} {
		if ch.Err != nil {
			t.Fatal(ch.Err)
		}
	}
	wantErr(t, "stale desired version", stale.Err, commit.ErrConflict)
	skip := desired(5, `{}`)
	mustCommit(t, b, skip)
	wantErr(t, "skipped desired version", skip.Err, commit.ErrConflict)

	tw, err = st.GetTwin(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if tw.DesiredVersion != 2 || tw.ReportedVersion != 2 || tw.DesiredAt == nil || !tw.DesiredAt.Equal(at(2)) ||
		tw.ReportedAt == nil || !tw.ReportedAt.Equal(at(3)) {
		t.Errorf("twin %+v", tw)
	}
	equalJSON(t, "desired", tw.Desired, map[string]any{"interval": 20.0})
	equalJSON(t, "reported", tw.Reported, map[string]any{"fw": "1.0", "led": true, "net": map[string]any{"rssi": -60.0}})

	// A first desired version for a device without a twin row.
	provision(t, b, "t3")
	d3 := &commit.Change{DeviceID: "t3", Ops: []commit.Op{&twin.Change{Desired: []byte(`{"a":1}`), DesiredVersion: 1, At: at(9)}}}
	mustCommit(t, b, d3)
	if d3.Err != nil {
		t.Fatal(d3.Err)
	}
	// t4 has reported properties only: not a desired twin.
	provision(t, b, "t4")
	r4 := &commit.Change{DeviceID: "t4", Ops: []commit.Op{&twin.Change{Reported: []byte(`{"a":1}`), At: at(9)}}}
	mustCommit(t, b, r4)
	ds, err := st.DesiredTwins(ctx)
	if err != nil || len(ds) != 2 || ds[0].DeviceID != "t1" || ds[0].DesiredVersion != 2 || ds[1].DeviceID != "t3" ||
		ds[1].Desired["a"] != 1.0 || ds[1].DesiredAt == nil || !ds[1].DesiredAt.Equal(at(9)) {
		t.Errorf("desired twins %+v %v", ds, err)
	}
}

// testDeviceCmd runs the command and twin tests on one backend.
func testDeviceCmd(t *testing.T, b Backend) {
	t.Run("Commands", func(t *testing.T) { testDeviceCommands(t, b) })
	t.Run("Twin", func(t *testing.T) { testDeviceTwin(t, b) })
}

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}
