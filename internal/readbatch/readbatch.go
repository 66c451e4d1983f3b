// Package readbatch encodes the readings of one commit batch, of all its
// devices, as one byte string: a row of the SQLite store's
// reading_batches (docs/ARCHITECTURE.md, "The readings head (SQLite)").
//
// A batch is a version byte followed by records, one a reading. A
// record refers to nothing before it, so that it decodes alone from its
// offset (DecodeAt): the store's in-memory head keeps per device the
// offsets of its readings and decodes only those a query needs. Values
// are the reading's JSON object as the write path built it, kept as
// they are: the commit only copies them, and a query decodes them as it
// decoded the readings table's rows.
//
// A record: uvarint id, uvarint length and the device id, uvarint length
// and the stream, zig-zag varint time, received time (Unix microseconds)
// and message id, uvarint length and the values.
package readbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the first byte of every batch.
const Version = 1

// ErrCorrupt is returned for a batch that does not decode.
var ErrCorrupt = errors.New("corrupt reading batch")

// Record is one reading of a batch. Times are Unix microseconds.
type Record struct {
	ID         int64
	DeviceID   string
	Stream     string
	Time       int64
	ReceivedAt int64
	MessageID  int64
	// Values is the reading's JSON object. A decoded record's Values
	// alias the batch, which is never changed once written.
	Values []byte
}

// Encoder appends records to a batch.
type Encoder struct {
	b []byte
}

// Reset starts a new batch in buf's storage.
func (e *Encoder) Reset(buf []byte) {
	e.b = append(buf[:0], Version)
}

// Add appends r and returns its offset in the batch.
func (e *Encoder) Add(r *Record) int {
	if len(e.b) == 0 {
		e.b = append(e.b, Version)
	}
	off := len(e.b)
	b := binary.AppendUvarint(e.b, uint64(r.ID))
	b = binary.AppendUvarint(b, uint64(len(r.DeviceID)))
	b = append(b, r.DeviceID...)
	b = binary.AppendUvarint(b, uint64(len(r.Stream)))
	b = append(b, r.Stream...)
	b = binary.AppendVarint(b, r.Time)
	b = binary.AppendVarint(b, r.ReceivedAt)
	b = binary.AppendVarint(b, r.MessageID)
	b = binary.AppendUvarint(b, uint64(len(r.Values)))
	e.b = append(b, r.Values...)
	return off
}

// Bytes returns the batch.
func (e *Encoder) Bytes() []byte {
	if len(e.b) == 0 {
		e.b = append(e.b, Version)
	}
	return e.b
}

// Encode returns the batch of rs.
func Encode(rs []Record) []byte {
	var e Encoder
	for i := range rs {
		e.Add(&rs[i])
	}
	return e.Bytes()
}

// DecodeAt decodes the record at offset off of batch b and returns it
// with the offset of the next record (len(b) after the last).
func DecodeAt(b []byte, off int) (Record, int, error) {
	var r Record
	if len(b) == 0 || b[0] != Version {
		return r, 0, fmt.Errorf("%w: version", ErrCorrupt)
	}
	if off < 1 || off >= len(b) {
		return r, 0, fmt.Errorf("%w: offset %d of %d bytes", ErrCorrupt, off, len(b))
	}
	d := decoder{b: b, i: off}
	r.ID = int64(d.uvarint())
	r.DeviceID = string(d.bytes())
	r.Stream = string(d.bytes())
	r.Time = d.varint()
	r.ReceivedAt = d.varint()
	r.MessageID = d.varint()
	r.Values = d.bytes()
	if d.err != nil {
		return Record{}, 0, fmt.Errorf("%w: record at %d: %v", ErrCorrupt, off, d.err)
	}
	return r, d.i, nil
}

// Each calls fn with every record of b and its offset, in order, until fn
// returns an error, which it returns.
func Each(b []byte, fn func(r *Record, off int) error) error {
	if len(b) == 0 || b[0] != Version {
		return fmt.Errorf("%w: version", ErrCorrupt)
	}
	for off := 1; off < len(b); {
		r, next, err := DecodeAt(b, off)
		if err != nil {
			return err
		}
		if err := fn(&r, off); err != nil {
			return err
		}
		off = next
	}
	return nil
}

// Decode returns every record of b.
func Decode(b []byte) ([]Record, error) {
	var out []Record
	err := Each(b, func(r *Record, _ int) error {
		out = append(out, *r)
		return nil
	})
	return out, err
}

type decoder struct {
	b   []byte
	i   int
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.i:])
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.i += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.i:])
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.i += n
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.i) {
		d.err = fmt.Errorf("length %d past the end", n)
		return nil
	}
	v := d.b[d.i : d.i+int(n) : d.i+int(n)]
	d.i += int(n)
	return v
}
