package alerts

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode"
)

// Severities, most severe first.
var Severities = []string{"critical", "major", "minor", "warning", "info"}

// DefaultRepeat is how often an open alert whose rule keeps firing is
// written and announced again (alert_updated) when its rule says nothing.
const DefaultRepeat = time.Minute

// RuleSpec is a rule as an operator writes it, in the configuration file
// (alerts.rules, per device type) or in the API's body. ParseRule checks it.
type RuleSpec struct {
	// Name is unique among all rules.
	Name string `json:"name" yaml:"name"`
	// DeviceType is the type of the devices the rule watches (in the
	// configuration file, the key the rule is listed under).
	DeviceType string `json:"device_type,omitempty" yaml:"device_type"`
	// When is the condition: see the package documentation.
	When string `json:"when" yaml:"when"`
	// Clear is the condition that ends an alert of a reading condition on
	// the same value (hysteresis); "" means "when no longer holds".
	Clear string `json:"clear,omitempty" yaml:"clear"`
	// For is how long (in the readings' own timestamps) a reading condition
	// must hold before the alert is raised; it is pending meanwhile.
	For string `json:"for,omitempty" yaml:"for"`
	// Count is "N in D": the reading condition must hold on N readings
	// within D.
	Count string `json:"count,omitempty" yaml:"count"`
	// Severity is one of Severities (default warning).
	Severity string `json:"severity,omitempty" yaml:"severity"`
	// Message is a Go text/template with .Device (.ID, .Name, .Type,
	// .Group, .Metadata), .Value, .Rule, .Severity and .Labels.
	Message string            `json:"message,omitempty" yaml:"message"`
	Labels  map[string]string `json:"labels,omitempty" yaml:"labels"`
	// Repeat is the least time between two alert_updated events of one
	// alert (default 1m; 0s: every time the rule fires again).
	Repeat string `json:"repeat,omitempty" yaml:"repeat"`
}

// Kind is what a rule watches.
type Kind uint8

// Kinds of rules.
const (
	KindReading  Kind = iota // a field of readings: comparison, range, rate of change
	KindOffline              // offline > D
	KindFlapping             // disconnects >= N in D
	KindStatus               // status == value
	KindRejected             // rejected > N in D
	KindNoData               // nodata(field) > D
)

var kindNames = [...]string{"reading", "offline", "flapping", "status", "rejected", "nodata"}

func (k Kind) String() string { return kindNames[k] }

// Rule is a parsed, valid rule.
type Rule struct {
	Spec       RuleSpec
	Name       string
	DeviceType string
	Kind       Kind
	When       Cond
	Clear      *Cond // reading rules only; nil: when no longer holds
	For        time.Duration
	CountN     int
	CountIn    time.Duration
	Severity   string
	Repeat     time.Duration
	// Source is "config" or "api".
	Source string
	msg    *template.Template
}

// Cond is a parsed condition.
type Cond struct {
	Kind  Kind
	Field string
	// Rate compares the change per RateUnit of Field between two readings.
	Rate     bool
	RateUnit time.Duration
	Op       string // > >= < <= == != outside inside
	Num      float64
	Str      string
	IsStr    bool
	IsBool   bool
	Bool     bool
	Lo, Hi   float64
	Dur      time.Duration // offline, nodata; the window of flapping and rejected
	N        int           // flapping: fires at N in Dur; rejected: fires above N in Dur
}

// ErrInvalid is wrapped by every error of a bad rule, silence or query.
var ErrInvalid = errors.New("invalid")

// RuleError is a problem with one field of a rule; Pos is the 1-based
// column in the field's text where the problem is (0: the whole field).
type RuleError struct {
	Rule  string
	Field string
	Pos   int
	Msg   string
}

func (e *RuleError) Error() string {
	var b strings.Builder
	if e.Rule != "" {
		fmt.Fprintf(&b, "rule %q: ", e.Rule)
	}
	b.WriteString(e.Field)
	b.WriteString(": ")
	if e.Pos > 0 {
		fmt.Fprintf(&b, "at column %d: ", e.Pos)
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *RuleError) Unwrap() error { return ErrInvalid }

var (
	ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)
	labelRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
)

// ParseRule checks spec and returns the rule it describes. Every error is a
// *RuleError naming the field (and, in a condition, the column).
func ParseRule(spec RuleSpec) (*Rule, error) {
	bad := func(field string, pos int, format string, args ...any) error {
		return &RuleError{Rule: spec.Name, Field: field, Pos: pos, Msg: fmt.Sprintf(format, args...)}
	}
	if !ruleNameRE.MatchString(spec.Name) {
		return nil, bad("name", 0, "must match %s", ruleNameRE)
	}
	if spec.DeviceType == "" {
		return nil, bad("device_type", 0, "required")
	}
	r := &Rule{Spec: spec, Name: spec.Name, DeviceType: spec.DeviceType, Severity: "warning", Repeat: DefaultRepeat}
	if strings.TrimSpace(spec.When) == "" {
		return nil, bad("when", 0, "required")
	}
	c, pos, err := parseCond(spec.When)
	if err != nil {
		return nil, bad("when", pos, "%s", err)
	}
	r.When, r.Kind = c, c.Kind
	if spec.Clear != "" {
		if r.Kind != KindReading {
			return nil, bad("clear", 0, "only reading conditions have a clear condition (a %s rule clears by itself)", r.Kind)
		}
		cc, pos, err := parseCond(spec.Clear)
		if err != nil {
			return nil, bad("clear", pos, "%s", err)
		}
		if cc.Kind != KindReading || cc.Field != c.Field || cc.Rate != c.Rate {
			return nil, bad("clear", 1, "must be a condition on the same value as when (%s)", c.value())
		}
		r.Clear = &cc
	}
	if spec.For != "" {
		d, err := parseDuration(spec.For)
		if err != nil {
			return nil, bad("for", 0, "%s", err)
		}
		if r.Kind != KindReading {
			return nil, bad("for", 0, "only reading conditions take for (a %s condition names its own duration)", r.Kind)
		}
		r.For = d
	}
	if spec.Count != "" {
		if r.Kind != KindReading {
			return nil, bad("count", 0, "only reading conditions take count")
		}
		if r.For > 0 {
			return nil, bad("count", 0, "use for or count, not both")
		}
		n, d, pos, err := parseCount(spec.Count)
		if err != nil {
			return nil, bad("count", pos, "%s", err)
		}
		r.CountN, r.CountIn = n, d
	}
	if spec.Severity != "" {
		if !slicesContains(Severities, spec.Severity) {
			return nil, bad("severity", 0, "must be one of %s", strings.Join(Severities, ", "))
		}
		r.Severity = spec.Severity
	}
	if spec.Repeat != "" {
		d, err := parseDuration(spec.Repeat)
		if err != nil {
			return nil, bad("repeat", 0, "%s", err)
		}
		r.Repeat = d
	}
	if len(spec.Message) > 1024 {
		return nil, bad("message", 0, "longer than 1024 bytes")
	}
	if spec.Message != "" {
		t, err := template.New(spec.Name).Option("missingkey=zero").Parse(spec.Message)
		if err != nil {
			return nil, bad("message", 0, "%s", strings.TrimPrefix(err.Error(), "template: "))
		}
		r.msg = t
	}
	if len(spec.Labels) > 32 {
		return nil, bad("labels", 0, "at most 32")
	}
	keys := make([]string, 0, len(spec.Labels))
	for k := range spec.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !labelRE.MatchString(k) {
			return nil, bad("labels."+k, 0, "a label name must match %s", labelRE)
		}
		if len(spec.Labels[k]) > 256 {
			return nil, bad("labels."+k, 0, "longer than 256 bytes")
		}
	}
	return r, nil
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (like 90s, 5m, 1h)", s)
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	if d > 30*24*time.Hour {
		return 0, errors.New("at most 720h")
	}
	return d, nil
}

// parseCount parses "N in D".
func parseCount(s string) (int, time.Duration, int, error) {
	l := &lexer{src: s}
	t := l.next()
	if t.kind != tokNumber || t.num != float64(int(t.num)) || t.num < 1 || t.num > 1000 {
		return 0, 0, t.pos, errors.New(`expected "N in D" with N a whole number from 1 to 1000`)
	}
	n := int(t.num)
	if t = l.next(); t.kind != tokIdent || t.text != "in" {
		return 0, 0, t.pos, errors.New(`expected "in" after the count`)
	}
	t = l.next()
	if t.kind != tokDuration || t.dur <= 0 {
		return 0, 0, t.pos, errors.New("expected a positive duration (like 10m)")
	}
	d := t.dur
	if t = l.next(); t.kind != tokEOF {
		return 0, 0, t.pos, fmt.Errorf("unexpected %s", t)
	}
	if l.err != nil {
		return 0, 0, l.errPos, l.err
	}
	return n, d, 0, nil
}

func (c *Cond) value() string {
	if c.Rate {
		return "rate(" + c.Field + ")"
	}
	return c.Field
}

// String writes the condition back in the rule language.
func (c *Cond) String() string {
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	switch c.Kind {
	case KindOffline:
		return "offline > " + c.Dur.String()
	case KindFlapping:
		return fmt.Sprintf("disconnects >= %d in %s", c.N, c.Dur)
	case KindStatus:
		return "status " + c.Op + " " + strconv.Quote(c.Str)
	case KindRejected:
		return fmt.Sprintf("rejected > %d in %s", c.N, c.Dur)
	case KindNoData:
		return "nodata(" + c.Field + ") > " + c.Dur.String()
	}
	v := c.value()
	switch {
	case c.Op == "outside" || c.Op == "inside":
		return v + " " + c.Op + " " + num(c.Lo) + ".." + num(c.Hi)
	case c.IsStr:
		return v + " " + c.Op + " " + strconv.Quote(c.Str)
	case c.IsBool:
		return v + " " + c.Op + " " + strconv.FormatBool(c.Bool)
	case c.Rate && c.RateUnit != time.Second:
		u := map[time.Duration]string{time.Minute: "m", time.Hour: "h"}[c.RateUnit]
		return v + " " + c.Op + " " + num(c.Num) + "/" + u
	}
	return v + " " + c.Op + " " + num(c.Num)
}

// The condition language:
//
//	FIELD OP NUMBER | FIELD (==|!=) "TEXT"|true|false
//	FIELD outside LO..HI | FIELD inside LO..HI
//	rate(FIELD) OP NUMBER[/s|/m|/h]       change per second (minute, hour)
//	offline > DURATION
//	disconnects >= N in DURATION          flapping
//	status (==|!=) VALUE
//	rejected > N in DURATION              refused messages
//	nodata(FIELD) > DURATION
//
// OP is one of > >= < <= == !=. offline, disconnects, status, rejected,
// nodata and rate are keywords, not field names.
func parseCond(src string) (Cond, int, error) {
	if len(src) > 512 {
		return Cond{}, 0, errors.New("longer than 512 bytes")
	}
	p := &parser{l: &lexer{src: src}}
	c, err := p.cond()
	if err == nil {
		if t := p.next(); t.kind != tokEOF {
			err = p.fail(t, "unexpected %s after the condition", t)
		}
	}
	if p.l.err != nil {
		return Cond{}, p.l.errPos, p.l.err
	}
	if err != nil {
		return Cond{}, p.errPos, err
	}
	return c, 0, nil
}

type parser struct {
	l      *lexer
	peeked *token
	errPos int
}

func (p *parser) next() token {
	if p.peeked != nil {
		t := *p.peeked
		p.peeked = nil
		return t
	}
	return p.l.next()
}

func (p *parser) peek() token {
	if p.peeked == nil {
		t := p.l.next()
		p.peeked = &t
	}
	return *p.peeked
}

func (p *parser) fail(t token, format string, args ...any) error {
	p.errPos = t.pos
	return fmt.Errorf(format, args...)
}

func (p *parser) op(allowed ...string) (string, error) {
	t := p.next()
	if t.kind == tokOp && slicesContains(allowed, t.text) {
		return t.text, nil
	}
	return "", p.fail(t, "expected %s, found %s", strings.Join(allowed, " or "), t)
}

func (p *parser) duration() (time.Duration, error) {
	t := p.next()
	if t.kind != tokDuration || t.dur <= 0 {
		return 0, p.fail(t, "expected a positive duration (like 90s, 5m, 1h), found %s", t)
	}
	return t.dur, nil
}

func (p *parser) count() (int, error) {
	t := p.next()
	if t.kind != tokNumber || t.num != float64(int(t.num)) || t.num < 0 || t.num > 100000 {
		return 0, p.fail(t, "expected a whole number from 0 to 100000, found %s", t)
	}
	return int(t.num), nil
}

func (p *parser) keyword(word string) error {
	t := p.next()
	if t.kind != tokIdent || t.text != word {
		return p.fail(t, "expected %q, found %s", word, t)
	}
	return nil
}

func (p *parser) field() (string, error) {
	if t := p.next(); t.kind != tokOp || t.text != "(" {
		return "", p.fail(t, "expected (, found %s", t)
	}
	t := p.next()
	if t.kind != tokIdent || keywords[t.text] {
		return "", p.fail(t, "expected a field name, found %s", t)
	}
	if c := p.next(); c.kind != tokOp || c.text != ")" {
		return "", p.fail(c, "expected ), found %s", c)
	}
	return t.text, nil
}

var keywords = map[string]bool{"offline": true, "disconnects": true, "status": true, "rejected": true, "nodata": true,
	"rate": true, "outside": true, "inside": true, "in": true, "true": true, "false": true}

func (p *parser) cond() (Cond, error) {
	t := p.next()
	if t.kind != tokIdent {
		return Cond{}, p.fail(t, "expected a field name or offline, disconnects, status, rejected, nodata(FIELD), rate(FIELD); found %s", t)
	}
	var c Cond
	var err error
	switch t.text {
	case "offline":
		c.Kind = KindOffline
		if _, err = p.op(">"); err != nil {
			return c, err
		}
		c.Dur, err = p.duration()
		return c, err
	case "disconnects":
		c.Kind = KindFlapping
		op, err := p.op(">=", ">")
		if err != nil {
			return c, err
		}
		if c.N, err = p.count(); err != nil {
			return c, err
		}
		if op == ">" {
			c.N++
		}
		if c.N < 1 {
			return c, p.fail(t, "disconnects must be compared with at least 1")
		}
		if err = p.keyword("in"); err != nil {
			return c, err
		}
		c.Dur, err = p.duration()
		return c, err
	case "rejected":
		c.Kind = KindRejected
		op, err := p.op(">", ">=")
		if err != nil {
			return c, err
		}
		if c.N, err = p.count(); err != nil {
			return c, err
		}
		if op == ">=" {
			if c.N < 1 {
				return c, p.fail(t, "rejected >= 0 always holds")
			}
			c.N--
		}
		if err = p.keyword("in"); err != nil {
			return c, err
		}
		c.Dur, err = p.duration()
		return c, err
	case "status":
		c.Kind = KindStatus
		if c.Op, err = p.op("==", "!="); err != nil {
			return c, err
		}
		v := p.next()
		if v.kind != tokString && v.kind != tokIdent {
			return c, p.fail(v, "expected a status (like error or \"error\"), found %s", v)
		}
		c.Str, c.IsStr = v.text, true
		return c, nil
	case "nodata":
		c.Kind = KindNoData
		if c.Field, err = p.field(); err != nil {
			return c, err
		}
		if _, err = p.op(">"); err != nil {
			return c, err
		}
		c.Dur, err = p.duration()
		return c, err
	case "rate":
		if n := p.peek(); n.kind == tokOp && n.text == "(" {
			if c.Field, err = p.field(); err != nil {
				return c, err
			}
			c.Rate, c.RateUnit = true, time.Second
			break
		}
		fallthrough
	default:
		if keywords[t.text] {
			return c, p.fail(t, "%q is a keyword, not a field name", t.text)
		}
		c.Field = t.text
	}
	c.Kind = KindReading
	o := p.next()
	switch {
	case o.kind == tokIdent && (o.text == "outside" || o.text == "inside"):
		c.Op = o.text
		lo := p.next()
		if lo.kind != tokNumber {
			return c, p.fail(lo, "expected the range's low bound, found %s", lo)
		}
		if d := p.next(); d.kind != tokOp || d.text != ".." {
			return c, p.fail(d, "expected .. between the bounds, found %s", d)
		}
		hi := p.next()
		if hi.kind != tokNumber {
			return c, p.fail(hi, "expected the range's high bound, found %s", hi)
		}
		if hi.num < lo.num {
			return c, p.fail(hi, "the high bound is below the low bound")
		}
		c.Lo, c.Hi = lo.num, hi.num
		return c, nil
	case o.kind == tokOp && slicesContains([]string{">", ">=", "<", "<=", "==", "!="}, o.text):
		c.Op = o.text
	default:
		return c, p.fail(o, "expected >, >=, <, <=, ==, !=, outside or inside; found %s", o)
	}
	v := p.next()
	switch {
	case v.kind == tokNumber:
		c.Num = v.num
	case (v.kind == tokString || v.kind == tokIdent && (v.text == "true" || v.text == "false")) && !c.Rate:
		if c.Op != "==" && c.Op != "!=" {
			return c, p.fail(v, "text and true/false compare only with == and !=")
		}
		if v.kind == tokString {
			c.Str, c.IsStr = v.text, true
		} else {
			c.Bool, c.IsBool = v.text == "true", true
		}
		return c, nil
	default:
		return c, p.fail(v, "expected a number, found %s", v)
	}
	if c.Rate {
		if n := p.peek(); n.kind == tokOp && n.text == "/" {
			p.next()
			u := p.next()
			switch {
			case u.kind == tokIdent && u.text == "s":
				c.RateUnit = time.Second
			case u.kind == tokIdent && (u.text == "m" || u.text == "min"):
				c.RateUnit = time.Minute
			case u.kind == tokIdent && u.text == "h":
				c.RateUnit = time.Hour
			default:
				return c, p.fail(u, "expected s, m or h after /, found %s", u)
			}
		}
	}
	return c, nil
}

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokIdent
	tokNumber
	tokDuration
	tokString
	tokOp
)

type token struct {
	kind tokKind
	text string
	num  float64
	dur  time.Duration
	pos  int // 1-based column
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "the end"
	case tokString:
		return strconv.Quote(t.text)
	}
	return strconv.Quote(t.text)
}

type lexer struct {
	src    string
	i      int
	err    error
	errPos int
}

func (l *lexer) fail(pos int, format string, args ...any) token {
	if l.err == nil {
		l.err, l.errPos = fmt.Errorf(format, args...), pos
	}
	l.i = len(l.src)
	return token{kind: tokEOF, pos: pos}
}

func isIdentStart(c byte) bool { return c == '_' || c < 0x80 && unicode.IsLetter(rune(c)) }
func isIdentChar(c byte) bool  { return isIdentStart(c) || c >= '0' && c <= '9' || c == '.' || c == '-' }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }

func (l *lexer) next() token {
	for l.i < len(l.src) && (l.src[l.i] == ' ' || l.src[l.i] == '\t') {
		l.i++
	}
	if l.i >= len(l.src) {
		return token{kind: tokEOF, pos: l.i + 1}
	}
	start := l.i
	pos := start + 1
	c := l.src[l.i]
	switch {
	case isIdentStart(c):
		l.i++
		for l.i < len(l.src) && isIdentChar(l.src[l.i]) {
			// A field name may hold dots, but not "..".
			if l.src[l.i] == '.' && l.i+1 < len(l.src) && l.src[l.i+1] == '.' {
				break
			}
			l.i++
		}
		if l.i-start > 128 {
			return l.fail(pos, "name longer than 128 bytes")
		}
		return token{kind: tokIdent, text: l.src[start:l.i], pos: pos}
	case isDigit(c) || (c == '-' || c == '+') && l.i+1 < len(l.src) && (isDigit(l.src[l.i+1]) || l.src[l.i+1] == '.'), c == '.' && l.i+1 < len(l.src) && isDigit(l.src[l.i+1]):
		l.i++
		for l.i < len(l.src) {
			d := l.src[l.i]
			switch {
			case isDigit(d):
			case d == '.' && !(l.i+1 < len(l.src) && l.src[l.i+1] == '.'):
			case (d == 'e' || d == 'E') && l.i+1 < len(l.src) && (isDigit(l.src[l.i+1]) || l.src[l.i+1] == '-' || l.src[l.i+1] == '+'):
				l.i++
			default:
				goto done
			}
			l.i++
		}
	done:
		num := l.src[start:l.i]
		// A number followed by a unit is a duration: 90s, 5m, 1h30m.
		if l.i < len(l.src) && isIdentStart(l.src[l.i]) {
			for l.i < len(l.src) && (isIdentStart(l.src[l.i]) || isDigit(l.src[l.i]) || l.src[l.i] == '.') {
				l.i++
			}
			text := l.src[start:l.i]
			d, err := time.ParseDuration(text)
			if err != nil {
				return l.fail(pos, "%q is not a number or a duration", text)
			}
			return token{kind: tokDuration, text: text, dur: d, pos: pos}
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return l.fail(pos, "%q is not a number", num)
		}
		return token{kind: tokNumber, text: num, num: f, pos: pos}
	case c == '"':
		l.i++
		for l.i < len(l.src) && l.src[l.i] != '"' {
			if l.src[l.i] == '\\' {
				l.i++
			}
			l.i++
		}
		if l.i >= len(l.src) {
			return l.fail(pos, "unterminated string")
		}
		l.i++
		s, err := strconv.Unquote(l.src[start:l.i])
		if err != nil {
			return l.fail(pos, "bad string %s", l.src[start:l.i])
		}
		return token{kind: tokString, text: s, pos: pos}
	}
	for _, op := range []string{">=", "<=", "==", "!=", "..", ">", "<", "(", ")", "/"} {
		if strings.HasPrefix(l.src[l.i:], op) {
			l.i += len(op)
			return token{kind: tokOp, text: op, pos: pos}
		}
	}
	return l.fail(pos, "unexpected character %q", rune(c))
}
