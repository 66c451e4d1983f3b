package postgres

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
)

// logMsg is a message of the log tests: a data message with a msg_id
// (and one reading), or a rejected one, with an event at the same time.
type logMsg struct {
	device, msgID string
	at            time.Time
	rejected      bool
}

func (m logMsg) change(t testing.TB, ids *commit.IDs) *commit.Change {
	t.Helper()
	v := []byte(`{"v":1}`)
	msg := &readings.Message{ID: ids.Next(), Topic: "devices/" + m.device + "/data", Transport: "mqtt", QoS: 1,
		Payload: v, MsgID: m.msgID, Accepted: !m.rejected, ReceivedAt: m.at}
	ch := &commit.Change{DeviceID: m.device, Ops: []commit.Op{msg}}
	if m.rejected {
		msg.Code, msg.Reason = "bad_payload", "test"
	} else {
		ch.Ops = withReadings(msg, []readings.Reading{{Time: m.at, Values: v}})
	}
	ev, err := commit.NewEvent(events.Event{Type: "test_event", Time: m.at, DeviceID: m.device})
	if err != nil {
		t.Fatal(err)
	}
	ch.Events = []commit.Event{ev}
	return ch
}

// commitLog commits msgs in one batch and returns their changes.
func commitLog(t testing.TB, s *Store, ids *commit.IDs, msgs ...logMsg) []*commit.Change {
	t.Helper()
	var batch []*commit.Change
	for _, m := range msgs {
		batch = append(batch, m.change(t, ids))
	}
	if err := s.Commit(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	return batch
}

// messageRows returns how many messages each partition holds.
func messageRows(t *testing.T, s *Store) map[string]int {
	t.Helper()
	return countBy(t, s, `SELECT tableoid::regclass::text, count(*) FROM messages GROUP BY 1`)
}

func countBy(t *testing.T, s *Store, sql string) map[string]int {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	var name string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&name, &n}, func() error {
		out[name] = n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// listed returns the msg_ids (or ids for none) of a listing, in order.
func listed(t *testing.T, s *Store, q messagelog.Query) []string {
	t.Helper()
	var out []string
	for {
		page, err := s.ListMessages(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page {
			out = append(out, m.MsgID)
		}
		if len(page) < q.Limit || len(page) == 0 {
			return out
		}
		q.Before = page[len(page)-1].ID
	}
}

// TestMessagesAcrossPartitions stores messages over three days: each in
// its day's partition, a msg_id is a duplicate on any later day (and in
// the same batch), and the device and rejected listings come newest
// first across partitions, page by page.
func TestMessagesAcrossPartitions(t *testing.T) {
	s := openTest(t)
	provisionDevices(t, s, "sensor", "m1", "m2")
	if err := s.EnsurePartitions(context.Background(), day0, day0.AddDate(0, 0, 2)); err != nil {
		t.Fatal(err)
	}
	var ids commit.IDs
	d := func(n int, h time.Duration) time.Time { return day0.AddDate(0, 0, n).Add(h) }
	commitLog(t, s, &ids, logMsg{"m1", "a", d(0, 1), false}, logMsg{"m2", "a", d(0, 2), false}, logMsg{"m1", "r0", d(0, 3), true})
	commitLog(t, s, &ids, logMsg{"m1", "b", d(1, 1), false}, logMsg{"m1", "r1", d(1, 2), true})
	for _, tc := range []struct {
		name string
		msgs []logMsg
		dup  []bool
	}{
		{"a day later", []logMsg{{"m1", "a", d(2, 1), false}, {"m2", "b", d(2, 1), false}}, []bool{true, false}},
		{"two days later, and twice in a batch", []logMsg{{"m1", "b", d(2, 2), false}, {"m1", "c", d(2, 3), false}, {"m1", "c", d(2, 4), false}}, []bool{true, false, true}},
		{"a rejected one", []logMsg{{"m1", "r0", d(2, 5), true}}, []bool{true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, ch := range commitLog(t, s, &ids, tc.msgs...) {
				if ch.Err != nil || ch.Duplicate != tc.dup[i] {
					t.Errorf("change %d: Err %v, Duplicate %v; want %v", i, ch.Err, ch.Duplicate, tc.dup[i])
				}
			}
		})
	}
	if got, want := messageRows(t, s), map[string]int{messagesDays.name(day0): 3, messagesDays.name(day0.AddDate(0, 0, 1)): 2, messagesDays.name(day0.AddDate(0, 0, 2)): 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("messages per partition %v, want %v", got, want)
	}
	for _, tc := range []struct {
		name string
		q    messagelog.Query
		want []string
	}{
		{"device", messagelog.Query{DeviceID: "m1", Limit: 2}, []string{"c", "r1", "b", "r0", "a"}},
		{"rejected", messagelog.Query{Rejected: true, Limit: 1}, []string{"r1", "r0"}},
		{"all", messagelog.Query{Limit: 3}, []string{"c", "b", "r1", "b", "r0", "a", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := listed(t, s, tc.q); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDedupeAfterPartitionDropped: a msg_id stays a duplicate while its
// original's record is kept; once retention dropped the record's day, its
// message_ids entry is gone too, and a late copy is stored as a new
// message (the documented behaviour, as on SQLite).
func TestDedupeAfterPartitionDropped(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	provisionDevices(t, s, "sensor", "m1")
	if err := s.EnsurePartitions(ctx, day0, day0.AddDate(0, 0, 2)); err != nil {
		t.Fatal(err)
	}
	var ids commit.IDs
	commitLog(t, s, &ids, logMsg{"m1", "old", day0.Add(time.Hour), false}, logMsg{"m1", "mid", day0.AddDate(0, 0, 1).Add(time.Hour), false},
		logMsg{"m1", "new", day0.AddDate(0, 0, 2).Add(time.Hour), false})
	dup := func(msgID string, at time.Time) bool {
		t.Helper()
		return commitLog(t, s, &ids, logMsg{"m1", msgID, at, false})[0].Duplicate
	}
	late := day0.AddDate(0, 0, 2).Add(2 * time.Hour)
	if !dup("old", late) {
		t.Fatal("a copy of a kept message was stored")
	}
	// Expire everything received before day 1, noon: day 0 goes whole,
	// day 1 stays (it holds a newer record).
	n, err := s.DropMessages(ctx, day0.AddDate(0, 0, 1).Add(12*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("DropMessages = %d, %v; want 1", n, err)
	}
	if got := messageRows(t, s); got[messagesDays.name(day0)] != 0 || got[messagesDays.name(day0.AddDate(0, 0, 1))] != 1 {
		t.Errorf("messages per partition %v", got)
	}
	if dup("old", late) {
		t.Error("a copy of a dropped message is still a duplicate")
	}
	if !dup("mid", late) {
		t.Error("a copy of a message of a kept day was stored")
	}
	if got := listed(t, s, messagelog.Query{DeviceID: "m1", Limit: 10}); !slices.Equal(got, []string{"old", "new", "mid"}) {
		t.Errorf("listing %v, want the late copy, new and mid", got)
	}
}

// openWithRanges opens a store whose event ranges span few seqs.
func openWithRanges(t testing.TB, size int64) *Store {
	t.Helper()
	first := openTest(t)
	s, err := Open(context.Background(), Options{DSN: os.Getenv(dsnEnv), Schema: first.pool.Config().ConnConfig.RuntimeParams["search_path"], EventRangeMin: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// Open made the first store's ranges (65,536 seqs): replace them.
	ranges, err := eventRanges(context.Background(), s.pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		if _, err := s.pool.Exec(context.Background(), `DROP TABLE `+r.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.EnsureEventRanges(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// eventSeqs reads the whole log after after, n at a time.
func eventSeqs(t *testing.T, s *Store, after int64, n int) []int64 {
	t.Helper()
	var out []int64
	for {
		evs, err := s.ReadEvents(context.Background(), after, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		for _, e := range evs {
			out = append(out, e.Seq)
			after = e.Seq
		}
	}
}

// TestEventRangesCursor commits events over many small ranges, some
// past the ranges made ahead (into the default partition, moved out when
// their range is made): a reader continues from any cursor without a gap,
// and retention drops whole ranges whose last event is past the window.
func TestEventRangesCursor(t *testing.T) {
	s := openWithRanges(t, 4)
	ctx := context.Background()
	provisionDevices(t, s, "sensor", "e1")
	var ids commit.IDs
	var all []int64
	for i := range 12 {
		var batch []logMsg
		for j := range 3 {
			batch = append(batch, logMsg{device: "e1", msgID: fmt.Sprintf("%d-%d", i, j), at: day0.Add(time.Duration(i) * time.Hour)})
		}
		for _, ch := range commitLog(t, s, &ids, batch...) {
			all = append(all, ch.Events[0].Seq)
		}
		if i%4 == 3 { // the ranges fall behind in between
			if err := s.EnsureEventRanges(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	ranges, err := eventRanges(ctx, s.pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(ranges) < 9 {
		t.Fatalf("%d ranges, want at least 9: %v", len(ranges), ranges)
	}
	for i := 1; i < len(ranges); i++ {
		if ranges[i].lo != ranges[i-1].hi {
			t.Fatalf("ranges %v and %v leave a gap", ranges[i-1], ranges[i])
		}
	}
	if got := countBy(t, s, `SELECT 'default', count(*) FROM events_default`); got["default"] != 0 {
		t.Errorf("%d events left in the default partition", got["default"])
	}
	last, err := s.LastSeq(ctx)
	if err != nil || last != all[len(all)-1] {
		t.Errorf("LastSeq = %d, %v; want %d", last, err, all[len(all)-1])
	}
	for _, after := range []int64{0, 1, 4, 5, 17, all[len(all)-2]} {
		for _, n := range []int{1, 5, 1000} {
			want := slices.DeleteFunc(slices.Clone(all), func(s int64) bool { return s <= after })
			if got := eventSeqs(t, s, after, n); !slices.Equal(got, want) {
				t.Errorf("after %d, %d at a time: %v, want %v", after, n, got, want)
			}
		}
	}

	// Retention at 5:30: the ranges whose last event is before it go
	// whole (events of 0:00 to 4:00, and part of 5:00's if a range ends
	// there); no later event goes.
	cut := day0.Add(5*time.Hour + 30*time.Minute)
	if _, err := s.DropEvents(ctx, cut); err != nil {
		t.Fatal(err)
	}
	evs, err := s.ReadEvents(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, e := range evs {
		if !e.Time.Before(cut) {
			kept++
		}
	}
	if kept != 6*3 {
		t.Errorf("%d events at or after the cutoff kept, want 18", kept)
	}
	if len(evs) > 6*3+4 {
		t.Errorf("%d events kept, want at most one range (4) more than the 18 after the cutoff", len(evs))
	}
	if got := eventSeqs(t, s, 0, 2); !slices.Equal(got, all[len(all)-len(got):]) {
		t.Errorf("after retention the log reads %v, want the tail of %v", got, all)
	}
}

// TestLogRetentionUnderIngest drops expired message partitions and event
// ranges while commits go on (new messages and events): every commit
// succeeds, nothing newer than the window goes, and the log reads
// without a gap.
func TestLogRetentionUnderIngest(t *testing.T) {
	s := openWithRanges(t, 8)
	ctx := context.Background()
	provisionDevices(t, s, "sensor", "old", "live")
	if err := s.EnsurePartitions(ctx, day0, day0.AddDate(0, 0, 3)); err != nil {
		t.Fatal(err)
	}
	var ids commit.IDs
	for d := range 3 {
		for h := range 4 {
			commitLog(t, s, &ids, logMsg{"old", fmt.Sprintf("%d-%d", d, h), day0.AddDate(0, 0, d).Add(time.Duration(h) * time.Hour), false},
				logMsg{"old", fmt.Sprintf("r%d-%d", d, h), day0.AddDate(0, 0, d).Add(time.Duration(h) * time.Hour), true})
		}
	}
	if err := s.EnsureEventRanges(ctx); err != nil {
		t.Fatal(err)
	}
	start, err := s.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live := day0.AddDate(0, 0, 3).Add(time.Hour)
	const commits = 200
	stop := make(chan struct{})
	var g errgroup.Group
	g.Go(func() error {
		defer close(stop)
		ids := commit.IDs{}
		ids.Seed(1 << 40)
		for i := range commits {
			batch := []*commit.Change{logMsg{"live", fmt.Sprintf("l%d", i), live, false}.change(t, &ids)}
			if err := s.Commit(ctx, batch); err != nil {
				return err
			}
		}
		return nil
	})
	passes := 0
	g.Go(func() error {
		for {
			select {
			case <-stop:
				if passes > 0 {
					return nil
				}
			default:
			}
			if _, err := s.DropMessages(ctx, day0.AddDate(0, 0, 2)); err != nil {
				return err
			}
			if _, err := s.DropEvents(ctx, day0.AddDate(0, 0, 2)); err != nil {
				return err
			}
			if err := s.EnsureEventRanges(ctx); err != nil {
				return err
			}
			passes++
		}
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	rows := messageRows(t, s)
	if rows[messagesDays.name(day0)] != 0 || rows[messagesDays.name(day0.AddDate(0, 0, 1))] != 0 || rows[messagesDays.name(day0.AddDate(0, 0, 2))] != 8 {
		t.Errorf("messages per partition %v: want days 0 and 1 dropped, day 2 whole", rows)
	}
	if got := listed(t, s, messagelog.Query{DeviceID: "live", Limit: 1000}); len(got) != commits {
		t.Errorf("%d live messages, want %d", len(got), commits)
	}
	seqs := eventSeqs(t, s, start, 7)
	if len(seqs) != commits {
		t.Errorf("%d live events after %d, want %d", len(seqs), start, commits)
	}
	evs, err := s.ReadEvents(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Time.Before(day0.AddDate(0, 0, 1)) {
			t.Errorf("event %d of %v kept: its range ended a day before the cutoff", e.Seq, e.Time)
			break
		}
	}
	if n := countBy(t, s, `SELECT 'n', count(*) FROM message_ids WHERE received_at < '`+day0.AddDate(0, 0, 2).Format(time.RFC3339)+`'`); n["n"] != 0 {
		t.Errorf("%d message_ids entries of dropped days left", n["n"])
	}
	t.Logf("%d retention passes during %d commits", passes, commits)
}

// TestLogPartitionMigration fills the unpartitioned messages and events
// of the schema before migrations 00720 and 00730, then migrates: every
// row is kept, an old msg_id is still a duplicate, seqs go on above the
// old ones, and down again keeps the rows.
func TestLogPartitionMigration(t *testing.T) {
	s := openTest(t) // only for a fresh schema dropped at cleanup
	schema := s.pool.Config().ConnConfig.RuntimeParams["search_path"]
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE; CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*s.pool.Config().ConnConfig.Copy())
	defer db.Close()
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithDisableGlobalRegistry(true), goose.WithAllowOutofOrder(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 719); err != nil {
		t.Fatal(err)
	}
	today := day(time.Now())
	times := []time.Time{today.Add(time.Minute), time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), today.AddDate(0, 0, -1)}
	for i, at := range times {
		if _, err := db.ExecContext(ctx, `INSERT INTO messages (id, device_id, topic, transport, qos, payload, msg_id, accepted, received_at)
			VALUES ($1, 'g1', 't', 'mqtt', 1, '\x7b7d', $2, $3, $4)`, i+1, fmt.Sprint("g", i), i != 1, at); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO events (type, time, device_id) VALUES ('test_event', $1, 'g1')`, at); err != nil {
			t.Fatal(err)
		}
	}
	// A seq drawn by a transaction that rolled back: seqs go on above it.
	if _, err := db.ExecContext(ctx, `SELECT nextval(pg_get_serial_sequence('events', 'seq'))`); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, Options{DSN: os.Getenv(dsnEnv), Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, want := messageRows(t, s2), map[string]int{"messages_default": 1, messagesDays.name(today.AddDate(0, 0, -1)): 1, messagesDays.name(today): 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("messages per partition %v, want %v", got, want)
	}
	if got := listed(t, s2, messagelog.Query{DeviceID: "g1", Limit: 2}); !slices.Equal(got, []string{"g2", "g1", "g0"}) {
		t.Errorf("listing %v", got)
	}
	if got := listed(t, s2, messagelog.Query{Rejected: true, Limit: 2}); !slices.Equal(got, []string{"g1"}) {
		t.Errorf("rejected listing %v", got)
	}
	// 00740: the payloads moved to message_payloads, by day like their
	// records.
	if got, want := countBy(t, s2, `SELECT tableoid::regclass::text, count(*) FROM message_payloads GROUP BY 1`),
		map[string]int{"message_payloads_default": 1, payloadsDays.name(today.AddDate(0, 0, -1)): 1, payloadsDays.name(today): 1}; !maps.Equal(got, want) {
		t.Errorf("payloads per partition %v, want %v", got, want)
	}
	if page, err := s2.ListMessages(ctx, messagelog.Query{DeviceID: "g1", Limit: 10}); err != nil || len(page) != 3 {
		t.Errorf("listing %d messages, %v", len(page), err)
	} else {
		for _, m := range page {
			if string(m.Payload) != "{}" {
				t.Errorf("message %s payload %q after the migration, want {}", m.MsgID, m.Payload)
			}
		}
	}
	ids := commit.IDs{}
	ids.Seed(10)
	provisionDevices(t, s2, "sensor", "g1")
	chs := commitLog(t, s2, &ids, logMsg{"g1", "g0", time.Now(), false}, logMsg{"g1", "new", time.Now(), false})
	if !chs[0].Duplicate || chs[1].Duplicate {
		t.Errorf("after the migration: Duplicate %v, %v; want true, false", chs[0].Duplicate, chs[1].Duplicate)
	}
	got := eventSeqs(t, s2, 0, 10)
	// Provisioning wrote events too: the old three come first, then the
	// new ones above the rolled back seq 4.
	if len(got) < 4 || !slices.Equal(got[:3], []int64{1, 2, 3}) || got[3] != 5 {
		t.Errorf("seqs after the migration %v, want 1 2 3 5 ...", got)
	}
	if rows := countBy(t, s2, `SELECT tableoid::regclass::text, count(*) FROM events WHERE seq <= 3 GROUP BY 1`); rows[eventRangeName(1)] != 3 {
		t.Errorf("old events per partition %v, want all in %s", rows, eventRangeName(1))
	}
	nEvents := len(got)

	if _, err := p.DownTo(ctx, 719); err != nil {
		t.Fatal(err)
	}
	var nm, ne int
	if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM events)`).Scan(&nm, &ne); err != nil || nm != 4 || ne != nEvents {
		t.Errorf("after down: %d messages, %d events, %v; want 4, %d", nm, ne, err, nEvents)
	}
	var np int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE payload IS NOT NULL`).Scan(&np); err != nil || np != 4 {
		t.Errorf("after down: %d messages with their payload, %v; want 4", np, err)
	}
	var next int64
	if err := db.QueryRowContext(ctx, `INSERT INTO events (type, time) VALUES ('test_event', now()) RETURNING seq`).Scan(&next); err != nil || next != got[len(got)-1]+1 {
		t.Errorf("first seq after down %d, %v; want %d", next, err, got[len(got)-1]+1)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO messages (id, device_id, topic, transport, qos, msg_id, accepted, received_at)
		VALUES (99, 'g1', 't', 'mqtt', 1, 'g0', true, now()) ON CONFLICT (device_id, msg_id) WHERE msg_id IS NOT NULL DO NOTHING`); err != nil {
		t.Errorf("the dedupe index after down: %v", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM messages`).Scan(&nm); err != nil || nm != 4 {
		t.Errorf("after down a duplicate was stored: %d messages, %v", nm, err)
	}
}

// TestMessagePayloadsWindow: payloads live in message_payloads by day;
// DropMessagePayloads drops the days wholly before the cut (and the
// default partition's rows before it) and keeps every record with its
// metadata; DropMessages takes a day's payloads with its records.
func TestMessagePayloadsWindow(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	provisionDevices(t, s, "sensor", "m1")
	if err := s.EnsurePartitions(ctx, day0, day0.AddDate(0, 0, 2)); err != nil {
		t.Fatal(err)
	}
	var ids commit.IDs
	// Day -1 has no partition: its rows go to the default partitions.
	commitLog(t, s, &ids, logMsg{"m1", "early", day0.AddDate(0, 0, -1).Add(time.Hour), false},
		logMsg{"m1", "a", day0.Add(time.Hour), false}, logMsg{"m1", "b", day0.AddDate(0, 0, 1).Add(time.Hour), true},
		logMsg{"m1", "c", day0.AddDate(0, 0, 2).Add(time.Hour), false})
	payloads := func() map[string]bool {
		t.Helper()
		page, err := s.ListMessages(ctx, messagelog.Query{DeviceID: "m1", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, m := range page {
			out[m.MsgID] = m.Payload != nil
		}
		return out
	}
	for _, step := range []struct {
		name string
		drop func() (int, error)
		want map[string]bool // msg_id: payload kept; absent: record gone
		rows map[string]int  // payloads per partition
	}{
		{"the default partition's rows before day 0", func() (int, error) { return s.DropMessagePayloads(ctx, day0) },
			map[string]bool{"early": false, "a": true, "b": true, "c": true},
			map[string]int{payloadsDays.name(day0): 1, payloadsDays.name(day0.AddDate(0, 0, 1)): 1, payloadsDays.name(day0.AddDate(0, 0, 2)): 1}},
		{"day 0 and the default's older rows", func() (int, error) { return s.DropMessagePayloads(ctx, day0.AddDate(0, 0, 1).Add(12*time.Hour)) },
			map[string]bool{"early": false, "a": false, "b": true, "c": true},
			map[string]int{payloadsDays.name(day0.AddDate(0, 0, 1)): 1, payloadsDays.name(day0.AddDate(0, 0, 2)): 1}},
		{"records of day 1 with their payloads", func() (int, error) { return s.DropMessages(ctx, day0.AddDate(0, 0, 2)) },
			map[string]bool{"c": true},
			map[string]int{payloadsDays.name(day0.AddDate(0, 0, 2)): 1}},
	} {
		if _, err := step.drop(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := payloads(); !maps.Equal(got, step.want) {
			t.Errorf("%s: payloads kept %v, want %v", step.name, got, step.want)
		}
		if got := countBy(t, s, `SELECT tableoid::regclass::text, count(*) FROM message_payloads GROUP BY 1`); !maps.Equal(got, step.rows) {
			t.Errorf("%s: payloads per partition %v, want %v", step.name, got, step.rows)
		}
	}
}
