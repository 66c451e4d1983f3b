// Package jsonenc appends numbers and times in exactly the bytes
// encoding/json writes for them, without its reflection: the hot encoders
// (ingest's canonical payloads, the readings API, the stored latest
// values) write their JSON by hand and use these so that their output
// stays byte for byte what json.Marshal gives.
package jsonenc

import (
	"errors"
	"math"
	"strconv"
	"time"
)

// ErrNotFinite is returned for NaN and the infinities, which JSON cannot
// hold (encoding/json refuses them too).
var ErrNotFinite = errors.New("NaN or infinite number")

// AppendFloat appends f as encoding/json does (ES6 number formatting): the
// shortest decimal that reads back as f, in exponent form below 1e-6 and
// from 1e21 on, with a one-digit negative exponent written e-9, not e-09.
// On error b is returned unchanged.
func AppendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, ErrNotFinite
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// AppendTime appends t as time.Time's MarshalJSON does: RFC 3339 with
// nanoseconds, quoted. A year outside [0,9999] is an error, as there; on
// error b is returned unchanged.
func AppendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, errors.New("time " + t.String() + ": year outside of [0,9999]")
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}
