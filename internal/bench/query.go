package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/alerts"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/retention"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

// querySpan is how far back the generated readings of the query scenario
// reach: every device reports at a fixed interval over the last 10 days,
// so that "one day" is a tenth of a device's readings at any size.
const querySpan = 10 * 24 * time.Hour

// queryBatch is the number of changes per commit while generating (the
// hub's commit.max_batch).
const queryBatch = 2000

// The bench's compaction of the generated readings: runs of
// benchCompactDevices consecutive devices, up to benchCompactBatch
// readings, a transaction. It runs alone (the hub's compactor keeps its
// transactions as short as a group commit, beside ingest).
const (
	benchCompactDevices = 64
	benchCompactBatch   = 65536
)

// burstNote describes the generation's order.
func burstNote(burst int) string {
	if burst <= 1 {
		return "time-major order (every device's k-th reading before any device's k+1-th), as devices reporting live one reading at a time write them (--query-burst 1)"
	}
	return fmt.Sprintf("stored in bursts (--query-burst %d): each device's next %d readings one after another, device after device, %d devices a commit, then the next burst, as devices that upload what they buffered write them; the same readings (times, values, msg_ids) as in time-major order, only their ids (the message log's and the event log's order) follow the bursts. Time-major order (--query-burst 1, as devices reporting live one reading at a time) writes each reading into its own leaf of each per-device index once those outgrow a commit, about 4 pages a reading", burst, burst, max(1, queryBatch/burst))
}

// query stores many readings in a fresh data directory through the
// store's commit path, starts `devicehub serve` on it and times the read
// queries over the REST API.
func (r *runner) query(ctx context.Context) error {
	n, total := r.o.QueryDevices, r.o.QueryReadings
	per := max(1, total/n)
	total = per * n
	interval := querySpan / time.Duration(per)
	sc := &Scenario{
		Name:  fmt.Sprintf("query_%d", total),
		Title: fmt.Sprintf("Query: %s stored readings over %d devices", fmtNum(float64(total)), n),
		Figures: []string{
			"stored", "generate_rate", "bytes_per_reading", "db_mb",
			"compact_rate", "readings_bytes_per_value_rows", "readings_bytes_per_value", "used_bytes_per_reading_compacted",
			"newest_1000_p50_ms", "newest_1000_p99_ms", "newest_1000_rows",
			"day_field_p50_ms", "day_field_p99_ms", "day_field_rows",
			"latest_values_p50_ms", "latest_values_p99_ms", "latest_values_devices",
			"week_buckets_p50_ms", "week_buckets_p99_ms", "week_buckets_rows",
			"latest_one_p50_ms", "latest_one_p99_ms", "latest_all_s", "device_list_all_ms", "start_compaction_s",
			"provision_s", "generate_s", "compact_s", "keep_s", "hub_start_s", "rounds_s", "scenario_s",
		},
		Notes: []string{
			fmt.Sprintf("The readings are written before the hub starts, by the bench itself, through the store's commit path (sqlite.Store.Commit, %d changes per commit, synchronous=normal): each reading is the change the hub's MQTT ingest makes of one message (the message's message log record with its payload and msg_id, one reading row, the device's last_seen, a device_data_received event), so the rows and indexes are the hub's own. A reading every %s per device over the last 10 days; %s.", queryBatch, interval.Round(time.Second), burstNote(r.o.QueryBurst)),
			"generate_rate: readings/s of that generation (not the hub's ingest: no MQTT, no validation). bytes_per_reading: growth of the data directory's files (devicehub.db, -wal, -shm) over the provisioned seed, divided by the readings, after the generation (the message log record, the event and the indexes included).",
			fmt.Sprintf("Then the bench compacts, as the hub's compactor does (retention.Compactor, readings older than an hour before the newest into compressed blocks), in transactions of up to %d consecutive devices and %s readings (the hub's: 16 devices and retention.batch readings): compact_rate: readings/s moved. readings_bytes_per_value_rows and readings_bytes_per_value: the pages of the readings (rows, blocks and their indexes, from SQLite's dbstat) per numeric field value (4 a reading) before and after; used_bytes_per_reading_compacted: the database's pages in use (the file less its free pages, which later writes reuse) per reading after compaction, with the message log records and events, whose retention is their own.", benchCompactDevices, fmtNum(benchCompactBatch)),
			"Before the hub starts, the bench moves the cursors of the hub's durable event observers (alert evaluation, configuration) to the end of the event log through the commit path, as they stand in a hub that stored the readings live (they follow every event as it is committed); otherwise the hub's start reads every generated event back while the queries are timed.",
			"Then `devicehub serve` runs on the directory. Its compactor starts with a pass over every device (merging the readings that came due since, as time went on, into their newest blocks); start_compaction_s: how long after the hub was serving that pass ended (the bench waits for it, reading the hub's metrics, so that the queries are not timed beside it).",
			fmt.Sprintf("Then the bench times, one request at a time over one keep-alive HTTP connection, %d queries of each kind per round on devices picked at random: newest_1000: GET /api/v1/devices/{id}/readings?limit=1000 (newest first); day_field: ?field=temperature&from=…&to=… over the newest full day (limit 10000); rows: the median number of readings answered.", r.o.Queries),
			fmt.Sprintf("latest_values: GET /api/v1/readings/latest, the newest value of every field of all %d devices in one request (%d requests per round; devices: how many it answered). week_buckets: GET /api/v1/devices/{id}/readings/aggregate?field=temperature over the newest 7 days in 500 buckets (count, min, max, avg, last; rows: the median number of non-empty buckets).", n, r.o.Queries),
			"Phases, in seconds of wall time: provision_s (provisioning the devices through a hub, then stopped), generate_s, compact_s (the bench's compaction), hub_start_s (from starting `devicehub serve` on the directory until it serves HTTP, then its first compaction pass: start_compaction_s), rounds_s (every query round), scenario_s (the whole scenario, from before provisioning to the last round, keep_s included: copying a generated directory into --query-keep's; with --query-keep reusing a directory, the generation's phases are those of the run that kept it and scenario_s this run's).",
			fmt.Sprintf("For comparison with the time before latest_values existed: latest_one: GET …/readings?limit=1 of one device (p50/p99 over every request of the sweep); latest_all_s: one sweep of all %d devices that way, 4 requests in flight; device_list_all_ms: listing all devices, 1,000 per page (no reading values).", n),
		},
	}
	if total < 10_000_000 {
		sc.Notes = append(sc.Notes, fmt.Sprintf("The issue's size is 10,000,000 readings; this run stored %s (--query-readings sets it).", fmtNum(float64(total))))
	}
	r.res.Scenarios = append(r.res.Scenarios, sc)

	dir, err := os.MkdirTemp(r.work, "query-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	scStart := time.Now()
	gen := Measurement{System: SysDevicehub, Round: 1, Started: time.Now(), Figures: map[string]float64{}}
	kept, err := reuseQueryData(r.o.QueryKeep, dir, n, total)
	if err != nil {
		return err
	}
	var devs []Device
	var end time.Time
	if kept != nil {
		devs, end = kept.Devices, kept.End
		maps.Copy(gen.Figures, kept.Figures)
		sc.Notes = append(sc.Notes, fmt.Sprintf("This run reused the data directory kept in %s (--query-keep), generated and compacted at %s by %s with --query-burst %d; the generation and compaction figures are that run's.",
			r.o.QueryKeep, kept.Generated.UTC().Format(time.RFC3339), kept.Version, max(1, kept.Burst)))
		r.logf("%s: reusing the readings kept in %s", sc.Name, r.o.QueryKeep)
	} else {
		if devs, end, err = r.generateQueryData(ctx, sc, dir, n, per, interval, gen.Figures); err != nil {
			gen.Error = err.Error()
			r.record(sc, gen)
			sc.Finish()
			return err
		}
		if r.o.QueryKeep != "" {
			tKeep := time.Now()
			if err := keepQueryData(r.o.QueryKeep, dir, &queryKept{Devices: devs, End: end, Generated: time.Now(), Version: buildRevision(), Figures: gen.Figures, Burst: r.o.QueryBurst}); err != nil {
				return err
			}
			gen.Figures["keep_s"] = time.Since(tKeep).Seconds()
			r.logf("%s: kept the data directory in %s in %.1fs", sc.Name, r.o.QueryKeep, gen.Figures["keep_s"])
		}
	}

	if err := followedLive(ctx, filepath.Join(dir, "devicehub.db")); err != nil {
		return err
	}
	if _, err := writeDevicehubConfig(dir, time.Minute); err != nil {
		return err
	}
	prof := ""
	if r.o.QueryProfile {
		prof = filepath.Join(r.o.OutDir, "devicehub-query.cpu.pprof")
		sc.Notes = append(sc.Notes, "The hub ran under a CPU profile over the query rounds (--query-profile): devicehub-query.cpu.pprof.")
	}
	tStart := time.Now()
	s, err := r.startDevicehub(ctx, dir, profiling{cpu: prof})
	if err != nil {
		gen.Error = err.Error()
		r.record(sc, gen)
		sc.Finish()
		return err
	}
	gen.Figures["hub_start_s"] = time.Since(tStart).Seconds()
	r.logf("%s: the hub serves after %.1fs", sc.Name, gen.Figures["hub_start_s"])
	s.dir = "" // removed with dir
	defer func() { _ = s.p.stop(60 * time.Second) }()
	// The hub's compactor starts with a pass over every device; the
	// readings that came due since the bench compacted (those of the last
	// hour before the generation's end, as time went on) are merged into
	// their devices' newest blocks. The queries are timed after it, not
	// beside it.
	t0 := time.Now()
	if err := waitCompactionPass(ctx, s.http, 15*time.Minute); err != nil {
		gen.Error = err.Error()
		r.record(sc, gen)
		sc.Finish()
		return err
	}
	gen.Figures["start_compaction_s"] = time.Since(t0).Seconds()
	r.logf("%s: the hub's first compaction pass took %.1fs", sc.Name, gen.Figures["start_compaction_s"])
	q := &querier{base: "http://" + s.http, token: s.token, client: &http.Client{Timeout: time.Minute}, start: time.Now()}
	if f, err := os.Create(filepath.Join(r.o.OutDir, "devicehub-query.timings.tsv")); err == nil {
		defer f.Close()
		q.timings = bufio.NewWriter(f)
		defer q.timings.Flush()
		fmt.Fprintf(q.timings, "round\tkind\tn\tat_s\tms\trows\n")
	}
	rng := rand.New(rand.NewPCG(1, uint64(total)))
	tRounds := time.Now()
	for round := 1; round <= r.o.Rounds; round++ {
		run := Measurement{System: SysDevicehub, Round: round, Started: time.Now(), Figures: map[string]float64{}}
		if round == 1 {
			run = gen
		}
		err := q.round(ctx, &run, rng, devs, end, r.o.Queries)
		run.Seconds = time.Since(run.Started).Seconds()
		if err != nil {
			run.Error = err.Error()
		}
		if round == r.o.Rounds || err != nil {
			// Round 1's figures hold the phases (rounds share the map
			// only with themselves).
			gen.Figures["rounds_s"] = time.Since(tRounds).Seconds()
			gen.Figures["scenario_s"] = time.Since(scStart).Seconds()
			r.logf("%s: %d rounds took %.1fs; the scenario %.1fs", sc.Name, round, gen.Figures["rounds_s"], gen.Figures["scenario_s"])
		}
		r.record(sc, run)
		r.logf("%s round %d: %s %s", sc.Name, round, compactQuery(run.Figures), run.Error)
		if ctx.Err() != nil {
			sc.Finish()
			return ctx.Err()
		}
	}
	sc.Finish()
	return nil
}

// followedLive moves the cursors of the hub's durable event observers (the
// alert evaluator's and the configuration observer's) to the end of the
// event log, through the commit path, as those observers write them: in a
// hub that stored the readings live they followed every event as it was
// committed. The bench stored them with no hub running, so without this the
// hub's start would read every generated event back (10,000,000
// device_data_received at the size: minutes of a core) while the
// queries are timed.
func followedLive(ctx context.Context, path string) error {
	st, err := sqlite.Open(ctx, sqlite.Options{Path: path, Synchronous: "normal"})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	last, err := st.LastSeq(ctx)
	if err != nil {
		return err
	}
	ch := &commit.Change{Ops: []commit.Op{&alerts.CursorOp{Seq: last}, &deviceconfig.Op{ObserverCursor: last}}}
	if err := st.Commit(ctx, []*commit.Change{ch}); err != nil {
		return fmt.Errorf("observer cursors: %w", err)
	}
	if ch.Err != nil {
		return fmt.Errorf("observer cursors: %w", ch.Err)
	}
	return st.Close()
}

// waitCompactionPass waits until the hub at addr completed a compaction
// pass (or failed one), polling its metrics.
func waitCompactionPass(ctx context.Context, addr string, timeout time.Duration) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(timeout)
	for {
		m := metrics(ctx, addr)
		if m["devicehub_compaction_passes_total"] >= 1 {
			return nil
		}
		if m["devicehub_compaction_errors_total"] >= 1 {
			return errors.New("the hub's first compaction pass failed")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("no compaction pass of the hub within %s", timeout)
		case <-t.C:
		}
	}
}

// generateQueryData provisions n devices, stores per readings of each in
// dir through the store's commit path and compacts them, recording the
// figures of both; it returns the devices and the newest reading's time.
func (r *runner) generateQueryData(ctx context.Context, sc *Scenario, dir string, n, per int, interval time.Duration, fig map[string]float64) ([]Device, time.Time, error) {
	t0 := time.Now()
	sd, err := r.seedDevicehub(ctx, n)
	if err != nil {
		return nil, time.Time{}, err
	}
	fig["provision_s"] = time.Since(t0).Seconds()
	if err := copySeed(sd.dir, dir); err != nil {
		return nil, time.Time{}, err
	}
	total := per * n
	seedBytes := dirBytes(dir)
	end := time.Now().Truncate(time.Second)
	r.logf("%s: storing %d readings", sc.Name, total)
	t0 = time.Now()
	rate, err := generateReadings(ctx, filepath.Join(dir, "devicehub.db"), sd.devs, per, r.o.QueryBurst, end, interval, func(done int) {
		r.logf("%s: stored %d of %d readings", sc.Name, done, total)
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	fig["generate_s"] = time.Since(t0).Seconds()
	fig["stored"] = float64(total)
	fig["generate_rate"] = rate
	size := dirBytes(dir)
	fig["bytes_per_reading"] = float64(size-seedBytes) / float64(total)
	fig["db_mb"] = float64(size) / (1 << 20)
	r.logf("%s: stored at %s readings/s, %s bytes per reading", sc.Name, fmtNum(rate), fmtNum(fig["bytes_per_reading"]))
	t0 = time.Now()
	if err := compactReadings(ctx, filepath.Join(dir, "devicehub.db"), end, total, fig); err != nil {
		return nil, time.Time{}, err
	}
	fig["compact_s"] = time.Since(t0).Seconds()
	r.logf("%s: compacted at %s readings/s: %s bytes per value in rows, %s in blocks", sc.Name, fmtNum(fig["compact_rate"]),
		fmtNum(fig["readings_bytes_per_value_rows"]), fmtNum(fig["readings_bytes_per_value"]))
	return sd.devs, end, nil
}

// queryKept describes a generated and compacted query data directory kept
// by --query-keep, in its file queryKeptFile.
type queryKept struct {
	Devices   []Device           `json:"devices"`
	End       time.Time          `json:"end"`             // the newest reading's time
	Generated time.Time          `json:"generated"`       // when it was kept
	Version   string             `json:"version"`         // the devicehub that generated it
	Figures   map[string]float64 `json:"figures"`         // generation and compaction
	Burst     int                `json:"burst,omitempty"` // --query-burst of the generation (0: before the option, time-major)
}

// queryKeptFile is written last when a data directory is kept, so that a
// directory whose copy did not finish is not reused.
const queryKeptFile = "query-kept.json"

// dataFiles are the files of a hub's data directory that a run copies
// from a seed or keeps: without the registration secret the hub would
// say its stored registration keys are lost.
var dataFiles = []string{"devicehub.db", "devicehub.db-wal", "admin.token", provisioning.KeySecretFile}

// reuseQueryData copies the data directory kept in keep into dir if keep
// holds one of n devices and total readings; it returns nil if there is
// none to reuse.
func reuseQueryData(keep, dir string, n, total int) (*queryKept, error) {
	if keep == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(keep, queryKeptFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("query keep: %w", err)
	}
	var k queryKept
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("query keep %s: %w", keep, err)
	}
	if len(k.Devices) != n || int(k.Figures["stored"]) != total {
		return nil, fmt.Errorf("query keep %s: holds %d readings of %d devices, not %d of %d (remove it or choose another directory)",
			keep, int(k.Figures["stored"]), len(k.Devices), total, n)
	}
	if err := copyFiles(keep, dir, dataFiles); err != nil {
		return nil, fmt.Errorf("query keep: %w", err)
	}
	return &k, nil
}

// keepQueryData copies the data directory dir into keep with its
// description k.
func keepQueryData(keep, dir string, k *queryKept) error {
	if err := os.MkdirAll(keep, 0o700); err != nil {
		return fmt.Errorf("query keep: %w", err)
	}
	_ = os.Remove(filepath.Join(keep, queryKeptFile))
	if err := copyFiles(dir, keep, dataFiles); err != nil {
		return fmt.Errorf("query keep: %w", err)
	}
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(keep, queryKeptFile), b, 0o600); err != nil {
		return fmt.Errorf("query keep: %w", err)
	}
	return nil
}

// copyFiles copies the named files that exist in from into to, streaming
// (a kept database is gigabytes), and removes those that do not exist.
func copyFiles(from, to string, names []string) error {
	for _, name := range names {
		if err := copyFile(filepath.Join(from, name), filepath.Join(to, name)); errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove(filepath.Join(to, name))
		} else if err != nil {
			return err
		}
	}
	return nil
}

// buildRevision names the commit this binary was built from.
func buildRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", ""
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = " (modified)"
		}
	}
	return rev + dirty
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("copy %s: %w", from, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", from, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return nil
}

func compactQuery(f map[string]float64) string {
	var parts []string
	for _, k := range []string{"newest_1000_p99_ms", "day_field_p99_ms", "latest_values_p99_ms", "week_buckets_p99_ms", "latest_all_s"} {
		if v, ok := f[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%s", k, fmtNum(v)))
		}
	}
	return strings.Join(parts, " ")
}

// copySeed copies a provisioned data directory's database and token.
func copySeed(from, to string) error {
	if err := copyFiles(from, to, dataFiles); err != nil {
		return fmt.Errorf("copy seed: %w", err)
	}
	return nil
}

// dirBytes is the size of the database files in dir.
func dirBytes(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "devicehub.db") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// generateReadings writes per readings for every device through the
// store's commit path, ending at end, in bursts of burst consecutive
// readings of a device (1: time-major), and returns readings/s.
func generateReadings(ctx context.Context, path string, devs []Device, per, burst int, end time.Time, interval time.Duration, progress func(done int)) (float64, error) {
	burst = max(1, burst)
	st, err := sqlite.Open(ctx, sqlite.Options{Path: path, Synchronous: "normal"})
	if err != nil {
		return 0, fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	// The checkpointer runs beside the writes, as in the hub; it ends
	// before the store closes.
	ckCtx, stopCk := context.WithCancel(ctx)
	ckDone := make(chan error, 1)
	go func() { ckDone <- st.Run(ckCtx) }()
	defer func() { stopCk(); <-ckDone }()
	maxID, err := st.MaxMessageID(ctx)
	if err != nil {
		return 0, err
	}
	type slot struct {
		ch   commit.Change
		ops  [3]commit.Op
		msg  readings.Message
		rds  readings.Readings
		rd   [1]readings.Reading
		seen time.Time
		dp   registry.DevicePatch
		ev   [1]commit.Event
	}
	slots := make([]slot, queryBatch)
	batch := make([]*commit.Change, 0, queryBatch)
	start := end.Add(-querySpan)
	total := per * len(devs)
	id := max(maxID, start.UnixMicro())
	t0 := time.Now()
	nextLog := t0.Add(30 * time.Second)
	var buf []byte
	done := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := st.Commit(ctx, batch); err != nil {
			return err
		}
		for _, ch := range batch {
			if ch.Err != nil || ch.Duplicate {
				return fmt.Errorf("store %s: duplicate %v: %v", ch.DeviceID, ch.Duplicate, ch.Err)
			}
		}
		done += len(batch)
		batch = batch[:0]
		if progress != nil && time.Now().After(nextLog) {
			progress(done)
			nextLog = time.Now().Add(30 * time.Second)
		}
		return ctx.Err()
	}
	// add stores device d's k-th reading as the next change of the batch.
	add := func(k, d int) error {
		dev := devs[d].ID
		ts := start.Add(time.Duration(k)*interval + interval*time.Duration(d)/time.Duration(len(devs))).UTC()
		recv := ts.Add(50 * time.Millisecond)
		id++
		msgID := fmt.Sprintf("%s-%d", dev, k)
		buf = payload(buf, k, msgID)
		pl := append([]byte(nil), buf...)
		values := pl[:strings.LastIndex(string(pl), `,"msg_id"`)]
		values = append(values[:len(values):len(values)], '}')
		topic := "devices/" + dev + "/data"
		var vm map[string]any
		if err := json.Unmarshal(values, &vm); err != nil {
			return fmt.Errorf("values: %w", err)
		}
		args, err := json.Marshal(events.DataReceived{MessageID: id, MsgID: msgID, Topic: topic, Transport: "mqtt",
			Readings: []events.Reading{{Time: ts, Values: vm}}})
		if err != nil {
			return err
		}
		s := &slots[len(batch)]
		s.msg = readings.Message{ID: id, Topic: topic, Transport: "mqtt", QoS: 1, Payload: pl, MsgID: msgID, Accepted: true, ReceivedAt: recv}
		s.rd[0] = readings.Reading{Time: ts, Values: values}
		s.seen = recv
		s.dp = registry.DevicePatch{LastSeen: &s.seen}
		s.ev[0] = commit.Event{Event: events.Event{Type: events.DeviceDataReceived, Time: recv, DeviceID: dev, DeviceType: "BenchSensor"}, Args: args}
		s.rds = readings.Readings{Message: &s.msg, Rows: s.rd[:]}
		s.ops = [3]commit.Op{&s.msg, &s.rds, &s.dp}
		s.ch = commit.Change{DeviceID: dev, Ops: s.ops[:], Events: s.ev[:]}
		batch = append(batch, &s.ch)
		if len(batch) == queryBatch {
			return flush()
		}
		return nil
	}
	// Bursts: each device's readings k0..k0+burst-1 one after another,
	// device after device, then the next burst.
	for k0 := 0; k0 < per; k0 += burst {
		for d := range devs {
			for k := k0; k < min(k0+burst, per); k++ {
				if err := add(k, d); err != nil {
					return 0, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	rate := float64(total) / time.Since(t0).Seconds()
	if err := st.Close(); err != nil {
		return 0, fmt.Errorf("close store: %w", err)
	}
	return rate, nil
}

// compactReadings runs a compaction pass over the generated readings (what
// the hub's compactor does an hour after they arrive) and records its
// rate and the readings' bytes before and after.
func compactReadings(ctx context.Context, path string, end time.Time, total int, fig map[string]float64) error {
	st, err := sqlite.Open(ctx, sqlite.Options{Path: path, Synchronous: "normal"})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	values := float64(total) * 4 // the bench payload's numeric fields
	_, rows, err := st.ReadingsSpace(ctx)
	if err != nil {
		return err
	}
	fig["readings_bytes_per_value_rows"] = float64(rows) / values
	c := retention.NewCompactor(st, retention.CompactOptions{Now: func() time.Time { return end }, Devices: benchCompactDevices, Batch: benchCompactBatch},
		slog.New(slog.DiscardHandler), nil)
	t0 := time.Now()
	n, err := c.Pass(ctx)
	if err != nil {
		return err
	}
	fig["compact_rate"] = float64(n) / time.Since(t0).Seconds()
	used, blocks, err := st.ReadingsSpace(ctx)
	if err != nil {
		return err
	}
	fig["readings_bytes_per_value"] = float64(blocks) / values
	fig["used_bytes_per_reading_compacted"] = float64(used) / float64(total)
	return st.Close()
}

// querier times the read queries of the REST API.
type querier struct {
	base, token string
	client      *http.Client
	start       time.Time     // the hub's start
	timings     *bufio.Writer // every timed query, if not nil
}

// get fetches path and returns its duration and the number of readings
// (or devices) answered.
func (q *querier) get(ctx context.Context, path string, list string) (time.Duration, int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.base+path, nil)
	if err != nil {
		return 0, 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+q.token)
	t0 := time.Now()
	resp, err := q.client.Do(req)
	if err != nil {
		return 0, 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, "", fmt.Errorf("GET %s: status %d: %.200s", path, resp.StatusCode, b)
	}
	var page map[string]json.RawMessage
	if err := json.Unmarshal(b, &page); err != nil {
		return 0, 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	var items []json.RawMessage
	_ = json.Unmarshal(page[list], &items)
	var next string
	_ = json.Unmarshal(page["next"], &next)
	return d, len(items), next, nil
}

// round runs one round of every query kind.
func (q *querier) round(ctx context.Context, run *Measurement, rng *rand.Rand, devs []Device, end time.Time, queries int) error {
	f := run.Figures
	pick := func() string { return url.PathEscape(devs[rng.IntN(len(devs))].ID) }
	kinds := []struct {
		name, rows string // figure prefix, the list the answer counts
		path       func() string
	}{
		{"newest_1000", "_rows", func() string { return "/api/v1/devices/" + pick() + "/readings?limit=1000" }},
		{"day_field", "_rows", func() string {
			return fmt.Sprintf("/api/v1/devices/%s/readings?field=temperature&from=%d&to=%d&limit=10000",
				pick(), end.Add(-24*time.Hour).UnixMilli(), end.UnixMilli())
		}},
		{"latest_values", "_devices", func() string { return "/api/v1/readings/latest" }},
		{"week_buckets", "_rows", func() string {
			return fmt.Sprintf("/api/v1/devices/%s/readings/aggregate?field=temperature&from=%d&to=%d&buckets=500",
				pick(), end.Add(-7*24*time.Hour).UnixMilli(), end.UnixMilli())
		}},
	}
	lists := map[string]string{"newest_1000": "readings", "day_field": "readings", "latest_values": "devices", "week_buckets": "buckets"}
	for _, k := range kinds {
		var ds []time.Duration
		var rows []float64
		for i := range queries {
			d, n, _, err := q.get(ctx, k.path(), lists[k.name])
			if err != nil {
				return err
			}
			if q.timings != nil {
				fmt.Fprintf(q.timings, "%d\t%s\t%d\t%.3f\t%.3f\t%d\n", run.Round, k.name, i, time.Since(q.start).Seconds(), float64(d.Microseconds())/1000, n)
			}
			ds = append(ds, d)
			rows = append(rows, float64(n))
		}
		l := LatencyOf(ds)
		f[k.name+"_p50_ms"], f[k.name+"_p99_ms"], f[k.name+k.rows] = l.P50, l.P99, Median(rows)
	}

	// One sweep of the newest reading of every device, 4 in flight.
	const inflight = 4
	ds := make([]time.Duration, len(devs))
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	work := make(chan int)
	t0 := time.Now()
	for range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				d, n, _, err := q.get(ctx, "/api/v1/devices/"+url.PathEscape(devs[i].ID)+"/readings?limit=1", "readings")
				if err == nil && n != 1 {
					err = fmt.Errorf("latest reading of %s: %d readings", devs[i].ID, n)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				ds[i] = d
			}
		}()
	}
	for i := range devs {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	f["latest_all_s"] = time.Since(t0).Seconds()
	l := LatencyOf(ds)
	f["latest_one_p50_ms"], f["latest_one_p99_ms"] = l.P50, l.P99

	// Listing every device, 1,000 per page.
	t0 = time.Now()
	after, listed := "", 0
	for range len(devs)/1000 + 2 {
		_, n, next, err := q.get(ctx, "/api/v1/devices?limit=1000&after="+url.QueryEscape(after), "devices")
		if err != nil {
			return err
		}
		listed += n
		if next == "" {
			break
		}
		after = next
	}
	f["device_list_all_ms"] = float64(time.Since(t0).Microseconds()) / 1000
	if listed != len(devs) {
		return fmt.Errorf("listed %d of %d devices", listed, len(devs))
	}
	return nil
}
