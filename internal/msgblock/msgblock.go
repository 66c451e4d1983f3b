// Package msgblock encodes records of the message log into compact binary
// blocks and decodes them back: the SQLite store keeps a whole commit
// batch's messages, and later a run of one device's messages, as one blob
// of one row instead of one row (and three B-tree entries) per message.
//
// A block is a version byte followed by records, each:
//
//	flags    byte: 1 accepted, 2 payload present, 4 msg_id present,
//	         8 same device as the record before, 16 same topic as the
//	         record before, 32 code and reason present, 64 standalone;
//	         the other bit zero
//	id       zigzag varint, the difference to the record before's id
//	         (to 0 for the first or a standalone record)
//	received zigzag varint, Unix microseconds, the difference to the
//	         record before's (to 0 for the first or a standalone record)
//	qos      byte
//	transport, device (unless flag 8), topic (unless flag 16),
//	msg_id (flag 4), code and reason (flag 32), payload (flag 2):
//	         each a uvarint length and that many bytes
//
// A standalone record (Encoder.Standalone) refers to no record before it,
// so that it can be decoded alone from its offset (DecodeAt): the commit's
// batch rows are written so, and the head remembers each message's
// offset, so that a device's listing reads its own records only.
//
// There is no checksum: SQLite checks its own pages, and a block is only
// read back from the database it was written to. The decoder still
// checks every length against what is left, so that a damaged or foreign
// block is an error naming what was wrong, never a panic.
package msgblock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unsafe"
)

// Version is the first byte of every block this package writes.
const Version = 1

// Record is one message of the message log as a block holds it.
type Record struct {
	ID         int64
	DeviceID   string
	Topic      string
	Transport  string
	QoS        byte
	Payload    []byte // nil: none (or stripped by retention)
	MsgID      string // "": none
	Accepted   bool
	Code       string
	Reason     string
	ReceivedAt int64 // Unix microseconds
}

const (
	flagAccepted = 1 << iota
	flagPayload
	flagMsgID
	flagSameDevice
	flagSameTopic
	flagCode
	flagStandalone
	flagsKnown = 1<<iota - 1
)

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("msgblock: corrupt block")

// Encoder appends records to a block.
type Encoder struct {
	// Standalone makes every record decodable alone (DecodeAt), at a few
	// bytes a record.
	Standalone     bool
	buf            []byte
	n              int
	prevID, prevAt int64
	prevDev        string
	prevTopic      string
	count          int
}

// Reset starts a new block in dst's storage (dst[:0]).
func (e *Encoder) Reset(dst []byte) {
	*e = Encoder{Standalone: e.Standalone, buf: append(dst[:0], Version)}
}

// Add appends r and returns its offset in the block.
func (e *Encoder) Add(r *Record) int {
	if len(e.buf) == 0 {
		e.buf = append(e.buf, Version)
	}
	off := len(e.buf)
	if e.Standalone {
		e.n, e.prevID, e.prevAt = 0, 0, 0
	}
	var f byte
	if r.Accepted {
		f |= flagAccepted
	}
	if r.Payload != nil {
		f |= flagPayload
	}
	if r.MsgID != "" {
		f |= flagMsgID
	}
	if e.n > 0 && r.DeviceID == e.prevDev {
		f |= flagSameDevice
	}
	if e.n > 0 && r.Topic == e.prevTopic {
		f |= flagSameTopic
	}
	if r.Code != "" || r.Reason != "" {
		f |= flagCode
	}
	if e.Standalone {
		f |= flagStandalone
	}
	b := append(e.buf, f)
	b = binary.AppendVarint(b, r.ID-e.prevID)
	b = binary.AppendVarint(b, r.ReceivedAt-e.prevAt)
	b = append(b, r.QoS)
	b = appendString(b, r.Transport)
	if f&flagSameDevice == 0 {
		b = appendString(b, r.DeviceID)
	}
	if f&flagSameTopic == 0 {
		b = appendString(b, r.Topic)
	}
	if f&flagMsgID != 0 {
		b = appendString(b, r.MsgID)
	}
	if f&flagCode != 0 {
		b = appendString(b, r.Code)
		b = appendString(b, r.Reason)
	}
	if f&flagPayload != 0 {
		b = binary.AppendUvarint(b, uint64(len(r.Payload)))
		b = append(b, r.Payload...)
	}
	e.buf = b
	e.n++
	e.count++
	e.prevID, e.prevAt, e.prevDev, e.prevTopic = r.ID, r.ReceivedAt, r.DeviceID, r.Topic
	return off
}

// Len returns the number of records added since Reset.
func (e *Encoder) Len() int { return e.count }

// Bytes returns the block; it is valid until the next Reset or Add.
func (e *Encoder) Bytes() []byte {
	if len(e.buf) == 0 {
		return []byte{Version}
	}
	return e.buf
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Encode returns the block of recs.
func Encode(recs []Record) []byte {
	var e Encoder
	e.Reset(nil)
	for i := range recs {
		e.Add(&recs[i])
	}
	return e.Bytes()
}

// AppendShared appends the records of block b to dst. Unlike Decode's,
// their strings and payloads are b's own bytes, not copies: they are
// valid as long as b is neither changed nor reused, and cost no
// allocation besides dst's growth. On error dst holds the records
// before the corrupt one.
func AppendShared(dst []Record, b []byte) ([]Record, error) {
	err := Each(b, func(r *Record) error {
		dst = append(dst, *r)
		return nil
	})
	return dst, err
}

// Decode returns the records of block b, sharing nothing with b.
func Decode(b []byte) ([]Record, error) {
	var out []Record
	err := Each(b, func(r *Record) error {
		out = append(out, r.Clone())
		return nil
	})
	return out, err
}

// Clone returns r with copies of its strings and payload: a record Each
// or DecodeAt returned shares them with the block.
func (r *Record) Clone() Record {
	c := *r
	c.DeviceID, c.Topic, c.Transport = strings.Clone(r.DeviceID), strings.Clone(r.Topic), strings.Clone(r.Transport)
	c.MsgID, c.Code, c.Reason = strings.Clone(r.MsgID), strings.Clone(r.Code), strings.Clone(r.Reason)
	if r.Payload != nil {
		c.Payload = append([]byte{}, r.Payload...)
	}
	return c
}

// DecodeAt decodes the standalone record at offset off of block b. Its
// strings and payload share b's storage (Clone copies them).
func DecodeAt(b []byte, off int) (Record, error) {
	var r Record
	if len(b) == 0 || b[0] != Version {
		return r, fmt.Errorf("%w: not a version %d block", ErrCorrupt, Version)
	}
	if off < 1 || off >= len(b) {
		return r, fmt.Errorf("%w: offset %d outside the block (%d bytes)", ErrCorrupt, off, len(b))
	}
	if b[off]&flagStandalone == 0 {
		return r, fmt.Errorf("%w: record at byte %d is not standalone", ErrCorrupt, off)
	}
	d := decoder{b: b, off: off}
	if err := d.record(&r, true); err != nil {
		return r, fmt.Errorf("%w: record at byte %d: %s", ErrCorrupt, off, err)
	}
	return r, nil
}

// Each calls fn with every record of block b, in order, until fn returns
// an error (which Each returns). The record, its strings and its Payload
// share b's storage and are only valid during the call (Clone copies
// them).
func Each(b []byte, fn func(r *Record) error) error {
	return EachAt(b, func(r *Record, _ int) error { return fn(r) })
}

// EachAt is Each that also gives each record's offset in b.
func EachAt(b []byte, fn func(r *Record, off int) error) error {
	d := decoder{b: b}
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", ErrCorrupt)
	}
	if b[0] != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrCorrupt, b[0], Version)
	}
	d.off = 1
	var r Record
	for i := 0; d.off < len(d.b); i++ {
		off := d.off
		if err := d.record(&r, i == 0); err != nil {
			return fmt.Errorf("%w: record %d at byte %d: %s", ErrCorrupt, i, off, err)
		}
		if err := fn(&r, off); err != nil {
			return err
		}
	}
	return nil
}

type decoder struct {
	b   []byte
	off int
}

// record decodes the next record into r, which holds the record before
// (its id, time, device and topic are the bases of this one's).
func (d *decoder) record(r *Record, first bool) error {
	f := d.b[d.off]
	d.off++
	if f&^flagsKnown != 0 {
		return fmt.Errorf("unknown flags %#x", f)
	}
	if f&flagStandalone != 0 {
		if f&(flagSameDevice|flagSameTopic) != 0 {
			return errors.New("standalone record refers to the record before")
		}
		r.ID, r.ReceivedAt = 0, 0
	}
	dID, err := d.varint("id")
	if err != nil {
		return err
	}
	dAt, err := d.varint("received_at")
	if err != nil {
		return err
	}
	id, ok := add(r.ID, dID)
	if !ok {
		return errors.New("id overflows")
	}
	at, ok := add(r.ReceivedAt, dAt)
	if !ok {
		return errors.New("received_at overflows")
	}
	if d.off >= len(d.b) {
		return errors.New("qos: past the end")
	}
	qos := d.b[d.off]
	d.off++
	transport, err := d.str("transport")
	if err != nil {
		return err
	}
	dev, topic := r.DeviceID, r.Topic
	if f&flagSameDevice == 0 {
		if dev, err = d.str("device"); err != nil {
			return err
		}
	} else if first {
		return errors.New("first record refers to a device before it")
	}
	if f&flagSameTopic == 0 {
		if topic, err = d.str("topic"); err != nil {
			return err
		}
	} else if first {
		return errors.New("first record refers to a topic before it")
	}
	var msgID, code, reason string
	if f&flagMsgID != 0 {
		if msgID, err = d.str("msg_id"); err != nil {
			return err
		}
		if msgID == "" {
			return errors.New("msg_id flagged but empty")
		}
	}
	if f&flagCode != 0 {
		if code, err = d.str("code"); err != nil {
			return err
		}
		if reason, err = d.str("reason"); err != nil {
			return err
		}
	}
	var payload []byte
	if f&flagPayload != 0 {
		if payload, err = d.bytes("payload"); err != nil {
			return err
		}
	}
	*r = Record{ID: id, DeviceID: dev, Topic: topic, Transport: transport, QoS: qos, Payload: payload,
		MsgID: msgID, Accepted: f&flagAccepted != 0, Code: code, Reason: reason, ReceivedAt: at}
	return nil
}

func add(a, b int64) (int64, bool) {
	c := a + b
	if (b > 0 && c < a) || (b < 0 && c > a) {
		return 0, false
	}
	return c, true
}

func (d *decoder) varint(what string) (int64, error) {
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		return 0, fmt.Errorf("%s: bad varint", what)
	}
	d.off += n
	return v, nil
}

func (d *decoder) bytes(what string) ([]byte, error) {
	l, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		return nil, fmt.Errorf("%s: bad length", what)
	}
	d.off += n
	if l > math.MaxInt32 || int(l) > len(d.b)-d.off {
		return nil, fmt.Errorf("%s: length %d past the end (%d bytes left)", what, l, len(d.b)-d.off)
	}
	v := d.b[d.off : d.off+int(l) : d.off+int(l)]
	d.off += int(l)
	return v, nil
}

// str returns the next string, sharing the block's storage.
func (d *decoder) str(what string) (string, error) {
	b, err := d.bytes(what)
	if len(b) == 0 {
		return "", err
	}
	return unsafe.String(&b[0], len(b)), err
}
