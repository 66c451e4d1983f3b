package blocks

import (
	"math"
	"math/bits"
)

func leadingZeros(x uint64) int  { return bits.LeadingZeros64(x) }
func trailingZeros(x uint64) int { return bits.TrailingZeros64(x) }

// bitWriter appends bits, most significant first.
type bitWriter struct {
	b    []byte
	used int // bits used of the last byte (0: a new byte is needed)
}

// write writes the n low bits of v.
func (w *bitWriter) write(v uint64, n int) {
	for n > 0 {
		if w.used == 0 {
			w.b = append(w.b, 0)
		}
		free := 8 - w.used
		k := min(free, n)
		chunk := byte((v >> (n - k)) & (1<<k - 1))
		w.b[len(w.b)-1] |= chunk << (free - k)
		w.used = (w.used + k) % 8
		n -= k
	}
}

func (w *bitWriter) bytes() []byte { return w.b }

// bitReader reads what a bitWriter wrote; err is set when it ran out.
type bitReader struct {
	b   []byte
	pos int // in bits
	err bool
}

func (r *bitReader) read(n int) uint64 {
	if n == 0 {
		return 0
	}
	if r.err || r.pos+n > len(r.b)*8 {
		r.err = true
		return 0
	}
	var v uint64
	for n > 0 {
		byteAt, bit := r.pos/8, r.pos%8
		k := min(8-bit, n)
		chunk := (r.b[byteAt] >> (8 - bit - k)) & (1<<k - 1)
		v = v<<k | uint64(chunk)
		r.pos += k
		n -= k
	}
	return v
}

// used is the bytes read, the last one partly.
func (r *bitReader) used() int { return (r.pos + 7) / 8 }

// xor reads n floats written by appendXOR.
func (r *bitReader) xor(n int) []float64 {
	out := make([]float64, 0, min(n, len(r.b)*8))
	var prev uint64
	lead, trail := -1, 0
	for i := 0; i < n && !r.err; i++ {
		if i == 0 {
			prev = r.read(64)
			out = append(out, math.Float64frombits(prev))
			continue
		}
		if r.read(1) == 0 {
			out = append(out, math.Float64frombits(prev))
			continue
		}
		if r.read(1) == 0 {
			if lead < 0 {
				r.err = true
				break
			}
			prev ^= r.read(64-lead-trail) << trail
		} else {
			lead = int(r.read(6))
			m := int(r.read(6))
			if m == 0 {
				m = 64
			}
			if lead+m > 64 {
				r.err = true
				break
			}
			trail = 64 - lead - m
			prev ^= r.read(m) << trail
		}
		out = append(out, math.Float64frombits(prev))
	}
	return out
}
