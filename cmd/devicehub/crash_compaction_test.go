package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"database/sql"

	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/readbatch"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

// oldRows counts the readings older than an hour that are not in blocks
// yet (rows of the readings table or of reading_batches) in the SQLite
// database at path.
func oldRows(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cut := time.Now().Add(-time.Hour).UnixMicro()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM readings WHERE ts < ?`, cut).Scan(&n); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT data FROM reading_batches`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		err := readbatch.Each(data, func(r *readbatch.Record, _ int) error {
			if r.Time < cut {
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

var compactedRE = regexp.MustCompile(`devicehub_compaction_readings_total (\d+)`)

// compactedReadings reads the hub's count of readings moved into blocks.
func compactedReadings(hub *child) int {
	resp, err := http.Get("http://" + hub.http + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := compactedRE.FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestKill9DuringCompaction kills the hub with SIGKILL while its
// compactor moves two-hour-old readings into blocks (transactions of
// 20 readings) and devices publish at full rate, restarts it,
// and checks that every prefilled and every acknowledged reading is
// stored exactly once, the prefilled ones all compacted in the end.
func TestKill9DuringCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	hub, dir, cfgPath, token := startCrashHub(t, "retention: {compact_after: 1h, compact_interval: 1s, batch: 20}\n")
	const devices, prefilled = 20, 2000
	passwords := provisionDevices(t, hub, token, devices)
	prefillOld(t, hub, passwords, prefilled)

	started := make(chan struct{})
	go func() {
		defer close(started)
		for compactedReadings(hub) == 0 {
			select {
			case <-hub.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	acked, total := loadUntilKilled(t, hub, passwords, started, 2000)
	dbPath := filepath.Join(dir, "devicehub.db")
	t.Logf("acknowledged before SIGKILL: %d messages; old readings still rows: %d of %d", total, oldRows(t, dbPath), devices*prefilled)

	hub = startChild(t, cfgPath)
	eventually.True(t, 120*time.Second, "old readings compacted after the restart", func() bool {
		return oldRows(t, dbPath) == 0
	})
	hub.stop(t)
	// The prefilled messages carry no msg_id: prefilled readings each.
	checkAcked(t, dbPath, acked, prefilled)
}

// messageBlocks counts the message log's per-device blocks in the SQLite
// database at path (read by a connection of its own, beside the hub's).
func messageBlocks(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM message_blocks`).Scan(&n); err != nil {
		return 0 // not migrated yet
	}
	return n
}

// readingBlocks counts the readings' blocks in the SQLite database at
// path (read by a connection of its own, beside the hub's).
func readingBlocks(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM reading_blocks`).Scan(&n); err != nil {
		return 0 // not migrated yet
	}
	return n
}

// TestKill9DuringReadingsCompaction kills the hub with SIGKILL while the
// readings head moves batch rows into blocks again and again (a head of
// 200 readings) and devices publish at full rate, restarts it twice (the
// head is rebuilt from the batch rows each time), and checks that every
// acknowledged reading is stored exactly once: counted, and listed page
// by page across the head and the blocks without a repeat.
func TestKill9DuringReadingsCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	hub, dir, cfgPath, token := startCrashHub(t, "storage: {sqlite: {readings_head: {max_readings: 200}}}\n")
	dbPath := filepath.Join(dir, "devicehub.db")
	passwords := provisionDevices(t, hub, token, 20)
	started := make(chan struct{})
	go func() {
		defer close(started)
		for readingBlocks(t, dbPath) < 20 {
			select {
			case <-hub.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	acked, total := loadUntilKilled(t, hub, passwords, started, 2000)
	t.Logf("acknowledged before SIGKILL: %d messages; reading blocks: %d", total, readingBlocks(t, dbPath))
	hub = startChild(t, cfgPath)
	again, total2 := loadUntilKilled(t, hub, passwords, nil, 2000)
	t.Logf("second run: acknowledged %d messages; reading blocks: %d", total2, readingBlocks(t, dbPath))
	for id, ids := range again {
		acked[id] = uniq(append(acked[id], ids...))
	}
	hub = startChild(t, cfgPath)
	hub.stop(t)
	checkAcked(t, dbPath, acked, 0)
	checkListed(t, dbPath, len(acked))
}

// TestKill9DuringMessageCompaction kills the hub with SIGKILL while the
// message log moves batch rows into per-device blocks again and again (a
// head of 200 messages) and devices publish at full rate, restarts it
// twice (the head is rebuilt from the batch rows each time), and checks
// that every acknowledged message is stored exactly once, its msg_id
// still recognised.
func TestKill9DuringMessageCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	hub, dir, cfgPath, token := startCrashHub(t, "storage: {sqlite: {message_log: {head_messages: 200}}}\n")
	dbPath := filepath.Join(dir, "devicehub.db")
	passwords := provisionDevices(t, hub, token, 20)
	started := make(chan struct{})
	go func() {
		defer close(started)
		for messageBlocks(t, dbPath) < 20 {
			select {
			case <-hub.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	acked, total := loadUntilKilled(t, hub, passwords, started, 2000)
	t.Logf("acknowledged before SIGKILL: %d messages; message blocks: %d", total, messageBlocks(t, dbPath))

	// The second run: its devices resend what they sent last (a
	// duplicate), then it is killed under load again.
	hub = startChild(t, cfgPath)
	again, total2 := loadUntilKilled(t, hub, passwords, nil, 2000)
	t.Logf("second run: acknowledged %d messages", total2)
	for id, ids := range again {
		// loadUntilKilled numbers msg_ids from 0 again: the first run's
		// acknowledged ones were duplicates, stored once.
		acked[id] = uniq(append(acked[id], ids...))
	}
	hub = startChild(t, cfgPath)
	hub.stop(t)
	checkAcked(t, dbPath, acked, 0)
}

// uniq returns xs without repeats, in first-seen order.
func uniq(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// checkListed pages through the readings of devices d00… (devices of
// them) in the store at path and checks that no reading is listed twice
// and that the pages hold as many as CountReadings counts.
func checkListed(t *testing.T, path string, devices int) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range devices {
		id := fmt.Sprintf("d%02d", i)
		seen := map[int64]bool{}
		q := readings.Query{DeviceID: id, Limit: 300}
		for {
			p, err := st.QueryReadings(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Readings {
				if seen[r.ID] {
					t.Fatalf("%s: reading %d listed twice", id, r.ID)
				}
				seen[r.ID] = true
			}
			if p.Next == "" {
				break
			}
			q.Cursor = p.Next
		}
		n, err := st.CountReadings(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(seen)) != n {
			t.Errorf("%s: %d readings listed, %d counted", id, len(seen), n)
		}
	}
}
