package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// readingsLayout is one candidate table layout for readings, measured by
// BenchmarkReadingsLayout.
type readingsLayout struct {
	name  string
	ddl   string
	cols  string // insert column list
	byKey bool   // rows carry an integer device key instead of the text id
	newID bool   // the id is assigned by the writer (WITHOUT ROWID)
	query string // newest 100 of one device
}

var readingsLayouts = []readingsLayout{
	{
		name:  "noindex",
		ddl:   `CREATE TABLE readings (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, received_at INTEGER NOT NULL, message_id INTEGER NOT NULL, data TEXT NOT NULL)`,
		cols:  "device_id, stream, ts, received_at, message_id, data",
		query: `SELECT id, data FROM readings WHERE device_id = ? ORDER BY ts DESC, id DESC LIMIT 100`,
	},
	{
		name: "index_text_device_ts",
		ddl: `CREATE TABLE readings (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, received_at INTEGER NOT NULL, message_id INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX readings_device_ts ON readings(device_id, ts)`,
		cols:  "device_id, stream, ts, received_at, message_id, data",
		query: `SELECT id, data FROM readings WHERE device_id = ? ORDER BY ts DESC, id DESC LIMIT 100`,
	},
	{
		name: "index_intkey_ts",
		ddl: `CREATE TABLE readings (id INTEGER PRIMARY KEY, dev INTEGER NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, received_at INTEGER NOT NULL, message_id INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX readings_dev_ts ON readings(dev, ts)`,
		cols:  "dev, stream, ts, received_at, message_id, data",
		byKey: true,
		query: `SELECT id, data FROM readings WHERE dev = ? ORDER BY ts DESC, id DESC LIMIT 100`,
	},
	{
		name:  "clustered_intkey_ts_id",
		ddl:   `CREATE TABLE readings (dev INTEGER NOT NULL, ts INTEGER NOT NULL, id INTEGER NOT NULL, stream TEXT NOT NULL, received_at INTEGER NOT NULL, message_id INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (dev, ts, id)) WITHOUT ROWID`,
		cols:  "dev, stream, ts, received_at, message_id, data, id",
		byKey: true,
		newID: true,
		query: `SELECT id, data FROM readings WHERE dev = ? ORDER BY ts DESC, id DESC LIMIT 100`,
	},
}

// BenchmarkReadingsLayout measures the ingest cost of each candidate readings
// layout alone: batches of 1000 rows from 100 devices (sorted by device),
// one transaction per batch, synchronous=full, multi-row INSERTs of 250
// rows. It logs the plan of a device's newest-100 query. Numbers: see
// bench_test.go.
func BenchmarkReadingsLayout(b *testing.B) {
	for _, l := range readingsLayouts {
		b.Run(l.name, func(b *testing.B) {
			ctx := context.Background()
			dsn := "file:" + filepath.Join(b.TempDir(), "l.db") + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_txlock=immediate"
			db, err := sql.Open("sqlite", dsn)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			for _, s := range strings.Split(l.ddl, ";") {
				if _, err := db.ExecContext(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
			ncols := len(strings.Split(l.cols, ","))
			const chunk, batch, devices = 250, 1000, 100
			row := "(" + strings.TrimSuffix(strings.Repeat("?,", ncols), ",") + ")"
			q := "INSERT INTO readings (" + l.cols + ") VALUES " + strings.TrimSuffix(strings.Repeat(row+",", chunk), ",")
			stmt, err := db.PrepareContext(ctx, q)
			if err != nil {
				b.Fatal(err)
			}
			defer stmt.Close()
			data := `{"temperature":21.5,"humidity":40.25,"battery":87}`
			var id, ts int64
			args := make([]any, 0, chunk*ncols)
			b.ResetTimer()
			for range b.N {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				st := tx.StmtContext(ctx, stmt)
				for c := 0; c < batch/chunk; c++ {
					args = args[:0]
					for r := range chunk {
						id++
						ts++
						// Sorted by device, as Commit sorts a batch's readings.
						d := (c*chunk + r) / (batch / devices)
						var dev any = fmt.Sprintf("device-%04d", d)
						if l.byKey {
							dev = int64(d + 1)
						}
						args = append(args, dev, "", ts*1000, ts*1000, id, data)
						if l.newID {
							args = append(args, id)
						}
					}
					if _, err := st.ExecContext(ctx, args...); err != nil {
						b.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
			var dev any = "device-0042"
			if l.byKey {
				dev = int64(43)
			}
			var plan strings.Builder
			rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+l.query, dev)
			if err != nil {
				b.Fatal(err)
			}
			for rows.Next() {
				var a, p, n int
				var detail string
				if err := rows.Scan(&a, &p, &n, &detail); err != nil {
					b.Fatal(err)
				}
				plan.WriteString(detail + "; ")
			}
			rows.Close()
			b.Logf("%s rows=%d plan: %s", l.name, id, plan.String())
		})
	}
}
