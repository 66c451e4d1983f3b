package readings

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// The message log and the readings on the write path (see
// commit.Op), and the transaction-scoped store that applies them
// (TxStore). Ranks: see docs/ARCHITECTURE.md, "Adding a domain".
var (
	messageDomain = &commit.Domain{Name: "messages", Rank: 20, Write: writeMessages}
	// Readings rank after every domain that can fail a change, so that a
	// failed change writes none.
	readingsDomain = &commit.Domain{Name: "readings", Rank: 60, Write: writeReadings}
)

// TxStore is what messages and readings need of a commit transaction. The
// transaction of every backend implements it.
type TxStore interface {
	// InsertMessages inserts the messages of a batch. A message whose
	// device and MsgID are stored already is not inserted: the store sets
	// its Duplicate.
	InsertMessages(ctx context.Context, msgs []MessageRow) error
	// InsertReadings inserts reading rows. Neither it nor UpsertLatest
	// keeps a reference to the slice it is given once it returns (the
	// domain reuses it).
	InsertReadings(ctx context.Context, rows []ReadingRow) error
	// UpsertLatest keeps each row as its device's latest value of the
	// field, unless the value kept has a later time. Rows are unique by
	// (device, stream, field) and sorted that way, so that concurrent
	// writers (several hub nodes) take row locks in one order.
	UpsertLatest(ctx context.Context, rows []LatestRow) error
}

// Message is one record of the message log: what a device sent, and
// whether the hub accepted it. A Message with a MsgID that the device used
// before (stored, or earlier in the batch) makes its change a duplicate:
// nothing of it is written.
type Message struct {
	ID         int64 // assigned by the hub before commit (see commit.IDs)
	Topic      string
	Transport  string // "mqtt" or "http"
	QoS        byte
	Payload    []byte
	MsgID      string // the device's idempotence key, "" for none
	Accepted   bool
	Code       string // rejection code, "" when accepted
	Reason     string // rejection reason, "" when accepted
	ReceivedAt time.Time
}

func (*Message) Domain() *commit.Domain { return messageDomain }

// MessageRow is a message to insert, with its device.
type MessageRow struct {
	DeviceID  string
	Message   *Message
	Duplicate bool // set by InsertMessages
}

// writeMessages marks the duplicate msg_ids within the batch, inserts the
// other messages and marks the changes whose message was stored before.
func writeMessages(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	rows := make([]MessageRow, 0, len(ops))
	changes := make([]*commit.Change, 0, len(ops))
	var seen map[[2]string]struct{}
	for _, p := range ops {
		ch := p.Change
		if !ch.Live() {
			continue
		}
		m := p.Op.(*Message)
		if m.MsgID != "" {
			if seen == nil {
				seen = map[[2]string]struct{}{}
			}
			k := [2]string{ch.DeviceID, m.MsgID}
			if _, dup := seen[k]; dup {
				ch.Duplicate = true
				continue
			}
			seen[k] = struct{}{}
		}
		rows = append(rows, MessageRow{DeviceID: ch.DeviceID, Message: m})
		changes = append(changes, ch)
	}
	if len(rows) == 0 {
		return nil
	}
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	if err := s.InsertMessages(ctx, rows); err != nil {
		return fmt.Errorf("insert messages: %w", err)
	}
	for i := range rows {
		if rows[i].Duplicate {
			changes[i].Duplicate = true
		}
	}
	return nil
}

// Reading is one reading row: values encoded as a JSON object.
type Reading struct {
	Stream string
	Time   time.Time
	Values []byte // JSON object
}

// Readings are the readings a message carried; they are written only if
// the message is accepted and not a duplicate, and need the device to
// exist.
type Readings struct {
	Message *Message
	Rows    []Reading
}

func (*Readings) Domain() *commit.Domain { return readingsDomain }

// NeedsDevice implements commit.DeviceNeeder.
func (r *Readings) NeedsDevice() bool { return r.Message.Accepted && len(r.Rows) > 0 }

// ReadingRow is a reading to insert, with its device and message.
type ReadingRow struct {
	DeviceID   string
	MessageID  int64
	ReceivedAt time.Time
	*Reading
}

func writeReadings(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	n := 0
	for _, p := range ops {
		n += len(p.Op.(*Readings).Rows)
	}
	bufs := rowBufPool.Get().(*rowBufs)
	defer bufs.put()
	rows := slices.Grow(bufs.rows[:0], n)
	for _, p := range ops {
		r := p.Op.(*Readings)
		if !p.Change.Live() || !r.Message.Accepted {
			continue
		}
		for i := range r.Rows {
			rows = append(rows, ReadingRow{DeviceID: p.Change.DeviceID, MessageID: r.Message.ID, ReceivedAt: r.Message.ReceivedAt, Reading: &r.Rows[i]})
		}
	}
	bufs.rows = rows
	if len(rows) == 0 {
		return nil
	}
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	if err := s.InsertReadings(ctx, rows); err != nil {
		return fmt.Errorf("insert readings: %w", err)
	}
	latest, order, err := appendLatestRows(bufs.latest[:0], bufs.order[:0], rows)
	bufs.latest, bufs.order = latest, order
	if err != nil {
		return err
	}
	if err := s.UpsertLatest(ctx, latest); err != nil {
		return fmt.Errorf("upsert latest values: %w", err)
	}
	return nil
}

// latestRows returns the newest value of each (device, stream, field) of
// rows, sorted; of equal times, the later row wins.
//
// The rows are ordered by device and stream (a sort of their indexes,
// which move nothing but ints), then the fields of each device's stream,
// usually those of one row, are ordered by name and row order and each
// name kept once. Neither a map of every key nor a sort of the whole
// output, which was most of the work (the values of a batch of 39
// changes made 78 rows of 88 bytes to sort with three string compares
// each).
func latestRows(rows []ReadingRow) ([]LatestRow, error) {
	out, _, err := appendLatestRows(nil, nil, rows)
	return out, err
}

// appendLatestRows is latestRows appending to out, with order as the
// room for its sort; it returns both grown.
func appendLatestRows(out []LatestRow, order []int, rows []ReadingRow) ([]LatestRow, []int, error) {
	order = slices.Grow(order, len(rows))
	for i := range rows {
		if len(rows[i].Values) > 0 {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		ra, rb := &rows[a], &rows[b]
		if c := strings.Compare(ra.DeviceID, rb.DeviceID); c != 0 {
			return c
		}
		if c := strings.Compare(ra.Stream, rb.Stream); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	out = slices.Grow(out, len(rows)*2)
	var fields map[string]json.RawMessage
	for g := 0; g < len(order); {
		first := &rows[order[g]]
		start := len(out) // the fields of this device's stream, in row order
		for ; g < len(order); g++ {
			r := &rows[order[g]]
			if r.DeviceID != first.DeviceID || r.Stream != first.Stream {
				break
			}
			add := func(f string, v json.RawMessage) {
				out = append(out, LatestRow{DeviceID: r.DeviceID, Stream: r.Stream, Field: f, Time: r.Time, Value: v})
			}
			if eachField(r.Values, add) {
				continue
			}
			clear(fields)
			if err := json.Unmarshal(r.Values, &fields); err != nil {
				return out, order, fmt.Errorf("values of a reading of %s: %w", r.DeviceID, err)
			}
			for f, v := range fields {
				add(f, v)
			}
		}
		out = append(out[:start], newestFields(out[start:])...)
	}
	return out, order, nil
}

// rowBufs are writeReadings' slices, kept across batches in rowBufPool:
// a batch of 400 readings otherwise allocates its rows and their latest
// values anew (~7 % of the hub's allocated bytes under ingest). The
// stores keep no reference to them once InsertReadings and UpsertLatest
// return (TxStore).
type rowBufs struct {
	rows   []ReadingRow
	latest []LatestRow
	order  []int
}

var rowBufPool = sync.Pool{New: func() any { return new(rowBufs) }}

// maxRowBufs bounds the rows a pooled rowBufs keeps (a larger batch's
// slices are let go).
const maxRowBufs = 4096

// put clears the slices (they point into the batch's readings) and
// returns b to the pool.
func (b *rowBufs) put() {
	if cap(b.rows) > maxRowBufs || cap(b.latest) > 4*maxRowBufs {
		return
	}
	clear(b.rows[:cap(b.rows)])
	clear(b.latest[:cap(b.latest)])
	b.rows, b.latest, b.order = b.rows[:0], b.latest[:0], b.order[:0]
	rowBufPool.Put(b)
}

// newestFields orders the values of one device's stream, given in row
// order, by field and keeps the newest of each field (of equal times the
// later); it works in place and returns the part of fs kept. The sort is
// stable, so that equal fields stay in row order (an insertion sort for
// one row's few fields).
func newestFields(fs []LatestRow) []LatestRow {
	slices.SortStableFunc(fs, func(a, b LatestRow) int { return strings.Compare(a.Field, b.Field) })
	n := 0
	for i := range fs {
		if n > 0 && fs[n-1].Field == fs[i].Field {
			if !fs[i].Time.Before(fs[n-1].Time) {
				fs[n-1].Time, fs[n-1].Value = fs[i].Time, fs[i].Value
			}
			continue
		}
		fs[n] = fs[i]
		n++
	}
	return fs[:n]
}
