package monitors

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Condition selects monitors, as the seed's get_monitors(condition) does:
//
//	status = "DISABLED"
//	transport = "http" and status != "ACTIVE"
//	(format = "xml" or compression = "zlib") and not auto_replay_on_connect = true
//	batch_size >= 50 and topic = "device_*"
//
// Comparisons are attribute, operator (=, !=, <, <=, >, >=; == and <> are
// accepted too), value (a "double-quoted" string with \" and \\ escapes, a
// number, true or false); they combine with and, or, not and parentheses
// (and binds tighter than or). Strings compare case-sensitively, except
// the enumerations (status, transport, format, compression, method, ack)
// which compare case-insensitively. topic = "x" holds when one of the
// monitor's topics is x (in its canonical spelling); topic != "x" when
// none is. The seed's attribute names (monStatus, monTransportType, ...)
// are accepted as synonyms.
type Condition struct {
	root condNode
	text string
}

// String returns the condition's text as given.
func (c *Condition) String() string { return c.text }

// Match reports whether m satisfies the condition. A nil condition
// matches every monitor.
func (c *Condition) Match(m *Monitor) bool {
	if c == nil || c.root == nil {
		return true
	}
	return c.root.eval(m)
}

type condNode interface{ eval(m *Monitor) bool }

type andNode struct{ l, r condNode }
type orNode struct{ l, r condNode }
type notNode struct{ x condNode }

func (n andNode) eval(m *Monitor) bool { return n.l.eval(m) && n.r.eval(m) }
func (n orNode) eval(m *Monitor) bool  { return n.l.eval(m) || n.r.eval(m) }
func (n notNode) eval(m *Monitor) bool { return !n.x.eval(m) }

type attrKind int

const (
	kindString attrKind = iota
	kindEnum            // case-insensitive string
	kindNumber
	kindBool
	kindTime
	kindTopic
)

type attr struct {
	kind attrKind
	get  func(m *Monitor) any // string, float64, bool, *time.Time, []string
}

func timeOf(t *time.Time) any { return t }

var attrs = map[string]attr{
	"id":                     {kindString, func(m *Monitor) any { return m.ID }},
	"status":                 {kindEnum, func(m *Monitor) any { return string(m.Status) }},
	"transport":              {kindEnum, func(m *Monitor) any { return m.Transport }},
	"format":                 {kindEnum, func(m *Monitor) any { return m.Format }},
	"compression":            {kindEnum, func(m *Monitor) any { return m.Compression }},
	"method":                 {kindEnum, func(m *Monitor) any { return m.Method }},
	"ack":                    {kindEnum, func(m *Monitor) any { return m.Ack }},
	"url":                    {kindString, func(m *Monitor) any { return m.URL }},
	"description":            {kindString, func(m *Monitor) any { return m.Description }},
	"batch_size":             {kindNumber, func(m *Monitor) any { return float64(m.BatchSize) }},
	"batch_duration":         {kindNumber, func(m *Monitor) any { return m.Duration().Seconds() }},
	"connect_timeout_ms":     {kindNumber, func(m *Monitor) any { return float64(m.ConnectTimeoutMS) }},
	"response_timeout_ms":    {kindNumber, func(m *Monitor) any { return float64(m.ResponseTimeoutMS) }},
	"auto_replay_on_connect": {kindBool, func(m *Monitor) any { return m.AutoReplayOnConnect }},
	"last_connect":           {kindTime, func(m *Monitor) any { return timeOf(m.LastConnect) }},
	"last_sent":              {kindTime, func(m *Monitor) any { return timeOf(m.LastSent) }},
	"created_at":             {kindTime, func(m *Monitor) any { return timeOf(&m.CreatedAt) }},
	"topic":                  {kindTopic, func(m *Monitor) any { return m.Topics }},
}

// The seed's names.
var attrSynonyms = map[string]string{
	"monid": "id", "monstatus": "status", "montransporttype": "transport", "monformattype": "format",
	"moncompression": "compression", "monhttptransportmethod": "method", "montcpackoption": "ack",
	"monhttptransporturl": "url", "mondescription": "description", "monbatchsize": "batch_size",
	"monbatchduration": "batch_duration", "monautoreplayonconnect": "auto_replay_on_connect",
	"monlastconnect": "last_connect", "monlastsent": "last_sent", "montopic": "topic",
	"topics": "topic",
}

type cmpNode struct {
	name string
	a    attr
	op   string
	str  string
	num  float64
	b    bool
	t    time.Time
}

func (n *cmpNode) eval(m *Monitor) bool {
	v := n.a.get(m)
	switch n.a.kind {
	case kindString:
		return cmpOrdered(strings.Compare(v.(string), n.str), n.op)
	case kindEnum:
		return cmpOrdered(strings.Compare(strings.ToUpper(v.(string)), strings.ToUpper(n.str)), n.op)
	case kindNumber:
		x := v.(float64)
		c := 0
		if x < n.num {
			c = -1
		} else if x > n.num {
			c = 1
		}
		return cmpOrdered(c, n.op)
	case kindBool:
		eq := v.(bool) == n.b
		return eq == (n.op == "=")
	case kindTime:
		t := v.(*time.Time)
		if t == nil {
			// A time never set equals nothing and orders before everything.
			return n.op == "!=" || n.op == "<" || n.op == "<="
		}
		return cmpOrdered(t.Compare(n.t), n.op)
	case kindTopic:
		has := false
		for _, s := range v.([]string) {
			if s == n.str {
				has = true
				break
			}
		}
		return has == (n.op == "=")
	}
	return false
}

func cmpOrdered(c int, op string) bool {
	switch op {
	case "=":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return false
}

// MaxCondition bounds the length of a condition.
const MaxCondition = 4096

const maxCondDepth = 50

// ParseCondition parses a condition. An empty text is the condition every
// monitor satisfies (nil). Its errors wrap ErrInvalid and say where the
// text is wrong.
func ParseCondition(text string) (*Condition, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	if len(text) > MaxCondition {
		return nil, condErr(0, "longer than %d bytes", MaxCondition)
	}
	toks, err := lexCondition(text)
	if err != nil {
		return nil, err
	}
	p := &condParser{toks: toks}
	root, err := p.or(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, condErr(t.pos, "unexpected %s", t)
	}
	return &Condition{root: root, text: text}, nil
}

func condErr(pos int, format string, args ...any) error {
	return &FieldError{Field: "condition", Msg: fmt.Sprintf("at %d: ", pos+1) + fmt.Sprintf(format, args...)}
}

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokString
	tokNumber
	tokOp
	tokLParen
	tokRParen
)

type token struct {
	kind tokKind
	text string
	pos  int
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "end of condition"
	case tokString:
		return strconv.Quote(t.text)
	}
	return "'" + t.text + "'"
}

func lexCondition(s string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			toks = append(toks, token{tokLParen, "(", i})
			i++
		case c == ')':
			toks = append(toks, token{tokRParen, ")", i})
			i++
		case c == '"' || c == '\'':
			quote := c
			start := i
			i++
			var b strings.Builder
			closed := false
			for i < len(s) {
				if s[i] == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == quote {
					closed = true
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, condErr(start, "string not closed")
			}
			toks = append(toks, token{tokString, b.String(), start})
		case c == '=' || c == '!' || c == '<' || c == '>':
			start := i
			op := string(c)
			if i+1 < len(s) && (s[i+1] == '=' || c == '<' && s[i+1] == '>') {
				op += string(s[i+1])
			}
			i += len(op)
			switch op {
			case "==":
				op = "="
			case "<>":
				op = "!="
			case "!":
				return nil, condErr(start, "'!' must be followed by '='")
			}
			toks = append(toks, token{tokOp, op, start})
		case c == '-' || c == '+' || c == '.' || c >= '0' && c <= '9':
			start := i
			i++
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
				(s[i] == '-' || s[i] == '+') && (s[i-1] == 'e' || s[i-1] == 'E')) {
				i++
			}
			toks = append(toks, token{tokNumber, s[start:i], start})
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			start := i
			for i < len(s) && (s[i] == '_' || s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9') {
				i++
			}
			toks = append(toks, token{tokIdent, s[start:i], start})
		default:
			return nil, condErr(i, "unexpected character %q", rune(c))
		}
	}
	return append(toks, token{tokEOF, "", len(s)}), nil
}

type condParser struct {
	toks []token
	i    int
}

func (p *condParser) peek() token { return p.toks[p.i] }
func (p *condParser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func isWord(t token, w string) bool { return t.kind == tokIdent && strings.EqualFold(t.text, w) }

func (p *condParser) or(depth int) (condNode, error) {
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for isWord(p.peek(), "or") {
		p.next()
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = orNode{l, r}
	}
	return l, nil
}

func (p *condParser) and(depth int) (condNode, error) {
	l, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for isWord(p.peek(), "and") {
		p.next()
		r, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		l = andNode{l, r}
	}
	return l, nil
}

func (p *condParser) unary(depth int) (condNode, error) {
	if depth > maxCondDepth {
		return nil, condErr(p.peek().pos, "nested deeper than %d", maxCondDepth)
	}
	t := p.peek()
	if isWord(t, "not") {
		p.next()
		x, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return notNode{x}, nil
	}
	if t.kind == tokLParen {
		p.next()
		x, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if r := p.next(); r.kind != tokRParen {
			return nil, condErr(r.pos, "expected ')', got %s", r)
		}
		return x, nil
	}
	return p.comparison()
}

func (p *condParser) comparison() (condNode, error) {
	t := p.next()
	if t.kind != tokIdent {
		return nil, condErr(t.pos, "expected an attribute, got %s", t)
	}
	name := strings.ToLower(t.text)
	if syn, ok := attrSynonyms[name]; ok {
		name = syn
	}
	a, ok := attrs[name]
	if !ok {
		return nil, condErr(t.pos, "unknown attribute %q", t.text)
	}
	op := p.next()
	if op.kind != tokOp {
		return nil, condErr(op.pos, "expected an operator (=, !=, <, <=, >, >=) after %s, got %s", t.text, op)
	}
	v := p.next()
	n := &cmpNode{name: name, a: a, op: op.text}
	ordered := op.text != "=" && op.text != "!="
	switch a.kind {
	case kindString, kindEnum, kindTopic:
		if v.kind != tokString {
			return nil, condErr(v.pos, "%s compares with a \"string\", got %s", name, v)
		}
		if a.kind == kindTopic {
			if ordered {
				return nil, condErr(op.pos, "topic takes = or != only")
			}
			tp, err := ParseTopic(v.text)
			if err != nil {
				return nil, condErr(v.pos, "%v", err)
			}
			v.text = tp.String()
		}
		n.str = v.text
	case kindNumber:
		if v.kind != tokNumber {
			return nil, condErr(v.pos, "%s compares with a number, got %s", name, v)
		}
		f, err := strconv.ParseFloat(v.text, 64)
		if err != nil {
			return nil, condErr(v.pos, "bad number %q", v.text)
		}
		n.num = f
	case kindBool:
		if ordered {
			return nil, condErr(op.pos, "%s takes = or != only", name)
		}
		switch {
		case isWord(v, "true"):
			n.b = true
		case isWord(v, "false"):
		default:
			return nil, condErr(v.pos, "%s compares with true or false, got %s", name, v)
		}
	case kindTime:
		if v.kind != tokString {
			return nil, condErr(v.pos, "%s compares with an RFC 3339 time in quotes, got %s", name, v)
		}
		tm, err := time.Parse(time.RFC3339Nano, v.text)
		if err != nil {
			return nil, condErr(v.pos, "%s: %q is not an RFC 3339 time", name, v.text)
		}
		n.t = tm
	}
	return n, nil
}
