package storetest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// readingsFixture writes readings of device "q1" (and a few of "q2"):
// times 1..10 on stream "a" with fields t and h, times 5..8 on stream "b"
// with field t only, and three readings at time 20 (equal timestamps).
func readingsFixture(t *testing.T, b Backend) {
	provision(t, b, "q1", "q2")
	var batch []*commit.Change
	for s := 1; s <= 10; s++ {
		batch = append(batch, data{device: "q1", stream: "a", times: []int{s}, values: map[string]any{"t": float64(s), "h": 50.0}}.change(t))
	}
	for s := 5; s <= 8; s++ {
		batch = append(batch, data{device: "q1", stream: "b", times: []int{s}, values: map[string]any{"t": float64(100 + s)}}.change(t))
	}
	batch = append(batch, data{device: "q2", stream: "a", times: []int{1, 2, 3}, values: map[string]any{"t": 0.0}}.change(t))
	mustCommit(t, b, batch...)
	mustCommit(t, b, data{device: "q1", stream: "a", times: []int{20, 20}, values: map[string]any{"t": 20.0, "h": 1.0}}.change(t))
	mustCommit(t, b, data{device: "q1", stream: "a", times: []int{20}, values: map[string]any{"t": 21.0, "h": 1.0}}.change(t))
}

func testQueryReadings(t *testing.T, b Backend) {
	readingsFixture(t, b)
	ctx := context.Background()
	tests := []struct {
		name  string
		q     readings.Query
		times []int // seconds after base, newest first
		check func(t *testing.T, rs []readings.Record)
		next  bool
	}{
		{name: "all newest first", q: readings.Query{DeviceID: "q1"},
			times: []int{20, 20, 20, 10, 9, 8, 8, 7, 7, 6, 6, 5, 5, 4, 3, 2, 1}},
		{name: "from inclusive to exclusive", q: readings.Query{DeviceID: "q1", From: at(3), To: at(6)},
			times: []int{5, 5, 4, 3}},
		{name: "stream", q: readings.Query{DeviceID: "q1", Stream: "b"}, times: []int{8, 7, 6, 5},
			check: func(t *testing.T, rs []readings.Record) {
				for _, r := range rs {
					if r.Stream != "b" {
						t.Errorf("reading of stream %q", r.Stream)
					}
				}
			}},
		{name: "field", q: readings.Query{DeviceID: "q1", Field: "h", To: at(11)},
			times: []int{10, 9, 8, 7, 6, 5, 4, 3, 2, 1},
			check: func(t *testing.T, rs []readings.Record) {
				for _, r := range rs {
					equalJSON(t, "values", r.Values, map[string]any{"h": 50.0})
				}
			}},
		{name: "limit", q: readings.Query{DeviceID: "q1", Limit: 4}, times: []int{20, 20, 20, 10}, next: true},
		{name: "other device", q: readings.Query{DeviceID: "q2"}, times: []int{3, 2, 1}},
		{name: "unknown device", q: readings.Query{DeviceID: "nobody"}, times: []int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := b.QueryReadings(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, r := range page.Readings {
				got = append(got, int(r.Time.Sub(base)/time.Second))
				if r.DeviceID != tt.q.DeviceID || r.MessageID == 0 || r.ReceivedAt.IsZero() {
					t.Errorf("reading %+v", r)
				}
			}
			if !slices.Equal(got, tt.times) {
				t.Errorf("times = %v, want %v", got, tt.times)
			}
			if (page.Next != "") != tt.next {
				t.Errorf("Next = %q, want a next page: %v", page.Next, tt.next)
			}
			if tt.check != nil {
				tt.check(t, page.Readings)
			}
		})
	}

	t.Run("bad cursor", func(t *testing.T) {
		for _, c := range []string{"garbage", "!!!", "cjE6eDp5"} {
			_, err := b.QueryReadings(ctx, readings.Query{DeviceID: "q1", Cursor: c})
			wantErr(t, "cursor "+c, err, readings.ErrBadCursor)
		}
	})
	t.Run("count", func(t *testing.T) {
		if n := count(t, b, "q1"); n != 17 {
			t.Errorf("q1: %d readings, want 17", n)
		}
		if n := count(t, b, ""); n != 20 {
			t.Errorf("all: %d readings, want 20", n)
		}
	})
}

func testReadingsPaging(t *testing.T, b Backend) {
	readingsFixture(t, b)
	ctx := context.Background()
	full, err := b.QueryReadings(ctx, readings.Query{DeviceID: "q1", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		q    readings.Query
	}{
		{"page of 1", readings.Query{DeviceID: "q1", Limit: 1}},
		{"page of 2", readings.Query{DeviceID: "q1", Limit: 2}},
		{"page of 3", readings.Query{DeviceID: "q1", Limit: 3}},
		{"page of 17", readings.Query{DeviceID: "q1", Limit: 17}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []readings.Record
			q := tt.q
			for pages := 0; ; pages++ {
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				page, err := b.QueryReadings(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Readings) > q.Limit {
					t.Fatalf("page of %d readings, limit %d", len(page.Readings), q.Limit)
				}
				got = append(got, page.Readings...)
				if page.Next == "" {
					break
				}
				q.Cursor = page.Next
			}
			if !slices.Equal(readingTimes(got), readingTimes(full.Readings)) {
				t.Errorf("paged:\n %v\nwant\n %v", readingTimes(got), readingTimes(full.Readings))
			}
		})
	}
}

func testListDevices(t *testing.T, b Backend) {
	ctx := context.Background()
	var batch []*commit.Change
	for _, d := range []struct {
		id, typ, group, name string
		tags                 []string
	}{
		{"l1", "sensor", "north", "Boiler Room", []string{"roof", "b-1"}},
		{"l2", "meter", "north", "Café Ünter", []string{"b-1"}},
		{"l3", "sensor", "south", "", []string{"roofs"}},
		{"l4", "sensor", "", "50% done_x", nil},
		{"l5", "meter", "south", "boiler", []string{"ROOF"}},
	} {
		ch := newDevice(t, d.id, d.typ, false)
		nd := newDev(ch)
		nd.Group, nd.Name, nd.Tags = d.group, d.name, d.tags
		batch = append(batch, ch)
	}
	mustCommit(t, b, batch...)
	mustCommit(t, b,
		&commit.Change{DeviceID: "l2", Ops: []commit.Op{&registry.DevicePatch{Status: ptr("online"), Connected: ptr(true)}}},
		&commit.Change{DeviceID: "l3", Ops: []commit.Op{&registry.DevicePatch{Status: ptr("online"), Connected: ptr(true)}}},
		&commit.Change{DeviceID: "l5", Ops: []commit.Op{&registry.DevicePatch{Status: ptr("error")}}},
	)
	// Last seen: l4 newest, l2 and l5 at the same instant, l1 oldest, l3 never.
	mustCommit(t, b,
		&commit.Change{DeviceID: "l1", Ops: []commit.Op{&registry.DevicePatch{LastSeen: ptr(at(10))}}},
		&commit.Change{DeviceID: "l2", Ops: []commit.Op{&registry.DevicePatch{LastSeen: ptr(at(20))}}},
		&commit.Change{DeviceID: "l4", Ops: []commit.Op{&registry.DevicePatch{LastSeen: ptr(at(30))}}},
		&commit.Change{DeviceID: "l5", Ops: []commit.Op{&registry.DevicePatch{LastSeen: ptr(at(20))}}},
	)
	seen := func(sec int) *time.Time { return ptr(at(sec)) }
	bySeen := registry.OrderLastSeen
	tests := []struct {
		name string
		opts registry.ListOptions
		want []string
	}{
		{"all", registry.ListOptions{}, []string{"l1", "l2", "l3", "l4", "l5"}},
		{"type", registry.ListOptions{Type: "meter"}, []string{"l2", "l5"}},
		{"group", registry.ListOptions{Group: "south"}, []string{"l3", "l5"}},
		{"status", registry.ListOptions{Status: "online"}, []string{"l2", "l3"}},
		{"offline", registry.ListOptions{Status: "offline"}, []string{"l1", "l4"}},
		{"connected", registry.ListOptions{Connected: ptr(true)}, []string{"l2", "l3"}},
		{"not connected", registry.ListOptions{Connected: ptr(false)}, []string{"l1", "l4", "l5"}},
		{"type and group", registry.ListOptions{Type: "sensor", Group: "north"}, []string{"l1"}},
		{"after", registry.ListOptions{After: "l3"}, []string{"l4", "l5"}},
		{"limit", registry.ListOptions{Limit: 2}, []string{"l1", "l2"}},
		{"after and limit", registry.ListOptions{After: "l1", Limit: 2}, []string{"l2", "l3"}},
		{"none", registry.ListOptions{Type: "nothing"}, []string{}},
		// A tag matches whole and with its case; another tag containing
		// it does not.
		{"tag", registry.ListOptions{Tag: "roof"}, []string{"l1"}},
		{"tag of two", registry.ListOptions{Tag: "b-1"}, []string{"l1", "l2"}},
		{"tag and type", registry.ListOptions{Tag: "b-1", Type: "meter"}, []string{"l2"}},
		{"tag none", registry.ListOptions{Tag: "oof"}, []string{}},
		// Text is a part of the id or the name, in any case; LIKE's
		// wildcards are plain characters.
		{"text in name", registry.ListOptions{Text: "BOILER"}, []string{"l1", "l5"}},
		{"text in id", registry.ListOptions{Text: "L3"}, []string{"l3"}},
		{"text in id or name", registry.ListOptions{Text: "l"}, []string{"l1", "l2", "l3", "l4", "l5"}},
		{"text with wildcards", registry.ListOptions{Text: "0% d"}, []string{"l4"}},
		{"text underscore", registry.ListOptions{Text: "n_"}, []string{}},
		{"text non-ascii", registry.ListOptions{Text: "CAFÉ ün"}, []string{"l2"}},
		{"text and tag", registry.ListOptions{Text: "boiler", Tag: "ROOF"}, []string{"l5"}},
		{"text paged", registry.ListOptions{Text: "boiler", After: "l1", Limit: 1}, []string{"l5"}},
		// By last seen: newest first, ties by id, never seen last; the
		// cursor is the last device's (last seen, id).
		{"by last seen", registry.ListOptions{Order: bySeen}, []string{"l4", "l2", "l5", "l1", "l3"}},
		{"by last seen, first page", registry.ListOptions{Order: bySeen, Limit: 2}, []string{"l4", "l2"}},
		{"by last seen, after a tie", registry.ListOptions{Order: bySeen, After: "l2", AfterSeen: seen(20), Limit: 2}, []string{"l5", "l1"}},
		{"by last seen, into the never seen", registry.ListOptions{Order: bySeen, After: "l1", AfterSeen: seen(10)}, []string{"l3"}},
		{"by last seen, among the never seen", registry.ListOptions{Order: bySeen, After: "l3"}, []string{}},
		{"by last seen, filtered", registry.ListOptions{Order: bySeen, Type: "meter"}, []string{"l2", "l5"}},
		{"by last seen, filtered after", registry.ListOptions{Order: bySeen, Type: "sensor", After: "l4", AfterSeen: seen(30)}, []string{"l1", "l3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, err := b.ListDevices(ctx, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := deviceIDs(ds); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func testTokens(t *testing.T, b Backend) {
	ctx := context.Background()
	t1 := access.Token{ID: "tok1", Name: "ci", Role: access.Operator, Hash: hash("h1"), CreatedAt: at(1)}
	t2 := access.Token{ID: "tok2", Name: "admin", Role: access.Admin, Hash: hash("h2"), CreatedAt: at(2)}
	for _, tok := range []access.Token{t1, t2} {
		if err := b.CreateToken(ctx, tok); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
	}
	if err := b.CreateToken(ctx, t1); err == nil {
		t.Error("CreateToken of an existing id succeeded")
	}
	tests := []struct {
		name string
		hash []byte
		want *access.Token
		err  error
	}{
		{"first", hash("h1"), &t1, nil},
		{"second", hash("h2"), &t2, nil},
		{"unknown", hash("h3"), nil, access.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.TokenByHash(ctx, tt.hash)
			if tt.err != nil {
				wantErr(t, "TokenByHash", err, tt.err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			equalJSON(t, "token", *got, *tt.want)
			if !bytes.Equal(got.Hash, tt.want.Hash) {
				t.Errorf("hash = %x", got.Hash)
			}
		})
	}
	if err := b.RevokeToken(ctx, "tok1", at(10)); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	wantErr(t, "RevokeToken of unknown", b.RevokeToken(ctx, "nope", at(10)), access.ErrNotFound)
	list, err := b.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	revoked := t1
	revoked.RevokedAt = ptr(at(10))
	equalJSON(t, "tokens", list, []access.Token{revoked, t2})
	got, err := b.TokenByHash(ctx, hash("h1"))
	if err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(at(10)) {
		t.Errorf("revoked token = %+v, %v", got, err)
	}
}

func testListMessages(t *testing.T, b Backend) {
	ctx := context.Background()
	provision(t, b, "m1", "m2")
	var ids []int64 // in commit order
	for i := range 6 {
		dev := []string{"m1", "m2"}[i%2]
		ch := data{device: dev, times: []int{i}, values: map[string]any{"v": 1.0}}.change(t)
		if i == 2 || i == 3 || i == 5 {
			msg(ch).Accepted, msg(ch).Code, msg(ch).Reason = false, "bad", "bad value"
		}
		mustCommit(t, b, ch)
		ids = append(ids, msg(ch).ID)
	}
	// A message of a device that is not registered is audited too.
	unknown := &commit.Change{DeviceID: "m-unknown", Ops: []commit.Op{&readings.Message{ID: nextMessageID(), Topic: "devices/m-unknown/data",
		Transport: "http", Payload: []byte("{}"), Code: "unknown_device", Reason: "no such device", ReceivedAt: at(3)}}}
	mustCommit(t, b, unknown)
	if unknown.Err != nil {
		t.Fatalf("message of an unknown device: %v", unknown.Err)
	}
	rev := func(xs ...int64) []int64 { slices.Reverse(xs); return xs }
	tests := []struct {
		name string
		q    messagelog.Query
		want []int64
	}{
		{"device newest first", messagelog.Query{DeviceID: "m1"}, rev(ids[0], ids[2], ids[4])},
		{"rejected of a device", messagelog.Query{DeviceID: "m2", Rejected: true}, rev(ids[3], ids[5])},
		{"rejected", messagelog.Query{Rejected: true}, []int64{msg(unknown).ID, ids[5], ids[3], ids[2]}},
		{"before", messagelog.Query{DeviceID: "m2", Before: ids[5]}, rev(ids[1], ids[3])},
		{"limit", messagelog.Query{Limit: 2}, []int64{msg(unknown).ID, ids[5]}},
		{"unknown device", messagelog.Query{DeviceID: "m-unknown"}, []int64{msg(unknown).ID}},
	}
	check := func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var got []int64
				for _, m := range messages(t, b, tt.q) {
					got = append(got, m.ID)
					if tt.q.Rejected && m.Accepted {
						t.Errorf("accepted message %d in a rejected listing", m.ID)
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("got %v, want %v", got, tt.want)
				}
			})
		}
	}
	check(t)
	max, err := b.MaxMessageID(ctx)
	if err != nil || max != msg(unknown).ID {
		t.Errorf("MaxMessageID = %d, %v; want %d", max, err, msg(unknown).ID)
	}
	c, ok := b.(MessageCompactor)
	if !ok {
		return
	}
	// The same answers with the oldest messages in blocks and the rest
	// in the head (cursors and rejected messages across the boundary),
	// then with all of them in blocks.
	if n, err := c.CompactMessages(ctx, 3); err != nil || n == 0 {
		t.Fatalf("CompactMessages(3) = %d, %v", n, err)
	}
	t.Run("head and blocks", check)
	if _, err := c.CompactMessages(ctx, 1000); err != nil {
		t.Fatalf("CompactMessages: %v", err)
	}
	t.Run("blocks", check)
	if max, err := b.MaxMessageID(ctx); err != nil || max != msg(unknown).ID {
		t.Errorf("MaxMessageID after compaction = %d, %v; want %d", max, err, msg(unknown).ID)
	}

	// A device's messages in several blocks and in the head, paged
	// through with small limits: every message once, newest first.
	want := rev(ids[0], ids[2], ids[4])
	rejectedIDs := []int64{ids[2]}
	for round := range 4 {
		var batch []*commit.Change
		for i := range 3 {
			ch := data{device: "m1", msgID: fmt.Sprintf("p%d-%d", round, i), times: []int{100 + round*3 + i}, values: map[string]any{"v": 1.0}}.change(t)
			if i == 1 {
				msg(ch).Accepted, msg(ch).Code, msg(ch).Reason = false, "bad", "bad value"
				rejectedIDs = append(rejectedIDs, msg(ch).ID)
			}
			batch = append(batch, ch)
			want = append([]int64{msg(ch).ID}, want...)
		}
		mustCommit(t, b, batch...)
		if round < 3 {
			if _, err := c.CompactMessages(ctx, 1000); err != nil {
				t.Fatalf("CompactMessages: %v", err)
			}
		}
	}
	for _, limit := range []int{1, 2, 4, 100} {
		for _, rejected := range []bool{false, true} {
			var got []int64
			before := int64(0)
			for range 100 {
				page := messages(t, b, messagelog.Query{DeviceID: "m1", Rejected: rejected, Before: before, Limit: limit})
				for _, m := range page {
					got = append(got, m.ID)
				}
				if len(page) < limit {
					break
				}
				before = page[len(page)-1].ID
			}
			var w []int64
			for _, id := range want {
				if !rejected || slices.Contains(rejectedIDs, id) {
					w = append(w, id)
				}
			}
			if !slices.Equal(got, w) {
				t.Errorf("pages of %d (rejected %v): got %v, want %v", limit, rejected, got, w)
			}
		}
	}
}

// MessageCompactor is a backend that moves its message log into blocks
// (SQLite): the suite checks the listings across that move.
type MessageCompactor interface {
	// CompactMessages moves up to limit of the oldest messages (whole
	// commit batches) into blocks and returns how many it moved.
	CompactMessages(ctx context.Context, limit int) (int, error)
}
