package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/twin"
)

func testDeviceCommands(t *testing.T, b Backend) {
	st := b
	ctx := context.Background()
	provision(t, b, "d1", "d2")

	newCmd := func(id string, sec int) *commit.Change {
		return &commit.Change{DeviceID: "d1", Ops: []commit.Op{&commands.Change{Create: &commands.Command{
			ID: id, Command: "reboot", Payload: []byte(`{"delay":5}`), Status: commands.StatusQueued,
			CreatedAt: at(sec), ExpiresAt: at(sec + 3600), UpdatedAt: at(sec), JobID: "job_1",
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

	move := func(dev, id, to string, from []string, sec int, set func(*commands.Change)) *commit.Change {
		c := &commands.Change{ID: id, Status: to, From: from, At: at(sec)}
		if set != nil {
			set(c)
		}
		return &commit.Change{DeviceID: dev, Ops: []commit.Op{c}}
	}
	sentAt := func(sec int) func(*commands.Change) {
		return func(c *commands.Change) { tm := at(sec); c.SentAt = &tm }
	}
	open := []string{commands.StatusQueued, commands.StatusSent, commands.StatusDelivered}

	// Delivered before sent is refused; sent with its event; sent again
	// (a resend) keeps the first send time; then delivered.
	early := move("d1", "c1", commands.StatusDelivered, []string{commands.StatusSent}, 3, nil)
	mustCommit(t, b, early)
	wantErr(t, "delivered while queued", early.Err, commit.ErrConflict)
	sent := move("d1", "c1", commands.StatusSent, []string{commands.StatusQueued, commands.StatusSent}, 4, sentAt(4))
	sent.Events = []commit.Event{mustEvent(t, events.Event{Type: events.DeviceCommandSent, Time: at(4), DeviceID: "d1",
		Args: &events.CommandSent{CommandID: "c1", Command: "reboot"}})}
	wrongDevice := move("d2", "c2", commands.StatusSent, []string{commands.StatusQueued}, 4, sentAt(4))
	mustCommit(t, b, sent, wrongDevice)
	if sent.Err != nil {
		t.Fatal(sent.Err)
	}
	checkSeqs(t, sent, true)
	wantErr(t, "update of another device's command", wrongDevice.Err, commit.ErrConflict)
	resent := move("d1", "c1", commands.StatusSent, []string{commands.StatusQueued, commands.StatusSent}, 5, sentAt(5))
	delivered := move("d1", "c1", commands.StatusDelivered, []string{commands.StatusSent}, 6, func(c *commands.Change) { tm := at(6); c.DeliveredAt = &tm })
	mustCommit(t, b, resent, delivered)
	if resent.Err != nil || delivered.Err != nil {
		t.Fatal(resent.Err, delivered.Err)
	}
	got, err := st.GetCommand(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != commands.StatusDelivered || got.Sends != 2 || got.Resends() != 1 || !timeIs(got.FirstSentAt, at(4)) ||
		!timeIs(got.SentAt, at(5)) || !timeIs(got.DeliveredAt, at(6)) || got.FinishedAt != nil || got.JobID != "job_1" {
		t.Errorf("c1 delivered %+v", got)
	}

	// The device's answer, with its message: from delivered to succeeded.
	resultMsg := func(id string, sec int) *readings.Message {
		return &readings.Message{ID: nextMessageID(), Topic: "devices/d1/commands/" + id + "/result", Transport: "mqtt", QoS: 1,
			Payload: []byte(`{"status":"succeeded"}`), Accepted: true, ReceivedAt: at(sec)}
	}
	result := &commit.Change{DeviceID: "d1", Ops: []commit.Op{resultMsg("c1", 7),
		&commands.Change{ID: "c1", Status: commands.StatusSucceeded, From: open, Result: []byte(`{"ok":true}`), DeliveredAt: ptrTime(at(7)), At: at(7)}}}
	expireC1 := move("d1", "c1", commands.StatusExpired, open, 8, nil)
	mustCommit(t, b, result, expireC1)
	if result.Err != nil {
		t.Fatal(result.Err)
	}
	wantErr(t, "expire an answered command", expireC1.Err, commit.ErrConflict)
	got, err = st.GetCommand(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	// A result carries a delivery time too (it proves delivery); the
	// first one stored is kept.
	if got.Status != commands.StatusSucceeded || !timeIs(got.FinishedAt, at(7)) || !timeIs(got.DeliveredAt, at(6)) ||
		!got.CreatedAt.Equal(at(1)) || !got.ExpiresAt.Equal(at(3601)) {
		t.Errorf("c1 %+v", got)
	}
	equalJSON(t, "payload", jsonValue(t, got.Payload), map[string]any{"delay": 5.0})
	equalJSON(t, "result", jsonValue(t, got.Result), map[string]any{"ok": true})
	if _, err := st.GetCommand(ctx, "nope"); !errors.Is(err, commands.ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}

	// The race of an answer and the expiry, in both orders within one
	// batch: the first wins, the second changes nothing, and a refused
	// answer leaves no accepted message behind.
	for _, answerFirst := range []bool{true, false} {
		id := fmt.Sprintf("race_%v", answerFirst)
		mustCommit(t, b, newCmd(id, 10))
		msg := resultMsg(id, 11)
		answer := &commit.Change{DeviceID: "d1", Ops: []commit.Op{msg,
			&commands.Change{ID: id, Status: commands.StatusFailed, From: open, Result: []byte(`"late"`), At: at(11)}}}
		expire := move("d1", id, commands.StatusExpired, open, 11, nil)
		batch := []*commit.Change{expire, answer}
		if answerFirst {
			batch = []*commit.Change{answer, expire}
		}
		mustCommit(t, b, batch...)
		got, err := st.GetCommand(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := st.ListMessages(ctx, messagelog.Query{DeviceID: "d1", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		stored := false
		for _, m := range msgs {
			stored = stored || m.ID == msg.ID
		}
		if answerFirst {
			if answer.Err != nil || got.Status != commands.StatusFailed || !stored {
				t.Errorf("answer first: %v, %+v, message stored %v", answer.Err, got, stored)
			}
			wantErr(t, "expire after the answer", expire.Err, commit.ErrConflict)
		} else {
			if expire.Err != nil || got.Status != commands.StatusExpired || got.Result != nil || stored {
				t.Errorf("expiry first: %v, %+v, message stored %v", expire.Err, got, stored)
			}
			wantErr(t, "answer after the expiry", answer.Err, commands.ErrFinished)
		}
	}

	// Canceled from queued; not again.
	cancel := move("d1", "c2", commands.StatusCanceled, open, 12, nil)
	again := move("d1", "c2", commands.StatusCanceled, open, 13, nil)
	mustCommit(t, b, cancel, again)
	if cancel.Err != nil {
		t.Fatal(cancel.Err)
	}
	wantErr(t, "cancel twice", again.Err, commit.ErrConflict)

	mustCommit(t, b, newCmd("c4", 20), newCmd("c3", 20))
	list, err := st.ListCommands(ctx, commands.ListOptions{DeviceID: "d1", Limit: 10})
	if err != nil || len(list) != 6 || list[0].ID != "c4" || list[1].ID != "c3" || list[5].ID != "c1" {
		t.Errorf("list %+v %v", list, err)
	}
	list, err = st.ListCommands(ctx, commands.ListOptions{DeviceID: "d1", Status: commands.StatusCanceled, Limit: 10})
	if err != nil || len(list) != 1 || list[0].ID != "c2" {
		t.Errorf("list canceled %+v %v", list, err)
	}
	// Unfinished commands, oldest first (creation time, then id).
	opened, err := st.OpenCommands(ctx)
	if err != nil || len(opened) != 2 || opened[0].ID != "c3" || opened[1].ID != "c4" {
		t.Errorf("open %+v %v", opened, err)
	}
}

func timeIs(p *time.Time, want time.Time) bool { return p != nil && p.Equal(want) }

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
	// When each key was last reported.
	if len(tw.ReportedTimes) != 3 || !tw.ReportedTimes["fw"].Equal(at(1)) || !tw.ReportedTimes["net"].Equal(at(3)) || !tw.ReportedTimes["led"].Equal(at(3)) {
		t.Errorf("reported times %v", tw.ReportedTimes)
	}
	// The merge writes twin_reported_changed with the version it made;
	// the delta's events follow its key set: r1 (nothing desired), d1
	// (interval now out of step), d2 (still interval: no event).
	evTypes := func(ch *commit.Change) (out []string) {
		for _, e := range ch.Events {
			out = append(out, string(e.Type)+" "+string(e.Args))
		}
		return out
	}
	if got := evTypes(r2); len(got) != 1 || got[0] != `twin_reported_changed {"version":2,"patch":{"led":true,"net":{"rssi":-60,"ssid":null}}}` {
		t.Errorf("r2 events %v", got)
	}
	checkSeqs(t, r2, true)
	if got := evTypes(d1); len(got) != 1 || got[0] != `twin_delta_changed {"keys":["interval"],"in_step":false}` {
		t.Errorf("d1 events %v", got)
	}
	if got := evTypes(d2); len(got) != 0 {
		t.Errorf("d2 events %v", got)
	}
	// Reported catches up: the delta empties.
	r3 := reported(`{"interval":20}`, 4)
	mustCommit(t, b, r3)
	if got := evTypes(r3); len(got) != 2 || got[1] != `twin_delta_changed {"keys":[],"in_step":true}` {
		t.Errorf("r3 events %v", got)
	}

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
	t.Run("Jobs", func(t *testing.T) { testCommandJobs(t, b) })
}

func testCommandJobs(t *testing.T, b Backend) {
	ctx := context.Background()
	provision(t, b, "j1", "j2", "j3")
	j := &commands.Job{ID: "job_fleet", Command: "reboot", Payload: []byte(`{"delay":5}`), ExpiresIn: time.Hour,
		Target: commands.Target{Group: "north", Tag: "roof", OnlineOnly: true}, Status: commands.JobRunning, CreatedAt: at(1)}
	if err := b.CreateCommandJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetCommandJob(ctx, "nope"); !errors.Is(err, commands.ErrJobNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
	running, err := b.RunningCommandJobs(ctx)
	if err != nil || len(running) != 1 || running[0].ID != "job_fleet" || running[0].Target.Tag != "roof" || !running[0].Target.OnlineOnly {
		t.Fatalf("running %+v %v", running, err)
	}
	for i, dev := range []string{"j3", "j1", "j2"} {
		st := []string{commands.StatusQueued, commands.StatusDelivered, commands.StatusDelivered}[i]
		mustCommit(t, b, &commit.Change{DeviceID: dev, Ops: []commit.Op{&commands.Change{Create: &commands.Command{
			ID: "jc_" + dev, Command: "reboot", Status: st, CreatedAt: at(2), ExpiresAt: at(3600), UpdatedAt: at(2), JobID: "job_fleet"}}}})
	}
	n, err := b.CommandJobCounts(ctx, "job_fleet")
	if err != nil || n[commands.StatusQueued] != 1 || n[commands.StatusDelivered] != 2 {
		t.Fatalf("counts %v %v", n, err)
	}
	page, err := b.JobCommands(ctx, "job_fleet", "", "", 2)
	if err != nil || len(page) != 2 || page[0].DeviceID != "j1" || page[1].DeviceID != "j2" {
		t.Fatalf("first page %+v %v", page, err)
	}
	page, err = b.JobCommands(ctx, "job_fleet", "", "j2", 2)
	if err != nil || len(page) != 1 || page[0].DeviceID != "j3" {
		t.Fatalf("second page %+v %v", page, err)
	}
	page, err = b.JobCommands(ctx, "job_fleet", commands.StatusDelivered, "", 10)
	if err != nil || len(page) != 2 {
		t.Fatalf("delivered %+v %v", page, err)
	}
	fin := at(5)
	j.Status, j.Targets, j.Refused, j.Refusal, j.FinishedAt = commands.JobDone, 4, 1, "j4: device not found", &fin
	if err := b.UpdateCommandJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetCommandJob(ctx, "job_fleet")
	if err != nil || got.Status != commands.JobDone || got.Targets != 4 || got.Refused != 1 || got.Refusal != j.Refusal ||
		!timeIs(got.FinishedAt, at(5)) || got.ExpiresIn != time.Hour || string(got.Payload) != `{"delay": 5}` && string(got.Payload) != `{"delay":5}` {
		t.Fatalf("job %+v %v", got, err)
	}
	if running, _ := b.RunningCommandJobs(ctx); len(running) != 0 {
		t.Fatalf("running after done: %+v", running)
	}
}

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func ptrTime(t time.Time) *time.Time { return &t }
