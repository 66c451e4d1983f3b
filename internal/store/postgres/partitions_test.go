package postgres

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/retention"
)

// day0 is the first day of the partition tests, far from today so that
// only the partitions a test creates cover it.
var day0 = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

// provisionDevices commits a new device of typ for each id.
func provisionDevices(t *testing.T, s *Store, typ string, ids ...string) {
	t.Helper()
	var batch []*commit.Change
	for _, id := range ids {
		batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{&registry.NewDevice{
			Type: typ, MQTTUsername: id, PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: day0,
		}}})
	}
	if err := s.Commit(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
}

// commitReadings commits one message per time, each with one reading of
// device at that time.
func commitReadings(t *testing.T, s *Store, ids *commit.IDs, device string, times ...time.Time) {
	t.Helper()
	var batch []*commit.Change
	for i, at := range times {
		v := fmt.Appendf(nil, `{"v":%d}`, at.Unix())
		m := &readings.Message{ID: ids.Next(), Topic: "devices/" + device + "/data", Transport: "mqtt", QoS: 1,
			Payload: v, MsgID: fmt.Sprintf("%s-%d-%d", device, at.UnixMicro(), i), Accepted: true, ReceivedAt: at}
		batch = append(batch, &commit.Change{DeviceID: device, Ops: withReadings(m, []readings.Reading{{Time: at, Values: v}})})
	}
	if err := s.Commit(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
}

// partitionRows returns how many readings each partition holds.
func partitionRows(t *testing.T, s *Store) map[string]int {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), `SELECT tableoid::regclass::text, count(*) FROM readings GROUP BY 1`)
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

// allTimes pages through a device's readings, newest first.
func allTimes(t *testing.T, s *Store, q readings.Query) []time.Time {
	t.Helper()
	var out []time.Time
	for {
		page, err := s.QueryReadings(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Readings {
			out = append(out, r.Time)
		}
		if page.Next == "" {
			return out
		}
		q.Cursor = page.Next
	}
}

// TestReadingsAcrossPartitions stores readings over five days, one day
// before its partition exists, and one far in the future: each lands in
// its day's partition (or the default), and the queries return them
// newest first across partitions, page by page and by time range.
func TestReadingsAcrossPartitions(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	provisionDevices(t, s, "sensor", "p1", "p2")
	if err := s.EnsurePartitions(ctx, day0.AddDate(0, 0, 1), day0.AddDate(0, 0, 4)); err != nil {
		t.Fatal(err)
	}
	var ids commit.IDs
	var want []time.Time
	for d := range 5 {
		for _, h := range []time.Duration{0, 12 * time.Hour, 24*time.Hour - time.Microsecond} {
			want = append(want, day0.AddDate(0, 0, d).Add(h))
		}
	}
	future := time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)
	want = append(want, future)
	// Committed out of time order, in two batches, with another device's
	// readings between.
	commitReadings(t, s, &ids, "p1", want[8:]...)
	commitReadings(t, s, &ids, "p2", want[3:9]...)
	commitReadings(t, s, &ids, "p1", want[:8]...)
	slices.Reverse(want)

	got := partitionRows(t, s)
	wantRows := map[string]int{"readings_default": 3 + 1} // day0 and 2999
	for d := 1; d < 5; d++ {
		wantRows[partitionName(day0.AddDate(0, 0, d))] = 3
	}
	for d := 1; d < 3; d++ { // p2's
		wantRows[partitionName(day0.AddDate(0, 0, d))] += 3
	}
	if fmt.Sprint(got) != fmt.Sprint(wantRows) {
		t.Errorf("rows per partition %v, want %v", got, wantRows)
	}

	check := func(t *testing.T, q readings.Query, want []time.Time) {
		t.Helper()
		if got := allTimes(t, s, q); !slices.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("readings of %+v\n got %v\nwant %v", q, got, want)
		}
	}
	check(t, readings.Query{DeviceID: "p1", Limit: 2}, want)
	check(t, readings.Query{DeviceID: "p1", Limit: 100}, want)
	check(t, readings.Query{DeviceID: "p1", Limit: 4, From: day0.Add(12 * time.Hour), To: day0.AddDate(0, 0, 3)}, want[7:15])

	// Creating day0's partition moves its rows out of the default one.
	if err := s.EnsurePartitions(ctx, day0, day0); err != nil {
		t.Fatal(err)
	}
	if got := partitionRows(t, s); got["readings_default"] != 1 || got[partitionName(day0)] != 3 {
		t.Errorf("after creating %s: rows per partition %v", partitionName(day0), got)
	}
	check(t, readings.Query{DeviceID: "p1", Limit: 3}, want)
	if n, err := s.CountReadings(ctx, "p1"); err != nil || n != int64(len(want)) {
		t.Errorf("CountReadings = %d, %v; want %d", n, err, len(want))
	}
	a, err := s.AggregateReadings(ctx, readings.AggregateQuery{DeviceID: "p1", Field: "v", From: day0, To: day0.AddDate(0, 0, 5), Buckets: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Buckets) != 5 {
		t.Errorf("%d buckets, want 5", len(a.Buckets))
	}
	for i, b := range a.Buckets {
		if b.Count != 3 {
			t.Errorf("bucket %d (day %d) counts %d, want 3", i, i, b.Count)
		}
	}
}

// TestPartitionRetention expires readings of four days: the partitions
// wholly before the longest window are dropped, the rows of a type with a
// shorter window are deleted, old rows of the default partition go, and
// every newer reading is intact.
func TestPartitionRetention(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	provisionDevices(t, s, "sensor", "long")
	provisionDevices(t, s, "short", "brief")
	if err := s.EnsurePartitions(ctx, day0, day0.AddDate(0, 0, 3)); err != nil {
		t.Fatal(err)
	}
	var ids commit.IDs
	var times []time.Time
	for d := range 4 {
		times = append(times, day0.AddDate(0, 0, d).Add(6*time.Hour), day0.AddDate(0, 0, d).Add(18*time.Hour))
	}
	old := day0.AddDate(0, 0, -30) // no partition: in the default one
	commitReadings(t, s, &ids, "long", append([]time.Time{old}, times...)...)
	commitReadings(t, s, &ids, "brief", times...)

	// Now is day 3, noon: "long" keeps 1.5 days (from day 2, 00:00, so
	// days 0 and 1 go whole), "brief" half a day (from day 3, 00:00).
	now := day0.AddDate(0, 0, 3).Add(12 * time.Hour)
	e := retention.New(s, retention.Options{
		Readings:       36 * time.Hour,
		ReadingsByType: map[string]time.Duration{"short": 12 * time.Hour},
		Batch:          1,
		Now:            func() time.Time { return now },
	}, slog.New(slog.DiscardHandler), nil)
	if err := e.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	for d := range 4 {
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, partitionName(day0.AddDate(0, 0, d))).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists != (d >= 2) {
			t.Errorf("partition of day %d exists: %v", d, exists)
		}
	}
	desc := func(ts ...time.Time) []time.Time {
		slices.Reverse(ts)
		return ts
	}
	// Day 2 stays whole for "long", although its 06:00 reading is past
	// the window: it goes with its partition.
	if got, want := allTimes(t, s, readings.Query{DeviceID: "long"}), desc(slices.Clone(times[4:])...); !slices.EqualFunc(got, want, time.Time.Equal) {
		t.Errorf("long: %v, want %v", got, want)
	}
	if got, want := allTimes(t, s, readings.Query{DeviceID: "brief"}), desc(slices.Clone(times[6:])...); !slices.EqualFunc(got, want, time.Time.Equal) {
		t.Errorf("brief: %v, want %v", got, want)
	}
	if got := partitionRows(t, s); got["readings_default"] != 0 {
		t.Errorf("rows per partition %v: the default's old row stayed", got)
	}
	// A second pass finds nothing more.
	if err := e.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountReadings(ctx, ""); err != nil || n != 4+2 {
		t.Errorf("CountReadings = %d, %v; want 6", n, err)
	}
}

// TestPartitionsConcurrentNodes creates the same partitions from two
// stores on one schema (two hub nodes) while both commit readings into
// those days: every reading is stored once, every partition made once.
func TestPartitionsConcurrentNodes(t *testing.T) {
	first := openTest(t)
	ctx := context.Background()
	second, err := Open(ctx, Options{DSN: os.Getenv(dsnEnv), Schema: first.pool.Config().ConnConfig.RuntimeParams["search_path"]})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	provisionDevices(t, first, "sensor", "n0", "n1")
	const days = 8
	var g errgroup.Group
	for n, s := range []*Store{first, second} {
		g.Go(func() error {
			return s.EnsurePartitions(ctx, day0, day0.AddDate(0, 0, days-1))
		})
		g.Go(func() error {
			ids := commit.IDs{}
			for d := range days {
				var batch []*commit.Change
				at := day0.AddDate(0, 0, d).Add(time.Duration(n) * time.Hour)
				v := []byte(`{"v":1}`)
				m := &readings.Message{ID: ids.Next() + int64(n)<<40, Topic: "t", Transport: "mqtt", Payload: v, Accepted: true, ReceivedAt: at}
				batch = append(batch, &commit.Change{DeviceID: fmt.Sprintf("n%d", n), Ops: withReadings(m, []readings.Reading{{Time: at, Values: v}})})
				if err := s.Commit(ctx, batch); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	got := partitionRows(t, first)
	for d := range days {
		if n := got[partitionName(day0.AddDate(0, 0, d))]; n != 2 {
			t.Errorf("partition of day %d holds %d readings, want 2 (%v)", d, n, got)
		}
	}
	if got["readings_default"] != 0 {
		t.Errorf("default partition holds %d readings", got["readings_default"])
	}
}

// TestReadingsPartitionMigration fills the unpartitioned readings table
// of the schema before migration 00710, then migrates: every row is kept
// with its id, days near now get their partition, the rest the default,
// and new readings take ids above the old ones.
func TestReadingsPartitionMigration(t *testing.T) {
	s := openTest(t) // only for a fresh schema dropped at cleanup
	schema := s.pool.Config().ConnConfig.RuntimeParams["search_path"]
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE; CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	cc := s.pool.Config().ConnConfig.Copy()
	db := stdlib.OpenDB(*cc)
	defer db.Close()
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithDisableGlobalRegistry(true), goose.WithAllowOutofOrder(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 709); err != nil {
		t.Fatal(err)
	}
	today := day(time.Now())
	times := []time.Time{today.AddDate(0, 0, -2).Add(time.Hour), today.Add(time.Minute), time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), today.AddDate(0, 0, -2)}
	for i, at := range times {
		if _, err := db.ExecContext(ctx, `INSERT INTO readings (device_id, ts, received_at, message_id, data) VALUES ('m1', $1, $1, $2, '{"v":1}')`, at, i+1); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := Open(ctx, Options{DSN: os.Getenv(dsnEnv), Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rows := partitionRows(t, s2)
	if want := map[string]int{"readings_default": 1, partitionName(today.AddDate(0, 0, -2)): 2, partitionName(today): 1}; fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("rows per partition %v, want %v", rows, want)
	}
	page, err := s2.QueryReadings(ctx, readings.Query{DeviceID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []int64
	for _, r := range page.Readings {
		gotIDs = append(gotIDs, r.ID)
	}
	if want := []int64{2, 1, 4, 3}; !slices.Equal(gotIDs, want) {
		t.Errorf("ids newest first %v, want %v", gotIDs, want)
	}
	var next int64
	if err := s2.pool.QueryRow(ctx, `INSERT INTO readings (device_id, ts, received_at, message_id, data) VALUES ('m1', now(), now(), 9, '{}') RETURNING id`).Scan(&next); err != nil {
		t.Fatal(err)
	}
	if next != 5 {
		t.Errorf("first id after the migration %d, want 5", next)
	}
	// The partitions of the coming days were made by Open.
	for d := range partitionsAhead + 1 {
		var exists bool
		if err := s2.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, partitionName(today.AddDate(0, 0, d))).Scan(&exists); err != nil || !exists {
			t.Errorf("partition of today+%d: %v, %v", d, exists, err)
		}
	}
	// And down again keeps the rows.
	if _, err := p.DownTo(ctx, 709); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM readings`).Scan(&n); err != nil || n != 5 {
		t.Errorf("after down: %d readings, %v; want 5", n, err)
	}
}

// TestReadingWindows reads readings around now, spread over every window
// QueryReadings reads one after the other (and beyond, and in the
// future): pages and ranges come out whole and newest first.
func TestReadingWindows(t *testing.T) {
	s := openTest(t)
	provisionDevices(t, s, "sensor", "w1")
	now := time.Now().UTC().Truncate(time.Microsecond)
	var times []time.Time
	for _, d := range []time.Duration{400 * 24, 1, 0, -2, -23, -25, -3 * 24, -8*24 - 1, -30 * 24, -64*24 - 1, -100 * 24, -400 * 24} {
		times = append(times, now.Add(d*time.Hour))
	}
	var ids commit.IDs
	commitReadings(t, s, &ids, "w1", times...)
	for _, tc := range []struct {
		name string
		q    readings.Query
		want []time.Time
	}{
		{"all", readings.Query{DeviceID: "w1"}, times},
		{"pages of 1", readings.Query{DeviceID: "w1", Limit: 1}, times},
		{"pages of 5", readings.Query{DeviceID: "w1", Limit: 5}, times},
		{"from", readings.Query{DeviceID: "w1", Limit: 2, From: now.Add(-50 * 24 * time.Hour)}, times[:9]},
		{"to", readings.Query{DeviceID: "w1", Limit: 3, To: now}, times[3:]},
		{"range", readings.Query{DeviceID: "w1", Limit: 3, From: now.Add(-65 * 24 * time.Hour), To: now.Add(-time.Hour)}, times[3:10]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := allTimes(t, s, tc.q); !slices.EqualFunc(got, tc.want, time.Time.Equal) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// TestDropReadingsUnderLoad drops expired partitions while a transaction
// holds readings open (ingest in progress): the drop waits at most its
// lock timeout at a time, so other commits go on; a drop whose connection
// is killed while it waits changes nothing; once the transaction ends the
// drop goes through and the newer readings are intact.
func TestDropReadingsUnderLoad(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	provisionDevices(t, s, "sensor", "u1")
	if err := s.EnsurePartitions(ctx, day0, day0.AddDate(0, 0, 2)); err != nil {
		t.Fatal(err)
	}
	var ids commit.IDs
	commitReadings(t, s, &ids, "u1", day0.Add(time.Hour), day0.AddDate(0, 0, 1).Add(time.Hour), day0.AddDate(0, 0, 2).Add(time.Hour))

	// An open transaction that wrote a reading: ingest in progress.
	open, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Rollback(ctx)
	if _, err := open.Exec(ctx, `INSERT INTO readings (device_id, ts, received_at, message_id, data) VALUES ('u1', $1, $1, 0, '{}')`, day0.AddDate(0, 0, 2).Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}

	// A drop that waits for its lock is killed, as in a crash.
	dropped := make(chan error, 1)
	go func() {
		_, err := s.DropReadings(ctx, day0.AddDate(0, 0, 1), 0)
		dropped <- err
	}()
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for pid == 0 {
		err := s.pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query = $1`, `DROP TABLE "`+partitionName(day0)+`"`).Scan(&pid)
		if err != nil && !errNoRows(err) {
			t.Fatal(err)
		}
		if pid != 0 {
			break // kill it within its lock timeout
		}
		// Meanwhile commits go on: each waits at most a lock timeout
		// behind the drop's request.
		start := time.Now()
		commitReadings(t, s, &ids, "u1", day0.AddDate(0, 0, 2).Add(time.Duration(time.Now().UnixNano()%3600e9)))
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("a commit took %v during the drop", d)
		}
		if time.Now().After(deadline) {
			t.Fatal("the drop never waited for its lock")
		}
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	// The drop fails (killed, or when the kill came between two tries,
	// out of tries) and changed nothing.
	if err := <-dropped; err == nil {
		t.Fatal("DropReadings of a killed connection succeeded")
	} else {
		t.Logf("killed drop: %v", err)
	}
	if got := partitionRows(t, s); got[partitionName(day0)] != 1 {
		t.Errorf("after the killed drop: rows per partition %v", got)
	}

	if err := open.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := s.DropReadings(ctx, day0.AddDate(0, 0, 1), 0)
	if err != nil || n != 1 {
		t.Fatalf("DropReadings = %d, %v; want 1", n, err)
	}
	got := partitionRows(t, s)
	if _, ok := got[partitionName(day0)]; ok {
		t.Errorf("partition of day 0 still there: %v", got)
	}
	if got[partitionName(day0.AddDate(0, 0, 1))] != 1 {
		t.Errorf("day 1 lost readings: %v", got)
	}
}
