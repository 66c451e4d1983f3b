package readings

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/devicehub/devicehub/internal/jsonenc"
)

// AppendLatest appends vs as encoding/json encodes it (json.Marshal of
// the []LatestValue): the form a store keeps a device's latest values in
// (DeviceLatest.Raw). It runs in the commit loop for every device of every
// batch, so the common case (plain ASCII names, compact values) is written
// directly, and any other value through encoding/json, byte for byte as
// before.
func AppendLatest(b []byte, vs []LatestValue) ([]byte, error) {
	b = append(b, '[')
	var ts [2]int // where the previous value's time is encoded in b
	for i := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		v := &vs[i]
		if !plainString(v.Stream) || !plainString(v.Field) || !plainValue(v.Value) {
			e, err := json.Marshal(v)
			if err != nil {
				return b, err
			}
			b = append(b, e...)
			ts = [2]int{}
			continue
		}
		b = append(b, '{')
		if v.Stream != "" {
			b = append(b, `"stream":"`...)
			b = append(b, v.Stream...)
			b = append(b, `",`...)
		}
		b = append(b, `"field":"`...)
		b = append(b, v.Field...)
		b = append(b, `","ts":`...)
		if ts[1] > 0 && v.Time == vs[i-1].Time {
			// The fields of one reading share its time: its encoding
			// is copied, not formatted again (the same Time value, so
			// the same bytes).
			b = append(b, b[ts[0]:ts[1]]...)
		} else {
			start := len(b)
			var err error
			if b, err = jsonenc.AppendTime(b, v.Time); err != nil {
				return b, err
			}
			ts = [2]int{start, len(b)}
		}
		b = append(b, `,"value":`...)
		b = append(b, v.Value...)
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// plainString reports whether encoding/json writes s between quotes as it
// is: printable ASCII without the characters it escapes.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// plainValue reports whether v is a JSON value encoding/json copies as it
// is: a number, true, false, null or a plain string, without white space.
// Objects, arrays and anything else go through encoding/json, which
// checks, compacts and escapes them.
func plainValue(v json.RawMessage) bool {
	if len(v) == 0 {
		return false
	}
	switch c := v[0]; {
	case c == '"':
		return len(v) >= 2 && v[len(v)-1] == '"' && plainString(string(v[1:len(v)-1]))
	case c == '-' || c >= '0' && c <= '9':
		return plainNumber(v)
	}
	s := string(v)
	return s == "true" || s == "false" || s == "null"
}

// plainNumber reports whether v is a JSON number (RFC 8259 grammar).
func plainNumber(v []byte) bool {
	i := 0
	if v[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(v) && v[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(v) && v[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(v)
}
