package ingest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/devicehub/devicehub/internal/jsonenc"
)

// This file holds the JSON parser and encoder of the hot path. They do what
// encoding/json does with `any` (objects become map[string]any, numbers
// float64, invalid UTF-8 becomes U+FFFD, the last of duplicate keys wins)
// without reflection, and intern the field names of the device type.

// maxDepth bounds nesting, so that a hostile payload cannot exhaust the
// stack.
const maxDepth = 64

// jsonError is a payload the parser refused: a syntax error (invalid_json)
// or a value JSON allows but the hub cannot hold (invalid_payload).
type jsonError struct {
	code string
	off  int
	msg  string
}

func (e *jsonError) Error() string { return fmt.Sprintf("offset %d: %s", e.off, e.msg) }

type parser struct {
	b      []byte
	i      int
	depth  int
	intern map[string]string // known keys; may be nil

	// valueErr is the first value JSON allows but the hub cannot hold
	// (a number out of range); the parser goes on so that a syntax error
	// later on is reported instead.
	valueErr error
}

func (p *parser) syntax(msg string) error {
	return &jsonError{code: CodeInvalidJSON, off: p.i, msg: msg}
}

func (p *parser) unexpected() error {
	if p.i >= len(p.b) {
		return p.syntax("unexpected end of JSON")
	}
	return p.syntax(fmt.Sprintf("invalid character %q", p.b[p.i]))
}

func (p *parser) skipWS() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte, 0 at the end (and
// for a NUL byte, which is never valid JSON there).
func (p *parser) peek() byte {
	p.skipWS()
	if p.i >= len(p.b) {
		return 0
	}
	return p.b[p.i]
}

// atEnd skips white space and reports whether the input is used up.
func (p *parser) atEnd() bool {
	p.skipWS()
	return p.i >= len(p.b)
}

// end checks that nothing but white space follows, then reports a value
// the hub cannot hold.
func (p *parser) end() error {
	if !p.atEnd() {
		return p.syntax(fmt.Sprintf("invalid character %q after top-level value", p.b[p.i]))
	}
	return p.valueErr
}

func (p *parser) value() (any, error) {
	switch c := p.peek(); c {
	case '{':
		return p.object()
	case '[':
		return p.array()
	case '"':
		return p.str(false)
	case 't':
		return true, p.literal("true")
	case 'f':
		return false, p.literal("false")
	case 'n':
		return nil, p.literal("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return p.number()
		}
		return nil, p.unexpected()
	}
}

func (p *parser) literal(lit string) error {
	if len(p.b)-p.i < len(lit) || string(p.b[p.i:p.i+len(lit)]) != lit {
		return p.syntax("invalid literal")
	}
	p.i += len(lit)
	return nil
}

func (p *parser) object() (map[string]any, error) {
	if p.depth++; p.depth > maxDepth {
		return nil, p.syntax("nesting too deep")
	}
	p.i++ // {
	m := make(map[string]any)
	if p.peek() == '}' {
		p.i++
		p.depth--
		return m, nil
	}
	for {
		if p.peek() != '"' {
			return nil, p.unexpected()
		}
		k, err := p.str(true)
		if err != nil {
			return nil, err
		}
		if p.peek() != ':' {
			return nil, p.unexpected()
		}
		p.i++
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		m[k] = v
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			p.depth--
			return m, nil
		default:
			return nil, p.unexpected()
		}
	}
}

func (p *parser) array() ([]any, error) {
	if p.depth++; p.depth > maxDepth {
		return nil, p.syntax("nesting too deep")
	}
	p.i++ // [
	a := []any{}
	if p.peek() == ']' {
		p.i++
		p.depth--
		return a, nil
	}
	for {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			p.depth--
			return a, nil
		default:
			return nil, p.unexpected()
		}
	}
}

// str parses a string at p.i (a '"'). Keys are interned when known.
func (p *parser) str(key bool) (string, error) {
	start := p.i + 1
	for j := start; j < len(p.b); {
		c := p.b[j]
		switch {
		case c == '"':
			p.i = j + 1
			raw := p.b[start:j]
			if key {
				if s, ok := p.intern[string(raw)]; ok {
					return s, nil
				}
			}
			return string(raw), nil
		case c == '\\':
			return p.strSlow(start, j)
		case c < 0x20:
			p.i = j
			return "", p.syntax("control character in string")
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(p.b[j:])
			if r == utf8.RuneError && size == 1 {
				return p.strSlow(start, j)
			}
			j += size
		}
	}
	p.i = len(p.b)
	return "", p.syntax("unexpected end of JSON in string")
}

// strSlow unquotes a string with escapes or invalid UTF-8, from j on, as
// encoding/json does.
func (p *parser) strSlow(start, j int) (string, error) {
	buf := make([]byte, 0, j-start+16)
	buf = append(buf, p.b[start:j]...)
	for j < len(p.b) {
		c := p.b[j]
		switch {
		case c == '"':
			p.i = j + 1
			return string(buf), nil
		case c == '\\':
			if j+1 >= len(p.b) {
				p.i = j
				return "", p.syntax("unexpected end of JSON in string")
			}
			switch e := p.b[j+1]; e {
			case '"', '\\', '/':
				buf = append(buf, e)
				j += 2
			case 'b':
				buf = append(buf, '\b')
				j += 2
			case 'f':
				buf = append(buf, '\f')
				j += 2
			case 'n':
				buf = append(buf, '\n')
				j += 2
			case 'r':
				buf = append(buf, '\r')
				j += 2
			case 't':
				buf = append(buf, '\t')
				j += 2
			case 'u':
				r := getu4(p.b[j:])
				if r < 0 {
					p.i = j
					return "", p.syntax("invalid \\u escape")
				}
				j += 6
				if utf16.IsSurrogate(r) {
					if dec := utf16.DecodeRune(r, getu4(p.b[j:])); dec != unicode.ReplacementChar {
						buf = utf8.AppendRune(buf, dec)
						j += 6
						break
					}
					r = unicode.ReplacementChar
				}
				buf = utf8.AppendRune(buf, r)
			default:
				p.i = j
				return "", p.syntax("invalid escape in string")
			}
		case c < 0x20:
			p.i = j
			return "", p.syntax("control character in string")
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			j++
		default:
			r, size := utf8.DecodeRune(p.b[j:])
			if r == utf8.RuneError && size == 1 {
				buf = utf8.AppendRune(buf, unicode.ReplacementChar)
			} else {
				buf = append(buf, p.b[j:j+size]...)
			}
			j += size
		}
	}
	p.i = len(p.b)
	return "", p.syntax("unexpected end of JSON in string")
}

// getu4 decodes \uXXXX at the start of b, -1 if there is none.
func getu4(b []byte) rune {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number parses a JSON number into a float64, exactly for integers of up to
// 15 digits without strconv.
func (p *parser) number() (float64, error) {
	b, start := p.b, p.i
	j := start
	if b[j] == '-' {
		j++
	}
	switch {
	case j >= len(b):
		p.i = j
		return 0, p.unexpected()
	case b[j] == '0':
		j++
	case isDigit(b[j]):
		for j < len(b) && isDigit(b[j]) {
			j++
		}
	default:
		p.i = j
		return 0, p.unexpected()
	}
	simple := true
	if j < len(b) && b[j] == '.' {
		simple = false
		j++
		if j >= len(b) || !isDigit(b[j]) {
			p.i = j
			return 0, p.unexpected()
		}
		for j < len(b) && isDigit(b[j]) {
			j++
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		simple = false
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if j >= len(b) || !isDigit(b[j]) {
			p.i = j
			return 0, p.unexpected()
		}
		for j < len(b) && isDigit(b[j]) {
			j++
		}
	}
	raw := b[start:j]
	p.i = j
	if neg := raw[0] == '-'; simple && len(raw) <= 15 {
		var n int64
		for _, c := range raw[btoi(neg):] {
			n = n*10 + int64(c-'0')
		}
		if neg {
			return -float64(n), nil
		}
		return float64(n), nil
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil && p.valueErr == nil {
		// Reported once the whole payload is known to be JSON.
		p.valueErr = &jsonError{code: CodeInvalidPayload, off: start, msg: fmt.Sprintf("number %s is out of range", raw)}
	}
	return f, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// appendJSON appends v, a value as the parser makes them, in the encoding
// encoding/json gives it (object keys sorted, HTML characters escaped).
func appendJSON(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case float64:
		return jsonenc.AppendFloat(b, x)
	case string:
		return appendString(b, x), nil
	case map[string]any:
		return appendObject(b, x)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return b, fmt.Errorf("encode %T: %w", v, err)
	}
	return append(b, raw...), nil
}

func appendObject(b []byte, m map[string]any) ([]byte, error) {
	var arr [32]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		var err error
		if b, err = appendJSON(b, m[k]); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does with HTML escaping. s is
// valid UTF-8 when it comes from the parser; invalid bytes become U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
