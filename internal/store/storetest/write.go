package storetest

import (
	"context"
	"testing"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

func testProvisioning(t *testing.T, b Backend) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"create", func(t *testing.T) {
			ch := newDevice(t, "p-create", "sensor", false)
			mustCommit(t, b, ch)
			if ch.Err != nil {
				t.Fatalf("Err = %v", ch.Err)
			}
			checkSeqs(t, ch, true)
			d := getDevice(t, b, "p-create")
			want := registry.Device{
				ID: "p-create", Type: "sensor", Name: "name of p-create", Group: "g1", Tags: []string{"a", "b"},
				Metadata: map[string]any{"site": "north"}, Status: "offline", Connected: false,
				CreatedAt: at(0), UpdatedAt: d.UpdatedAt,
			}
			equalJSON(t, "device", *d, want)
		}},
		{"duplicate fails alone", func(t *testing.T) {
			provision(t, b, "p-dup")
			again := newDevice(t, "p-dup", "other", false)
			inBatch1 := newDevice(t, "p-dup-2", "sensor", false)
			inBatch2 := newDevice(t, "p-dup-2", "sensor", false)
			mustCommit(t, b, again, inBatch1, inBatch2)
			wantErr(t, "existing device", again.Err, commit.ErrDeviceExists)
			wantErr(t, "created earlier in the batch", inBatch2.Err, commit.ErrDeviceExists)
			if inBatch1.Err != nil {
				t.Errorf("first of batch: Err = %v", inBatch1.Err)
			}
			checkSeqs(t, again, false)
			checkSeqs(t, inBatch2, false)
			checkSeqs(t, inBatch1, true)
			if d := getDevice(t, b, "p-dup"); d.Type != "sensor" {
				t.Errorf("duplicate changed the device type to %q", d.Type)
			}
			getDevice(t, b, "p-dup-2")
		}},
		{"replace of missing device", func(t *testing.T) {
			ch := newDevice(t, "p-missing", "sensor", true)
			mustCommit(t, b, ch)
			wantErr(t, "replace", ch.Err, commit.ErrDeviceNotFound)
			checkSeqs(t, ch, false)
			_, err := b.GetDevice(ctx, "p-missing")
			wantErr(t, "GetDevice", err, registry.ErrNotFound)
		}},
		{"replace rotates credentials", func(t *testing.T) {
			provision(t, b, "p-rot")
			ch := newDevice(t, "p-rot", "meter", true)
			newDev(ch).Name = "renamed"
			newDev(ch).PasswordHash, newDev(ch).APIKeyHash = hash("pw2"), hash("key2")
			mustCommit(t, b, ch)
			if ch.Err != nil {
				t.Fatalf("Err = %v", ch.Err)
			}
			creds, err := b.AllCredentials(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var found bool
			for _, c := range creds {
				if c.DeviceID != "p-rot" {
					continue
				}
				found = true
				want := registry.Credentials{DeviceID: "p-rot", DeviceType: "meter", MQTTUsername: "p-rot",
					PasswordHash: hash("pw2"), APIKeyHash: hash("key2")}
				equalJSON(t, "credentials", c, want)
			}
			if !found {
				t.Fatal("no credentials for p-rot")
			}
			if d := getDevice(t, b, "p-rot"); d.Name != "renamed" || d.Type != "meter" {
				t.Errorf("device after replace: name %q type %q", d.Name, d.Type)
			}
		}},
		{"unknown device", func(t *testing.T) {
			_, err := b.GetDevice(ctx, "p-nobody")
			wantErr(t, "GetDevice", err, registry.ErrNotFound)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

func testDataChange(t *testing.T, b Backend) {
	ctx := context.Background()
	provision(t, b, "d1")
	before := len(allEvents(t, b))
	ch := data{device: "d1", msgID: "m-1", stream: "env", times: []int{10, 11},
		values: map[string]any{"temp": 21.5, "hum": 40.0}}.change(t)
	mustCommit(t, b, ch)
	if ch.Err != nil || ch.Duplicate {
		t.Fatalf("Err = %v, Duplicate = %v", ch.Err, ch.Duplicate)
	}
	checkSeqs(t, ch, true)

	ms := messages(t, b, messagelog.Query{DeviceID: "d1"})
	m := msg(ch)
	want := []messagelog.Message{{ID: m.ID, DeviceID: "d1", Topic: m.Topic, Transport: "mqtt", QoS: 1, Payload: m.Payload,
		MsgID: "m-1", Accepted: true, ReceivedAt: m.ReceivedAt}}
	equalJSON(t, "messages", ms, want)

	page, err := b.QueryReadings(ctx, readings.Query{DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Readings) != 2 {
		t.Fatalf("got %d readings, want 2", len(page.Readings))
	}
	for i, r := range page.Readings {
		wantRec := readings.Record{ID: r.ID, DeviceID: "d1", Stream: "env", Time: at(11 - i), ReceivedAt: m.ReceivedAt,
			MessageID: m.ID, Values: map[string]any{"temp": 21.5, "hum": 40.0}}
		equalJSON(t, "reading", r, wantRec)
	}

	evs := allEvents(t, b)[before:]
	if len(evs) != 1 {
		t.Fatalf("got %d new events, want 1", len(evs))
	}
	wantEv := ch.Events[0].Event
	equalJSON(t, "event", evs[0], wantEv)
	if _, ok := evs[0].Args.(*events.DataReceived); !ok {
		t.Errorf("args are %T, want *events.DataReceived", evs[0].Args)
	}
	if d := getDevice(t, b, "d1"); d.LastSeen == nil || !d.LastSeen.Equal(at(1000)) {
		t.Errorf("last_seen = %v, want %v", d.LastSeen, at(1000))
	}
}

func testIdempotence(t *testing.T, b Backend) {
	provision(t, b, "i1", "i2", "i3", "i4", "i5")
	vals := map[string]any{"v": 1.0}
	tests := []struct {
		name    string
		batches [][]data
		dup     []bool // per change, in order over all batches
		msgs    map[string]int
	}{
		{"later batch",
			[][]data{{{device: "i1", msgID: "a", times: []int{1}, values: vals}}, {{device: "i1", msgID: "a", times: []int{2}, values: vals}}},
			[]bool{false, true}, map[string]int{"i1": 1}},
		{"twice in one batch",
			[][]data{{{device: "i2", msgID: "a", times: []int{1}, values: vals}, {device: "i2", msgID: "a", times: []int{2}, values: vals}}},
			[]bool{false, true}, map[string]int{"i2": 1}},
		{"same msg_id on two devices",
			[][]data{{{device: "i3", msgID: "a", times: []int{1}, values: vals}, {device: "i4", msgID: "a", times: []int{1}, values: vals}}},
			[]bool{false, false}, map[string]int{"i3": 1, "i4": 1}},
		{"no msg_id",
			[][]data{{{device: "i5", times: []int{1}, values: vals}}, {{device: "i5", times: []int{1}, values: vals}}},
			[]bool{false, false}, map[string]int{"i5": 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var all []*commit.Change
			for _, batch := range tt.batches {
				var chs []*commit.Change
				for _, d := range batch {
					chs = append(chs, d.change(t))
				}
				mustCommit(t, b, chs...)
				all = append(all, chs...)
			}
			evs := allEvents(t, b)
			for i, ch := range all {
				if ch.Duplicate != tt.dup[i] {
					t.Errorf("change %d: Duplicate = %v, want %v", i, ch.Duplicate, tt.dup[i])
				}
				if ch.Err != nil {
					t.Errorf("change %d: Err = %v", i, ch.Err)
				}
				checkSeqs(t, ch, !tt.dup[i])
				if tt.dup[i] {
					for _, e := range evs {
						if a, ok := e.Args.(*events.DataReceived); ok && a.MessageID == msg(ch).ID {
							t.Errorf("change %d: event of a duplicate was written", i)
						}
					}
				}
			}
			for dev, n := range tt.msgs {
				if got := len(messages(t, b, messagelog.Query{DeviceID: dev})); got != n {
					t.Errorf("%s: %d messages, want %d", dev, got, n)
				}
				if got := count(t, b, dev); got != int64(n) {
					t.Errorf("%s: %d readings, want %d", dev, got, n)
				}
			}
		})
	}
}

func testRejectedMessage(t *testing.T, b Backend) {
	provision(t, b, "r1")
	ch := data{device: "r1", msgID: "x", times: []int{1}, values: map[string]any{"v": 1.0}}.change(t)
	msg(ch).Accepted, msg(ch).Code, msg(ch).Reason = false, "invalid_reading", "v out of range"
	ch.Events = []commit.Event{mustEvent(t, events.Event{Type: events.MessageRejected, Time: at(5), DeviceID: "r1", DeviceType: "sensor",
		Args: &events.Rejected{MessageID: msg(ch).ID, Topic: msg(ch).Topic, Transport: "mqtt", Code: "invalid_reading", Reason: "v out of range"}})}
	mustCommit(t, b, ch)
	checkSeqs(t, ch, true)
	ms := messages(t, b, messagelog.Query{DeviceID: "r1", Rejected: true})
	if len(ms) != 1 || ms[0].Accepted || ms[0].Code != "invalid_reading" || ms[0].Reason != "v out of range" {
		t.Errorf("rejected messages = %+v", ms)
	}
	if n := count(t, b, "r1"); n != 0 {
		t.Errorf("rejected message wrote %d readings", n)
	}
	evs := allEvents(t, b)
	equalJSON(t, "event", evs[len(evs)-1], ch.Events[0].Event)
}

func testDevicePatch(t *testing.T, b Backend) {
	provision(t, b, "s1", "s2")
	seen1, seen2 := at(100), at(200)
	batch := []*commit.Change{
		{DeviceID: "s1", Ops: []commit.Op{&registry.DevicePatch{Status: ptr("online"), Connected: ptr(true), LastSeen: &seen1}}},
		{DeviceID: "s2", Ops: []commit.Op{&registry.DevicePatch{Status: ptr("maintenance")}}},
		{DeviceID: "s1", Ops: []commit.Op{&registry.DevicePatch{Metrics: []byte(`{"battery":80}`)}}},
		{DeviceID: "s1", Ops: []commit.Op{&registry.DevicePatch{Status: ptr("error"), LastSeen: &seen2, Metrics: []byte(`{"battery":75}`)}}},
		{DeviceID: "s-missing", Ops: []commit.Op{&registry.DevicePatch{Status: ptr("online")}}},
		data{device: "s-missing", times: []int{1}, values: map[string]any{"v": 1.0}}.change(t),
	}
	mustCommit(t, b, batch...)
	for i, ch := range batch[:4] {
		if ch.Err != nil {
			t.Errorf("change %d: Err = %v", i, ch.Err)
		}
	}
	wantErr(t, "patch of a missing device", batch[4].Err, commit.ErrDeviceNotFound)
	wantErr(t, "data of a missing device", batch[5].Err, commit.ErrDeviceNotFound)
	checkSeqs(t, batch[5], false)
	if ms := messages(t, b, messagelog.Query{DeviceID: "s-missing"}); len(ms) != 0 {
		t.Errorf("failed change wrote %d messages", len(ms))
	}
	d := getDevice(t, b, "s1")
	if d.Status != "error" || !d.Connected || d.LastSeen == nil || !d.LastSeen.Equal(seen2) {
		t.Errorf("s1 = status %q connected %v last_seen %v", d.Status, d.Connected, d.LastSeen)
	}
	equalJSON(t, "s1 metrics", d.Metrics, map[string]any{"battery": 75.0})
	if d := getDevice(t, b, "s2"); d.Status != "maintenance" || d.Connected || d.LastSeen != nil {
		t.Errorf("s2 = status %q connected %v last_seen %v", d.Status, d.Connected, d.LastSeen)
	}

	mustCommit(t, b, &commit.Change{DeviceID: "s1", Ops: []commit.Op{&registry.DevicePatch{Connected: ptr(false), Status: ptr("offline")}}})
	d = getDevice(t, b, "s1")
	if d.Status != "offline" || d.Connected || !d.LastSeen.Equal(seen2) {
		t.Errorf("s1 after disconnect = status %q connected %v last_seen %v", d.Status, d.Connected, d.LastSeen)
	}
	equalJSON(t, "s1 metrics kept", d.Metrics, map[string]any{"battery": 75.0})
}

func testEventSeq(t *testing.T, b Backend) {
	ctx := context.Background()
	if seq, err := b.LastSeq(ctx); err != nil || seq != 0 {
		t.Fatalf("LastSeq of an empty store = %d, %v", seq, err)
	}
	provision(t, b, "e1", "e2")
	ev := func(dev string, typ events.Type, args any) commit.Event {
		return mustEvent(t, events.Event{Type: typ, Time: at(7), DeviceID: dev, DeviceType: "sensor", Args: args})
	}
	batches := [][]*commit.Change{
		{
			{DeviceID: "e1", Ops: []commit.Op{&registry.DevicePatch{Connected: ptr(true)}}, Events: []commit.Event{
				ev("e1", events.DeviceConnected, &events.Connected{Generation: 3, Transport: "mqtt", RemoteAddr: "10.0.0.1:5000"}),
				ev("e1", events.DeviceStatusChanged, &events.StatusChanged{OldStatus: "offline", NewStatus: "online"}),
			}},
			data{device: "e2", values: map[string]any{"v": 2.0}, times: []int{3}}.change(t),
		},
		{
			{DeviceID: "e1", Events: []commit.Event{
				ev("e1", events.DeviceDisconnected, &events.Disconnected{Generation: 3, Reason: events.ReasonLastWill, Error: "gone"}),
			}},
		},
		{
			{DeviceID: "e2", Events: []commit.Event{ev("e2", "custom_thing", map[string]any{"k": "v"})}},
			{DeviceID: "e1", Events: []commit.Event{ev("e1", events.DeviceStatusChanged, &events.StatusChanged{OldStatus: "online", NewStatus: "offline"})}},
		},
	}
	var want []events.Event
	for _, batch := range batches {
		mustCommit(t, b, batch...)
		for _, ch := range batch {
			for _, e := range ch.Events {
				want = append(want, e.Event)
			}
		}
	}
	for i := 1; i < len(want); i++ {
		if want[i].Seq <= want[i-1].Seq {
			t.Fatalf("seq not increasing in commit order: %d after %d", want[i].Seq, want[i-1].Seq)
		}
	}
	got := allEvents(t, b)
	got = got[len(got)-len(want):]
	equalJSON(t, "events", got, want)
	last, err := b.LastSeq(ctx)
	if err != nil || last != want[len(want)-1].Seq {
		t.Errorf("LastSeq = %d, %v; want %d", last, err, want[len(want)-1].Seq)
	}

	tests := []struct {
		name  string
		after int64
		limit int
		want  []events.Event
	}{
		{"first two", 0, 2, allEvents(t, b)[:2]},
		{"after the third", want[2].Seq, 100, want[3:]},
		{"after the last", last, 100, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.ReadEvents(ctx, tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			equalJSON(t, "events", got, tt.want)
		})
	}
}

func testFailedBatch(t *testing.T, b Backend) {
	provision(t, b, "f1")
	bg := context.Background()
	seq, err := b.LastSeq(bg)
	if err != nil {
		t.Fatal(err)
	}
	maxID, err := b.MaxMessageID(bg)
	if err != nil {
		t.Fatal(err)
	}
	batch := []*commit.Change{
		newDevice(t, "f2", "sensor", false),
		data{device: "f1", msgID: "z", times: []int{1}, values: map[string]any{"v": 1.0}}.change(t),
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := b.Commit(ctx, batch); err == nil {
		t.Fatal("Commit with a cancelled context succeeded")
	}
	for _, ch := range batch {
		if ch.Err != nil || ch.Duplicate {
			t.Errorf("change %s left with Err %v Duplicate %v", ch.DeviceID, ch.Err, ch.Duplicate)
		}
		checkSeqs(t, ch, false)
	}
	if _, err := b.GetDevice(bg, "f2"); err == nil {
		t.Error("failed batch created a device")
	}
	if got, _ := b.LastSeq(bg); got != seq {
		t.Errorf("LastSeq = %d after a failed batch, want %d", got, seq)
	}
	if got, _ := b.MaxMessageID(bg); got != maxID {
		t.Errorf("MaxMessageID = %d after a failed batch, want %d", got, maxID)
	}
	if n := count(t, b, "f1"); n != 0 {
		t.Errorf("failed batch wrote %d readings", n)
	}

	// The same changes commit later, and the msg_id is not taken.
	mustCommit(t, b, batch...)
	for _, ch := range batch {
		if ch.Err != nil || ch.Duplicate {
			t.Errorf("retry of %s: Err %v Duplicate %v", ch.DeviceID, ch.Err, ch.Duplicate)
		}
		checkSeqs(t, ch, true)
	}
	if got, _ := b.MaxMessageID(bg); got != msg(batch[1]).ID {
		t.Errorf("MaxMessageID = %d, want %d", got, msg(batch[1]).ID)
	}
}
