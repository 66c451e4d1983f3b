package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

func testAccounts(t *testing.T, b Backend) {
	ctx := context.Background()
	users := []accounts.User{
		{Name: "bob", Role: access.Viewer, PasswordHash: "$argon2id$b", CreatedAt: at(1), UpdatedAt: at(1)},
		{Name: "alice", Role: access.Admin, PasswordHash: "$argon2id$a", CreatedAt: at(2), UpdatedAt: at(3)},
	}
	for _, u := range users {
		if err := b.CreateUser(ctx, u); err != nil {
			t.Fatalf("CreateUser %s: %v", u.Name, err)
		}
	}
	if err := b.CreateUser(ctx, users[0]); !errors.Is(err, accounts.ErrExists) {
		t.Fatalf("CreateUser twice: got %v, want ErrExists", err)
	}
	got, err := b.GetUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	equalJSON(t, "alice", *got, users[1])
	if got.PasswordHash != users[1].PasswordHash {
		t.Fatalf("password hash: got %q", got.PasswordHash)
	}
	if _, err := b.GetUser(ctx, "nobody"); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("GetUser nobody: got %v, want ErrNotFound", err)
	}
	list, err := b.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alice" || list[1].Name != "bob" {
		t.Fatalf("ListUsers: got %+v, want alice, bob", list)
	}

	sessions := []accounts.Session{
		{Hash: hash("s1"), User: "alice", CreatedAt: at(10), ExpiresAt: at(100), RemoteAddr: "10.0.0.1:1"},
		{Hash: hash("s2"), User: "alice", CreatedAt: at(10), ExpiresAt: at(20)},
		{Hash: hash("s3"), User: "bob", CreatedAt: at(10), ExpiresAt: at(100)},
	}
	for _, s := range sessions {
		if err := b.CreateSession(ctx, s); err != nil {
			t.Fatalf("CreateSession: %v", err)
		}
	}
	s1, err := b.GetSession(ctx, hash("s1"))
	if err != nil {
		t.Fatal(err)
	}
	equalJSON(t, "session s1", *s1, sessions[0])
	if _, err := b.GetSession(ctx, hash("nope")); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("GetSession unknown: got %v, want ErrNotFound", err)
	}
	n, err := b.DeleteExpiredSessions(ctx, at(50))
	if err != nil || n != 1 {
		t.Fatalf("DeleteExpiredSessions: got %d, %v; want 1", n, err)
	}
	if _, err := b.GetSession(ctx, hash("s2")); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("expired session still there: %v", err)
	}
	if err := b.DeleteSession(ctx, hash("s1")); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteSession(ctx, hash("s1")); err != nil {
		t.Fatalf("DeleteSession twice: %v", err)
	}
	if _, err := b.GetSession(ctx, hash("s1")); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("deleted session still there: %v", err)
	}
	if err := b.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetSession(ctx, hash("s3")); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("session of a deleted user still there: %v", err)
	}
	if err := b.DeleteUser(ctx, "bob"); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("DeleteUser twice: got %v, want ErrNotFound", err)
	}
}

func testCountDevices(t *testing.T, b Backend) {
	ctx := context.Background()
	got, err := b.CountDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("empty store: got %+v", got)
	}
	provision(t, b, "s1", "s2")
	mustCommit(t, b, newDevice(t, "m1", "meter", false))
	mustCommit(t, b, &commit.Change{DeviceID: "s1", Ops: []commit.Op{&registry.DevicePatch{Status: ptr("online"), Connected: ptr(true)}}})
	d, err := b.GetDevice(ctx, "s2")
	if err != nil {
		t.Fatal(err)
	}
	initial := d.Status
	got, err = b.CountDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[registry.DeviceCount]bool{
		{Type: "meter", Status: initial, Devices: 1}:                    true,
		{Type: "sensor", Status: "online", Connected: true, Devices: 1}: true,
		{Type: "sensor", Status: initial, Devices: 1}:                   true,
	}
	if len(got) != len(want) {
		t.Fatalf("CountDevices: got %+v, want %d rows", got, len(want))
	}
	for _, c := range got {
		if !want[c] {
			t.Errorf("CountDevices: unexpected row %+v (all: %+v)", c, got)
		}
	}
}

func testPresenceHistory(t *testing.T, b Backend) {
	ctx := context.Background()
	provision(t, b, "p1", "p2")
	ev := func(dev string, typ events.Type, args any) commit.Event {
		return mustEvent(t, events.Event{Type: typ, Time: at(7), DeviceID: dev, DeviceType: "sensor", Args: args})
	}
	mustCommit(t, b,
		&commit.Change{DeviceID: "p1", Events: []commit.Event{
			ev("p1", events.DeviceConnected, &events.Connected{Generation: 1, Transport: "mqtt"}),
			ev("p1", events.DeviceStatusChanged, &events.StatusChanged{OldStatus: "offline", NewStatus: "online"}),
		}},
		data{device: "p1", values: map[string]any{"v": 1.0}, times: []int{3}}.change(t),
		&commit.Change{DeviceID: "p2", Events: []commit.Event{ev("p2", events.DeviceConnected, &events.Connected{Generation: 1, Transport: "mqtt"})}},
		&commit.Change{DeviceID: "p1", Events: []commit.Event{ev("p1", events.DeviceDisconnected, &events.Disconnected{Generation: 1, Reason: events.ReasonLastWill})}},
	)
	got, err := b.PresenceHistory(ctx, "p1", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var types []events.Type
	for _, e := range got {
		if e.DeviceID != "p1" {
			t.Fatalf("event of %s in p1's history", e.DeviceID)
		}
		types = append(types, e.Type)
	}
	want := []events.Type{events.DeviceDisconnected, events.DeviceStatusChanged, events.DeviceConnected}
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("history of p1: got %v, want %v (newest first, presence only)", types, want)
	}
	if d, ok := got[0].Args.(*events.Disconnected); !ok || d.Reason != events.ReasonLastWill {
		t.Fatalf("disconnected args: %#v", got[0].Args)
	}
	page, err := b.PresenceHistory(ctx, "p1", got[0].Seq, 1)
	if err != nil || len(page) != 1 || page[0].Seq != got[1].Seq {
		t.Fatalf("page before %d: got %+v, %v; want seq %d", got[0].Seq, page, err, got[1].Seq)
	}
	none, err := b.PresenceHistory(ctx, "nobody", 0, 10)
	if err != nil || len(none) != 0 {
		t.Fatalf("history of an unknown device: %+v, %v", none, err)
	}
}
