package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/devicehub/devicehub/internal/readings"
)

// The latest values of every device are also kept in memory, as an
// immutable snapshot ordered by device id (latestSnap): GET
// /api/v1/readings/latest is then a walk of memory, not a join of
// devices and latest_fields for every device of the fleet (16 ms for
// 10,000 devices on a small database, 41 ms at the p50 and 160–251 ms at
// the p99 in the bench at 10,000,000 readings).
//
// Only Commit writes latest_fields and devices' ids and types, under wmu,
// so the snapshot is kept exact there: a Commit that succeeded publishes
// a new snapshot (copy-on-write: the chunks it touched are copied, the
// others shared), readers load it with one atomic load and never wait for
// the writer. Open builds it from latest_fields; a Commit that failed
// drops it (whether its COMMIT left anything is not known) and the next
// Commit builds it again. Without a snapshot, LatestValues reads the
// tables as before.

// maxLatestSnapshotBytes bounds the memory of the snapshot: about 350
// bytes a device of 4 fields, so ~750,000 devices. Beyond it the store
// drops the snapshot until it is opened again, and answers from the
// tables.
const maxLatestSnapshotBytes = 256 << 20

// latestChunkSize is the number of devices of a chunk of the snapshot
// (a chunk is split when it reaches twice this): a commit copies the
// chunks of the devices it changed and the chunk list, 128 devices × 56
// bytes and 8 bytes per 128 devices.
const latestChunkSize = 128

// latestEntry is one device of the snapshot. raw is the JSON array of its
// latest values as latest_fields holds it; it is never written after the
// entry is published.
type latestEntry struct {
	id, typ string
	raw     []byte
}

// entrySize is the memory an entry holds, for the bound.
func (e *latestEntry) size() int64 { return int64(56 + len(e.id) + len(e.raw)) }

// latestSnap is the latest values of every device with a reading, by
// device id, in chunks. It is immutable once published.
type latestSnap struct {
	chunks [][]latestEntry // each non-empty; ids ascending across chunks
	n      int             // devices
	bytes  int64           // memory held by the entries (size)
}

// find returns the position of the first entry with an id >= id (or > id
// if after): chunk c, index i; c == len(chunks) when there is none.
func (s *latestSnap) find(id string, after bool) (c, i int) {
	less := func(e string) bool { return e < id || after && e == id }
	c, _ = slices.BinarySearchFunc(s.chunks, id, func(ch []latestEntry, id string) int {
		if less(ch[len(ch)-1].id) {
			return -1
		}
		return 1
	})
	if c == len(s.chunks) {
		return c, 0
	}
	ch := s.chunks[c]
	i, _ = slices.BinarySearchFunc(ch, id, func(e latestEntry, id string) int {
		if less(e.id) {
			return -1
		}
		return 1
	})
	return c, i
}

// get returns the entry of device id.
func (s *latestSnap) get(id string) (*latestEntry, bool) {
	c, i := s.find(id, false)
	if c == len(s.chunks) || s.chunks[c][i].id != id {
		return nil, false
	}
	return &s.chunks[c][i], true
}

// with returns a snapshot with upd (sorted by id, ids unique) replacing
// or adding entries. s is not changed.
func (s *latestSnap) with(upd []latestEntry) *latestSnap {
	out := &latestSnap{chunks: make([][]latestEntry, 0, len(s.chunks)+len(upd)/latestChunkSize+1), n: s.n, bytes: s.bytes}
	u := 0
	for c, ch := range s.chunks {
		// The updates of this chunk: ids up to its last, and all that
		// are left for the last chunk.
		j := u
		for j < len(upd) && (c == len(s.chunks)-1 || upd[j].id <= ch[len(ch)-1].id) {
			j++
		}
		if j == u {
			out.chunks = append(out.chunks, ch)
			continue
		}
		merged := make([]latestEntry, 0, len(ch)+j-u)
		i := 0
		for _, e := range upd[u:j] {
			for i < len(ch) && ch[i].id < e.id {
				merged = append(merged, ch[i])
				i++
			}
			if i < len(ch) && ch[i].id == e.id {
				out.bytes -= ch[i].size()
				i++
			} else {
				out.n++
			}
			out.bytes += e.size()
			merged = append(merged, e)
		}
		merged = append(merged, ch[i:]...)
		out.chunks = appendChunks(out.chunks, merged)
		u = j
	}
	if len(s.chunks) == 0 && len(upd) > 0 {
		for i := range upd {
			out.bytes += upd[i].size()
		}
		out.n = len(upd)
		out.chunks = appendChunks(out.chunks, slices.Clone(upd))
	}
	return out
}

// appendChunks appends es, split into chunks of latestChunkSize when it
// reached twice that.
func appendChunks(chunks [][]latestEntry, es []latestEntry) [][]latestEntry {
	if len(es) < 2*latestChunkSize {
		return append(chunks, es)
	}
	for len(es) > 0 {
		n := min(latestChunkSize, len(es))
		chunks = append(chunks, es[:n:n])
		es = es[n:]
	}
	return chunks
}

// loadLatest builds the snapshot from the tables through db (under wmu,
// or before the store is shared) and publishes it, or none when it would
// pass maxLatestSnapshotBytes.
func (s *Store) loadLatest(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `SELECT d.id, d.type, l.vals FROM devices d JOIN latest_fields l ON l.dev = d.key ORDER BY d.id`)
	if err != nil {
		return fmt.Errorf("load latest values: %w", err)
	}
	defer rows.Close()
	types := map[string]string{}
	snap := &latestSnap{}
	var ch []latestEntry
	for rows.Next() {
		var e latestEntry
		if err := rows.Scan(&e.id, &e.typ, &e.raw); err != nil {
			return fmt.Errorf("load latest values: %w", err)
		}
		e.typ = intern(types, e.typ)
		snap.n++
		if snap.bytes += e.size(); snap.bytes > maxLatestSnapshotBytes {
			s.dropLatest("the latest values of every device take more memory than the bound", snap.n)
			return nil
		}
		if ch = append(ch, e); len(ch) == latestChunkSize {
			snap.chunks = append(snap.chunks, ch)
			ch = nil
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load latest values: %w", err)
	}
	if len(ch) > 0 {
		snap.chunks = append(snap.chunks, ch)
	}
	s.types = types
	s.snap.Store(snap)
	s.snapStale = false
	return nil
}

// dropLatest stops keeping the snapshot until the store is opened again;
// the caller holds wmu (or the store is not shared yet).
func (s *Store) dropLatest(why string, devices int) {
	s.log.Warn("latest values answered from the database, not memory: "+why,
		"devices", devices, "bound_bytes", maxLatestSnapshotBytes)
	s.snap.Store(nil)
	s.snapOff = true
}

// intern returns s, shared with earlier equal strings of m.
func intern(m map[string]string, s string) string {
	if v, ok := m[s]; ok {
		return v
	}
	m[s] = s
	return s
}

// publishLatest publishes the snapshot with what t changed, once t
// committed; the caller holds wmu.
func (s *Store) publishLatest(t *txn) {
	snap := s.snap.Load()
	if snap == nil || len(t.snapUpd) == 0 && len(t.types) == 0 {
		return
	}
	upd := make([]latestEntry, 0, len(t.snapUpd)+len(t.types))
	for _, e := range t.snapUpd {
		if typ, ok := t.types[e.id]; ok {
			e.typ = typ
		}
		e.typ = intern(s.types, e.typ)
		upd = append(upd, e)
	}
	// A device whose type changed without a new reading keeps its values.
	for id, typ := range t.types {
		if _, ok := t.snapUpd[id]; ok {
			continue
		}
		if e, ok := snap.get(id); ok && e.typ != typ {
			upd = append(upd, latestEntry{id: id, typ: intern(s.types, typ), raw: e.raw})
		}
	}
	if len(upd) == 0 {
		return
	}
	slices.SortFunc(upd, func(a, b latestEntry) int { return strings.Compare(a.id, b.id) })
	next := snap.with(upd)
	if next.bytes > maxLatestSnapshotBytes {
		s.dropLatest("the latest values of every device take more memory than the bound", next.n)
		return
	}
	s.snap.Store(next)
}

// latestFromSnapshot answers q from snap: the same page the tables give
// (latestFromTables), with Raw slices of the snapshot, never written.
func latestFromSnapshot(snap *latestSnap, q readings.LatestQuery) (readings.LatestPage, error) {
	p := readings.NewLatestPager(q)
	filter := q.Stream != "" || q.Field != ""
	c, i := snap.find(q.After, true)
	for ; c < len(snap.chunks); c, i = c+1, 0 {
		ch := snap.chunks[c]
		for ; i < len(ch); i++ {
			e := &ch[i]
			if q.Type != "" && e.typ != q.Type {
				continue
			}
			if !filter {
				if !p.AddRaw(e.id, e.raw) {
					return p.Page(), nil
				}
				continue
			}
			full, err := addFiltered(p, q, e.id, e.raw)
			if err != nil {
				return readings.LatestPage{}, err
			}
			if full {
				return p.Page(), nil
			}
		}
	}
	return p.Page(), nil
}

// addFiltered adds the values of one device that q's stream and field
// select; full means the page is full.
func addFiltered(p *readings.LatestPager, q readings.LatestQuery, id string, raw []byte) (full bool, err error) {
	d := readings.DeviceLatest{DeviceID: id, Raw: raw}
	vs, err := d.Decoded()
	if err != nil {
		return false, err
	}
	for _, v := range vs {
		if (q.Stream == "" || v.Stream == q.Stream) && (q.Field == "" || v.Field == q.Field) {
			if !p.Add(id, v) {
				return true, nil
			}
		}
	}
	return false, nil
}
