package readings

import "encoding/json"

// eachField calls fn with the name and the value (a slice of b) of every
// member of the JSON object b, in order, and reports true; or reports
// false, having called fn for nothing, when b is not a compact object of
// plain names (printable ASCII without escapes) and scalar values. The
// values the hub stores are such objects (the ingest writes them so), and
// for them this is what json.Unmarshal into a map[string]json.RawMessage
// gives, without copying the values; anything else goes to
// encoding/json (fieldsOf).
func eachField(b []byte, fn func(name string, v json.RawMessage)) bool {
	if !flatObject(b) {
		return false
	}
	i := 1
	for b[i] != '}' {
		j := i + 1
		for b[j] != '"' {
			j++
		}
		name := string(b[i+1 : j])
		i = j + 2 // '":'
		j = scalarEnd(b, i)
		fn(name, b[i:j:j])
		i = j
		if b[i] == ',' {
			i++
		}
	}
	return true
}

// flatObject reports whether b is {} or {"name":scalar,...} with plain
// names, no white space and nothing after it.
func flatObject(b []byte) bool {
	if len(b) < 2 || b[0] != '{' {
		return false
	}
	i := 1
	if b[i] == '}' {
		return i+1 == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		i++
		start := i
		for i < len(b) && b[i] != '"' {
			if c := b[i]; c < 0x20 || c >= 0x7f || c == '\\' {
				return false
			}
			i++
		}
		if i == start || i+1 >= len(b) || b[i+1] != ':' {
			return false
		}
		i += 2
		j := scalarEnd(b, i)
		if j < 0 {
			return false
		}
		i = j
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i+1 == len(b)
		default:
			return false
		}
	}
}

// scalarEnd returns the end of the scalar JSON value at b[i:] (a number,
// true, false, null or a string without escapes or control characters),
// or -1 if there is none.
func scalarEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		for j := i + 1; j < len(b); j++ {
			switch c := b[j]; {
			case c == '"':
				return j + 1
			case c < 0x20 || c == '\\':
				return -1
			}
		}
		return -1
	case c == '-' || c >= '0' && c <= '9':
		j := i + 1
		for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] == '+' || b[j] == '-') {
			j++
		}
		if !plainNumber(b[i:j]) {
			return -1
		}
		return j
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
			return i + len(lit)
		}
	}
	return -1
}
