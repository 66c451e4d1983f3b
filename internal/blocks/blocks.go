// Package blocks encodes the readings of one device and stream over a
// closed time window into one compressed block, and decodes it back.
//
// A block is a column store of its readings in (time, id) order: times,
// reading ids, message ids and receive times as delta-of-delta varints
// (regular intervals cost about a byte a reading), then one column per
// field. A numeric field's values take the smaller of two encodings,
// chosen per block: decimal (every value is an integer times 10^-e for a
// small e, as sensors send them: the integers as delta varints) or the
// XOR encoding of Facebook's Gorilla paper (each float XORed with the
// previous one, its meaningful bits written). A field with a value that
// is not a number keeps its values as JSON. A field absent from some
// readings has a presence bitmap.
//
// Decode is a parser of stored bytes: it checks every length against the
// input and returns ErrCorrupt for bytes it did not write (FuzzDecode).
package blocks

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
)

// ErrCorrupt is returned by Decode for bytes that are not a block.
var ErrCorrupt = errors.New("corrupt block")

// version is the first byte of every block.
const version = 1

// Limits Decode enforces before allocating.
const (
	maxReadings = 1 << 20
	maxFields   = 1 << 12
)

// Column kinds of a field.
const (
	kindDecimal = 1
	kindXOR     = 2
	kindJSON    = 3
)

// Reading is one reading of a block. Times are Unix microseconds.
// Values hold what encoding/json decodes a reading's JSON object into:
// numbers are float64.
type Reading struct {
	ID         int64
	MessageID  int64
	Time       int64
	ReceivedAt int64
	Values     map[string]any
}

// Sort sorts readings in block order: by time, then id.
func Sort(rs []Reading) {
	slices.SortFunc(rs, func(a, b Reading) int { return cmp.Or(cmp.Compare(a.Time, b.Time), cmp.Compare(a.ID, b.ID)) })
}

// Encode encodes rs (sorted by Sort) into a block.
func Encode(rs []Reading) ([]byte, error) {
	if len(rs) == 0 || len(rs) > maxReadings {
		return nil, fmt.Errorf("encode block: %d readings (1 to %d)", len(rs), maxReadings)
	}
	b := []byte{version}
	b = binary.AppendUvarint(b, uint64(len(rs)))
	col := make([]int64, len(rs))
	for _, get := range []func(*Reading) int64{
		func(r *Reading) int64 { return r.Time },
		func(r *Reading) int64 { return r.ID },
		func(r *Reading) int64 { return r.MessageID },
		func(r *Reading) int64 { return r.ReceivedAt - r.Time },
	} {
		for i := range rs {
			col[i] = get(&rs[i])
		}
		b = appendDoD(b, col)
	}
	names := map[string]struct{}{}
	for i := range rs {
		for k := range rs[i].Values {
			names[k] = struct{}{}
		}
	}
	if len(names) > maxFields {
		return nil, fmt.Errorf("encode block: %d fields (at most %d)", len(names), maxFields)
	}
	sorted := make([]string, 0, len(names))
	for k := range names {
		sorted = append(sorted, k)
	}
	slices.Sort(sorted)
	b = binary.AppendUvarint(b, uint64(len(sorted)))
	for _, name := range sorted {
		var err error
		if b, err = appendField(b, name, rs); err != nil {
			return nil, fmt.Errorf("encode block: field %q: %w", name, err)
		}
	}
	return b, nil
}

// appendField writes a field's name, presence, kind and values.
func appendField(b []byte, name string, rs []Reading) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	present := make([]byte, (len(rs)+7)/8)
	all := true
	var nums []float64
	numeric := true
	var vals []any
	for i := range rs {
		v, ok := rs[i].Values[name]
		if !ok {
			all = false
			continue
		}
		present[i/8] |= 1 << (i % 8)
		vals = append(vals, v)
		if f, ok := v.(float64); ok && numeric {
			nums = append(nums, f)
		} else {
			numeric = false
		}
	}
	if all {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = append(b, present...)
	}
	if !numeric {
		b = append(b, kindJSON)
		for _, v := range vals {
			j, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			b = binary.AppendUvarint(b, uint64(len(j)))
			b = append(b, j...)
		}
		return b, nil
	}
	x := appendXOR(nil, nums)
	if e, ints, ok := decimals(nums); ok {
		d := []byte{kindDecimal, byte(e)}
		prev := int64(0)
		for _, n := range ints {
			d = binary.AppendVarint(d, n-prev)
			prev = n
		}
		if len(d) <= len(x)+1 {
			return append(b, d...), nil
		}
	}
	b = append(b, kindXOR)
	return append(b, x...), nil
}

// pow10 are the scales the decimal encoding tries.
var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6}

// decimals finds the smallest e for which every value is an integer
// times 10^-e that converts back to exactly the same float64.
func decimals(vs []float64) (int, []int64, bool) {
	ints := make([]int64, len(vs))
next:
	for e, p := range pow10 {
		for i, v := range vs {
			s := math.Round(v * p)
			if math.Abs(s) >= 1<<53 || s/p != v || (v == 0 && math.Signbit(v)) {
				continue next
			}
			ints[i] = int64(s)
		}
		return e, ints, true
	}
	return 0, nil, false
}

// appendDoD writes a column of integers as the first value, the first
// delta and then the deltas of the deltas, as zigzag varints.
func appendDoD(b []byte, col []int64) []byte {
	var prev, delta int64
	for i, v := range col {
		switch i {
		case 0:
			b = binary.AppendVarint(b, v)
		case 1:
			delta = v - prev
			b = binary.AppendVarint(b, delta)
		default:
			d := v - prev
			b = binary.AppendVarint(b, d-delta)
			delta = d
		}
		prev = v
	}
	return b
}

// appendXOR writes floats with Gorilla's XOR encoding: the first value's
// 64 bits; then per value a 0 bit when it equals the previous one, else
// 1 and either 0 and the meaningful bits in the previous value's window,
// or 1, the count of leading zeros (6 bits), the count of meaningful
// bits (6 bits, 0 meaning 64) and those bits.
func appendXOR(b []byte, vs []float64) []byte {
	w := bitWriter{b: b}
	var prev uint64
	lead, trail := -1, 0
	for i, v := range vs {
		bits := math.Float64bits(v)
		if i == 0 {
			w.write(bits, 64)
			prev = bits
			continue
		}
		x := bits ^ prev
		prev = bits
		if x == 0 {
			w.write(0, 1)
			continue
		}
		l, t := leadingZeros(x), trailingZeros(x)
		if lead >= 0 && l >= lead && t >= trail {
			w.write(0b10, 2)
			w.write(x>>trail, 64-lead-trail)
			continue
		}
		lead, trail = l, t
		n := 64 - l - t
		w.write(0b11, 2)
		w.write(uint64(l), 6)
		w.write(uint64(n&63), 6)
		w.write(x>>t, n)
	}
	return w.bytes()
}

// Decode decodes a block.
func Decode(b []byte) ([]Reading, error) {
	return DecodeSelect(b, Select{From: math.MinInt64})
}

// Select is the part of a block DecodeSelect decodes: the readings with a
// time in [From, To) (To 0: no end), and of their values only Field's
// ("": every field's).
type Select struct {
	From, To int64
	Field    string
}

// DecodeSelect decodes the readings of a block that sel selects, in block
// order, with only the values it selects; a reading without the selected
// field has no values. The other readings and values are read past, not
// decoded: a query of one field or a short range does not pay for a map
// of every reading and value of the block. What it returns is what Decode
// returns of the same readings and fields (FuzzDecode); the JSON of values
// it does not decode is not checked.
func DecodeSelect(b []byte, sel Select) ([]Reading, error) {
	r := reader{b: b}
	if v := r.byte(); v != version {
		return nil, fmt.Errorf("%w: version %d", ErrCorrupt, v)
	}
	n := r.uvarint()
	if r.err != nil || n == 0 || n > maxReadings || n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: %d readings", ErrCorrupt, n)
	}
	rs := make([]Reading, n)
	col := make([]int64, n)
	for c := range 4 {
		if err := r.dod(col); err != nil {
			return nil, err
		}
		for i := range rs {
			switch c {
			case 0:
				rs[i].Time = col[i]
			case 1:
				rs[i].ID = col[i]
			case 2:
				rs[i].MessageID = col[i]
			case 3:
				rs[i].ReceivedAt = rs[i].Time + col[i]
			}
		}
	}
	nf := r.uvarint()
	if r.err != nil || nf > maxFields {
		return nil, fmt.Errorf("%w: %d fields", ErrCorrupt, nf)
	}
	// The selected readings: a range of the block's time order. A block
	// Decode did not write may be out of order; then every reading is
	// looked at.
	lo, hi := 0, len(rs)
	if sorted := slices.IsSortedFunc(rs, func(a, b Reading) int { return cmp.Compare(a.Time, b.Time) }); sorted {
		lo, _ = slices.BinarySearchFunc(rs, sel.From, func(x Reading, t int64) int { return cmp.Compare(x.Time, t) })
		if sel.To != 0 {
			hi, _ = slices.BinarySearchFunc(rs, sel.To, func(x Reading, t int64) int { return cmp.Compare(x.Time, t) })
			hi = max(hi, lo)
		}
	}
	r.sel, r.lo, r.hi = sel, lo, hi
	per := int(nf)
	if sel.Field != "" {
		per = 1
	}
	for i := lo; i < hi; i++ {
		if r.selected(&rs[i]) {
			rs[i].Values = make(map[string]any, per)
		}
	}
	for range nf {
		if err := r.field(rs); err != nil {
			return nil, err
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.off != len(b) {
		return nil, fmt.Errorf("%w: %d bytes after the last field", ErrCorrupt, len(b)-r.off)
	}
	out := rs[:0]
	for i := lo; i < hi; i++ {
		if r.selected(&rs[i]) {
			out = append(out, rs[i])
		}
	}
	return out, nil
}

// selected reports whether sel selects the reading by its time.
func (r *reader) selected(x *Reading) bool {
	return x.Time >= r.sel.From && (r.sel.To == 0 || x.Time < r.sel.To)
}

// reader reads a block; the first error sticks.
type reader struct {
	b     []byte
	off   int
	err   error
	names map[string]bool

	// sel selects what is decoded; the selected readings are among
	// [lo, hi), and a reading is selected if its Values is not nil.
	sel    Select
	lo, hi int
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
}

func (r *reader) byte() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.fail("short at %d", r.off)
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *reader) take(n uint64) []byte {
	if r.err != nil || n > uint64(len(r.b)-r.off) {
		r.fail("%d bytes wanted at %d, %d left", n, r.off, len(r.b)-r.off)
		return nil
	}
	r.off += int(n)
	return r.b[r.off-int(n) : r.off]
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Uvarint(r.b[r.off:])
	if k <= 0 {
		r.fail("bad varint at %d", r.off)
		return 0
	}
	r.off += k
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Varint(r.b[r.off:])
	if k <= 0 {
		r.fail("bad varint at %d", r.off)
		return 0
	}
	r.off += k
	return v
}

// dod reads a column written by appendDoD.
func (r *reader) dod(col []int64) error {
	var prev, delta int64
	for i := range col {
		v := r.varint()
		switch i {
		case 0:
			col[i] = v
		case 1:
			delta = v
			col[i] = prev + delta
		default:
			delta += v
			col[i] = prev + delta
		}
		prev = col[i]
	}
	return r.err
}

// field reads one field's column into rs.
func (r *reader) field(rs []Reading) error {
	nl := r.uvarint()
	name := string(r.take(nl))
	var rows []int
	switch p := r.byte(); p {
	case 0:
		rows = make([]int, len(rs))
		for i := range rows {
			rows[i] = i
		}
	case 1:
		bm := r.take(uint64((len(rs) + 7) / 8))
		for i := range rs {
			if r.err == nil && bm[i/8]&(1<<(i%8)) != 0 {
				rows = append(rows, i)
			}
		}
	default:
		r.fail("presence %d of field %q", p, name)
	}
	if r.err != nil {
		return r.err
	}
	if r.names[name] {
		r.fail("field %q twice", name)
		return r.err
	}
	if r.names == nil {
		r.names = map[string]bool{}
	}
	r.names[name] = true
	// want: the values of this field are decoded for the selected
	// readings (those with a Values map).
	want := r.sel.Field == "" || r.sel.Field == name
	switch k := r.byte(); k {
	case kindDecimal:
		e := int(r.byte())
		if e >= len(pow10) {
			r.fail("decimal exponent %d of field %q", e, name)
			return r.err
		}
		var n int64
		for _, i := range rows {
			n += r.varint()
			if want && rs[i].Values != nil {
				rs[i].Values[name] = float64(n) / pow10[e]
			}
		}
	case kindXOR:
		br := bitReader{b: r.b[r.off:]}
		vs := br.xor(len(rows))
		if br.err {
			r.fail("short XOR column of field %q", name)
			return r.err
		}
		r.off += br.used()
		for j, i := range rows {
			if want && rs[i].Values != nil {
				rs[i].Values[name] = vs[j]
			}
		}
	case kindJSON:
		for _, i := range rows {
			j := r.take(r.uvarint())
			if r.err != nil {
				return r.err
			}
			if !want || rs[i].Values == nil {
				continue
			}
			var v any
			if err := json.Unmarshal(j, &v); err != nil {
				r.fail("value of field %q: %v", name, err)
				return r.err
			}
			rs[i].Values[name] = v
		}
	default:
		r.fail("kind %d of field %q", k, name)
	}
	if len(rows) == 0 && r.err == nil {
		r.fail("field %q without values", name)
	}
	return r.err
}
