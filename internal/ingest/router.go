package ingest

import (
	"context"
	"fmt"
	"strings"
)

// maxParams bounds the parameters of one pattern so that Params needs no
// allocation.
const maxParams = 8

// Params are the values a topic gave to the {name} segments of the pattern
// it matched. The values are substrings of the topic.
type Params struct {
	n    int
	keys [maxParams]string
	vals [maxParams]string
}

// Get returns the value of the named parameter, "" if the pattern has none.
func (p *Params) Get(name string) string {
	for i := 0; i < p.n; i++ {
		if p.keys[i] == name {
			return p.vals[i]
		}
	}
	return ""
}

// Len returns the number of parameters.
func (p *Params) Len() int { return p.n }

func (p *Params) reset() { *p = Params{} }

// segment is one level of a pattern: a literal, or a {param} when param is
// set.
type segment struct {
	lit   string
	param string
}

type route struct {
	pattern string
	segs    []segment
	h       Handler
}

// Router dispatches a message to the handler of the first pattern its topic
// matches, in the order the patterns were added. A pattern is a topic whose
// levels are literals or {name} parameters; a parameter matches exactly one
// non-empty level. Router is itself a Handler: it sets Msg.Params and calls
// the route's handler, or refuses the message with unknown_topic.
//
// Routes are added before the router is used; matching is safe for
// concurrent use and does not allocate.
type Router struct {
	routes []route
}

// NewRouter returns a router without routes.
func NewRouter() *Router { return &Router{} }

// Route adds pattern with handler h wrapped in mw (mw[0] outermost). It
// reports an ErrBadPattern error for a malformed pattern or one added
// before.
func (r *Router) Route(pattern string, h Handler, mw ...Middleware) error {
	segs, err := parsePattern(pattern)
	if err != nil {
		return err
	}
	for _, rt := range r.routes {
		if sameShape(rt.segs, segs) {
			return fmt.Errorf("%w %q: same levels as %q", ErrBadPattern, pattern, rt.pattern)
		}
	}
	r.routes = append(r.routes, route{pattern: pattern, segs: segs, h: Chain(h, mw...)})
	return nil
}

// sameShape reports whether two patterns match the same topics.
func sameShape(a, b []segment) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if (a[i].param != "") != (b[i].param != "") || a[i].lit != b[i].lit {
			return false
		}
	}
	return true
}

func parsePattern(pattern string) ([]segment, error) {
	if pattern == "" {
		return nil, fmt.Errorf("%w: empty pattern", ErrBadPattern)
	}
	levels := strings.Split(pattern, "/")
	segs := make([]segment, 0, len(levels))
	params := 0
	for _, l := range levels {
		switch {
		case l == "":
			return nil, fmt.Errorf("%w %q: empty level", ErrBadPattern, pattern)
		case strings.ContainsAny(l, "+#\x00"):
			return nil, fmt.Errorf("%w %q: MQTT wildcards are not patterns, use {name}", ErrBadPattern, pattern)
		case l[0] == '{' && l[len(l)-1] == '}':
			name := l[1 : len(l)-1]
			if !validParamName(name) {
				return nil, fmt.Errorf("%w %q: bad parameter name %q", ErrBadPattern, pattern, name)
			}
			for _, s := range segs {
				if s.param == name {
					return nil, fmt.Errorf("%w %q: parameter %q twice", ErrBadPattern, pattern, name)
				}
			}
			params++
			if params > maxParams {
				return nil, fmt.Errorf("%w %q: more than %d parameters", ErrBadPattern, pattern, maxParams)
			}
			segs = append(segs, segment{param: name})
		case strings.ContainsAny(l, "{}"):
			return nil, fmt.Errorf("%w %q: a parameter must be a whole level", ErrBadPattern, pattern)
		default:
			segs = append(segs, segment{lit: l})
		}
	}
	return segs, nil
}

func validParamName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Match returns the handler of the first route topic matches and fills ps
// with its parameters.
func (r *Router) Match(topic string, ps *Params) (Handler, bool) {
	for i := range r.routes {
		if match(r.routes[i].segs, topic, ps) {
			return r.routes[i].h, true
		}
	}
	ps.reset()
	return nil, false
}

func match(segs []segment, topic string, ps *Params) bool {
	ps.reset()
	rest := topic
	for i, s := range segs {
		var level string
		j := strings.IndexByte(rest, '/')
		switch {
		case j >= 0 && i == len(segs)-1:
			return false // the topic has more levels
		case j >= 0:
			level, rest = rest[:j], rest[j+1:]
		case i < len(segs)-1:
			return false // the topic has fewer levels
		default:
			level, rest = rest, ""
		}
		if s.param == "" {
			if level != s.lit {
				return false
			}
			continue
		}
		if level == "" {
			return false
		}
		ps.keys[ps.n], ps.vals[ps.n] = s.param, level
		ps.n++
	}
	return true
}

// Handle dispatches m by its topic.
func (r *Router) Handle(ctx context.Context, m *Msg) error {
	h, ok := r.Match(m.Req.Topic, &m.Params)
	if !ok {
		return &Rejection{Code: CodeUnknownTopic, Reason: "no handler for topic " + m.Req.Topic}
	}
	return h.Handle(ctx, m)
}
