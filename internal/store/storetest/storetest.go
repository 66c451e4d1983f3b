// Package storetest is the contract suite every storage backend of the hub
// passes: one set of tests, run against SQLite and PostgreSQL alike, so that
// the backends cannot drift apart.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/alerts"
	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/firmware"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/monitors"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/retention"
	"github.com/devicehub/devicehub/internal/twin"
)

// Backend is everything a storage backend implements.
type Backend interface {
	commit.Store
	// MaxMessageID returns the largest message id stored.
	MaxMessageID(ctx context.Context) (int64, error)
	registry.Store
	provisioning.Store
	commands.Store
	commands.JobStore
	twin.Store
	deviceconfig.Store
	readings.Store
	eventlog.Store
	access.Store
	messagelog.Store
	retention.Store
	retention.RollupStore
	monitors.Store
	accounts.Store
	registry.Counter
	eventlog.HistoryStore
	firmware.Store
	alerts.Store
}

// Run runs the contract suite. open returns a new, empty backend for one
// test and arranges (with t.Cleanup) for it to be closed.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, b Backend)
	}{
		{"Provisioning", testProvisioning},
		{"DataChange", testDataChange},
		{"Idempotence", testIdempotence},
		{"RejectedMessage", testRejectedMessage},
		{"DevicePatch", testDevicePatch},
		{"SeenResolution", testSeenResolution}, // seen.go
		{"StaleSession", testStaleSession},     // session.go
		{"EventSeq", testEventSeq},
		{"QueryReadings", testQueryReadings},
		{"Compaction", testCompaction},         // compact.go
		{"CompactionRuns", testCompactionRuns}, // compact.go
		{"ReadingsHead", testReadingsHead},     // compact.go
		{"ReadingsPaging", testReadingsPaging},
		{"ListDevices", testListDevices},
		{"Tokens", testTokens},
		{"ListMessages", testListMessages},
		{"FailedBatch", testFailedBatch},
		{"Registry", testRegistry},                   // registry.go
		{"ProvisioningStore", testProvisioningStore}, // registry.go
		{"APIAudit", testAPIAudit},
		{"APIAuditBatch", testAPIAuditBatch},     // apiaudit.go
		{"DeviceCommandsAndTwin", testDeviceCmd}, // devicecmd.go
		{"Monitors", testMonitors},               // monitors.go
		{"Accounts", testAccounts},               // accounts.go
		{"CountDevices", testCountDevices},       // accounts.go
		{"PresenceHistory", testPresenceHistory}, // accounts.go
		{"DeviceConfig", testDeviceConfig},       // deviceconfig.go
		{"LatestValues", testLatestValues},       // latest.go
		{"LatestValuesFailedChange", testLatestValuesFailedChange},
		{"LatestValuesFailedBatch", testLatestValuesFailedBatch},
		{"AggregateReadings", testAggregateReadings},
		{"Firmware", testFirmware},              // firmware.go
		{"Alerts", testAlerts},                  // alerts.go
		{"AlertsOneOpen", testAlertsConcurrent}, // alerts.go
		{"Retention", testRetention},            // retention.go
		{"Rollups", testRollups},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, open(t))
		})
	}
}

// base is the time the tests' data starts at: microsecond precision, UTC,
// as the stores return times.
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

// msgIDs hands out message ids, unique across the tests of one process.
var msgIDs atomic.Int64

func nextMessageID() int64 { return msgIDs.Add(1) + 1_000_000 }

func mustCommit(t *testing.T, b Backend, batch ...*commit.Change) {
	t.Helper()
	if err := b.Commit(context.Background(), batch); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func mustEvent(t *testing.T, e events.Event) commit.Event {
	t.Helper()
	ev, err := commit.NewEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func hash(s string) []byte {
	h := make([]byte, 32)
	copy(h, s)
	return h
}

// newDevice is a provisioning change.
func newDevice(t *testing.T, id, typ string, replace bool) *commit.Change {
	return &commit.Change{
		DeviceID: id,
		Ops: []commit.Op{&registry.NewDevice{
			Type: typ, Name: "name of " + id, Group: "g1", Tags: []string{"a", "b"},
			Metadata: []byte(`{"site":"north"}`), MQTTUsername: id,
			PasswordHash: hash("pw-" + id), APIKeyHash: hash("key-" + id),
			Replace: replace, CreatedAt: at(0),
		}},
		Events: []commit.Event{mustEvent(t, events.Event{
			Type: events.DeviceProvisioned, Time: at(0), DeviceID: id, DeviceType: typ,
			Args: &events.Provisioned{Reprovisioned: replace},
		})},
	}
}

func provision(t *testing.T, b Backend, ids ...string) {
	t.Helper()
	var batch []*commit.Change
	for _, id := range ids {
		batch = append(batch, newDevice(t, id, "sensor", false))
	}
	mustCommit(t, b, batch...)
	for _, ch := range batch {
		if ch.Err != nil {
			t.Fatalf("provision %s: %v", ch.DeviceID, ch.Err)
		}
	}
}

// data is a data message change: one message, its readings, a last-seen
// patch and a data event.
type data struct {
	device string
	msgID  string
	stream string
	times  []int // seconds after base, one reading each
	values map[string]any
}

func (d data) change(t *testing.T) *commit.Change {
	t.Helper()
	id := nextMessageID()
	vals, err := json.Marshal(d.values)
	if err != nil {
		t.Fatal(err)
	}
	topic := "devices/" + d.device + "/data"
	msg := &readings.Message{
		ID: id, Topic: topic, Transport: "mqtt", QoS: 1, Payload: vals,
		MsgID: d.msgID, Accepted: true, ReceivedAt: at(1000),
	}
	rds := &readings.Readings{Message: msg}
	ch := &commit.Change{DeviceID: d.device}
	args := &events.DataReceived{MessageID: id, MsgID: d.msgID, Topic: topic, Stream: d.stream, Transport: "mqtt"}
	for _, s := range d.times {
		rds.Rows = append(rds.Rows, readings.Reading{Stream: d.stream, Time: at(s), Values: vals})
		args.Readings = append(args.Readings, events.Reading{Time: at(s), Stream: d.stream, Values: d.values})
	}
	seen := at(1000)
	ch.Ops = []commit.Op{msg, rds, &registry.DevicePatch{LastSeen: &seen}}
	ch.Events = []commit.Event{mustEvent(t, events.Event{
		Type: events.DeviceDataReceived, Time: at(1000), DeviceID: d.device, DeviceType: "sensor", Args: args,
	})}
	return ch
}

func allEvents(t *testing.T, b Backend) []events.Event {
	t.Helper()
	evs, err := b.ReadEvents(context.Background(), 0, 100000)
	if err != nil {
		t.Fatalf("ReadEvents: %v", err)
	}
	return evs
}

func count(t *testing.T, b Backend, device string) int64 {
	t.Helper()
	n, err := b.CountReadings(context.Background(), device)
	if err != nil {
		t.Fatalf("CountReadings: %v", err)
	}
	return n
}

func messages(t *testing.T, b Backend, q messagelog.Query) []messagelog.Message {
	t.Helper()
	ms, err := b.ListMessages(context.Background(), q)
	if err != nil {
		t.Fatalf("ListMessages: %v", err)
	}
	return ms
}

func getDevice(t *testing.T, b Backend, id string) *registry.Device {
	t.Helper()
	d, err := b.GetDevice(context.Background(), id)
	if err != nil {
		t.Fatalf("GetDevice %s: %v", id, err)
	}
	return d
}

// checkWritten checks that the change's events got seqs (or none when the
// change was not written).
func checkSeqs(t *testing.T, ch *commit.Change, written bool) {
	t.Helper()
	for i, e := range ch.Events {
		if written && e.Seq == 0 {
			t.Errorf("change %s: event %d has no seq", ch.DeviceID, i)
		}
		if !written && e.Seq != 0 {
			t.Errorf("change %s: event %d of an unwritten change has seq %d", ch.DeviceID, i, e.Seq)
		}
	}
}

func equalJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Errorf("%s: err = %v, want %v", what, got, want)
	}
}

func ptr[T any](v T) *T { return &v }

func deviceIDs(ds []registry.Device) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func readingTimes(rs []readings.Record) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s/%d", r.Time.Sub(base), r.ID))
	}
	return out
}

// msg is the message of a change.
func msg(ch *commit.Change) *readings.Message {
	m, _ := commit.Find[*readings.Message](ch)
	return m
}

// newDev is the new device of a change.
func newDev(ch *commit.Change) *registry.NewDevice {
	nd, _ := commit.Find[*registry.NewDevice](ch)
	return nd
}

// update is the registry update of a change, added if missing.
func update(ch *commit.Change) *registry.Update {
	u, ok := commit.Find[*registry.Update](ch)
	if !ok {
		u = &registry.Update{}
		ch.Ops = append(ch.Ops, u)
	}
	return u
}
