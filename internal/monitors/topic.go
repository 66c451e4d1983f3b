package monitors

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/devicehub/devicehub/events"
)

// Topic selects events: an event type pattern with * wildcards, optionally
// narrowed to device types, groups or device ids, in the spirit of the
// seed's "DataPoint[U]":
//
//   - every event
//     device_*                           every device_… event
//     device_data_received[type=sensor]  readings of sensors only
//     *[group=north|south,id=ws-1|ws-2]  everything of devices ws-1, ws-2 in north or south
//
// Narrowings of different keys must all hold; the values of one key are
// alternatives. Keys: type (device type), group, id (device id).
type Topic struct {
	Pattern     string
	DeviceTypes []string
	Groups      []string
	DeviceIDs   []string
}

const maxTopicLen = 1024

// ParseTopic parses a topic.
func ParseTopic(s string) (Topic, error) {
	var t Topic
	s = strings.TrimSpace(s)
	if s == "" {
		return t, errors.New("empty topic")
	}
	if len(s) > maxTopicLen {
		return t, fmt.Errorf("topic longer than %d bytes", maxTopicLen)
	}
	pattern, rest, narrowed := strings.Cut(s, "[")
	if pattern == "" {
		return t, fmt.Errorf("topic %q: no event type pattern before [", s)
	}
	for i, r := range pattern {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '*') {
			return t, fmt.Errorf("topic %q: %q at %d: an event type pattern has a-z, 0-9, _ and *", s, r, i)
		}
	}
	for strings.Contains(pattern, "**") {
		pattern = strings.ReplaceAll(pattern, "**", "*")
	}
	t.Pattern = pattern
	if !narrowed {
		return t, nil
	}
	body, ok := strings.CutSuffix(rest, "]")
	if !ok || strings.ContainsAny(body, "[]") {
		return t, fmt.Errorf("topic %q: narrowing must be one [key=value,...] at the end", s)
	}
	if strings.TrimSpace(body) == "" {
		return t, fmt.Errorf("topic %q: empty narrowing []", s)
	}
	for _, part := range strings.Split(body, ",") {
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok {
			return t, fmt.Errorf("topic %q: %q is not key=value", s, part)
		}
		var vals []string
		for _, x := range strings.Split(v, "|") {
			x = strings.TrimSpace(x)
			if x == "" {
				return t, fmt.Errorf("topic %q: empty value for %s", s, k)
			}
			if strings.ContainsAny(x, "=*") {
				return t, fmt.Errorf("topic %q: value %q of %s has = or *", s, x, k)
			}
			vals = append(vals, x)
		}
		var dst *[]string
		switch k {
		case "type":
			dst = &t.DeviceTypes
		case "group":
			dst = &t.Groups
		case "id", "device":
			dst = &t.DeviceIDs
		default:
			return t, fmt.Errorf("topic %q: unknown key %q (type, group or id)", s, k)
		}
		if *dst != nil {
			return t, fmt.Errorf("topic %q: key %s given twice (separate alternatives with |)", s, k)
		}
		slices.Sort(vals)
		*dst = slices.Compact(vals)
	}
	return t, nil
}

// String is the topic's canonical text (what ParseTopic reads back).
func (t Topic) String() string {
	var parts []string
	add := func(k string, vals []string) {
		if len(vals) > 0 {
			parts = append(parts, k+"="+strings.Join(vals, "|"))
		}
	}
	add("type", t.DeviceTypes)
	add("group", t.Groups)
	add("id", t.DeviceIDs)
	if len(parts) == 0 {
		return t.Pattern
	}
	return t.Pattern + "[" + strings.Join(parts, ",") + "]"
}

// needsGroup reports whether matching needs the device's group.
func (t *Topic) needsGroup() bool { return len(t.Groups) > 0 }

// Match reports whether e is selected. group is the event's device's
// group; it is asked only when the topic narrows by group.
func (t *Topic) Match(e *events.Event, group func() string) bool {
	if !Glob(t.Pattern, string(e.Type)) {
		return false
	}
	if len(t.DeviceTypes) > 0 && !slices.Contains(t.DeviceTypes, e.DeviceType) {
		return false
	}
	if len(t.DeviceIDs) > 0 && !slices.Contains(t.DeviceIDs, e.DeviceID) {
		return false
	}
	if len(t.Groups) > 0 && (e.DeviceID == "" || !slices.Contains(t.Groups, group())) {
		return false
	}
	return true
}

// Glob matches s against pattern, in which * stands for any run of
// characters (including none). It does not allocate.
func Glob(pattern, s string) bool {
	// The classic linear algorithm: remember the last star and where in s
	// it started matching, and backtrack there on a mismatch.
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matcher is a monitor's compiled topics.
type matcher struct {
	topics    []Topic
	needGroup bool
}

func newMatcher(topics []string) (*matcher, error) {
	m := &matcher{}
	for _, s := range topics {
		t, err := ParseTopic(s)
		if err != nil {
			return nil, err
		}
		m.needGroup = m.needGroup || t.needsGroup()
		m.topics = append(m.topics, t)
	}
	return m, nil
}

func (m *matcher) match(e *events.Event, groups func(id string) string) bool {
	var g string
	looked := false
	group := func() string {
		if !looked {
			g, looked = groups(e.DeviceID), true
		}
		return g
	}
	for i := range m.topics {
		if m.topics[i].Match(e, group) {
			return true
		}
	}
	return false
}

// SameTopics reports whether two topic lists select the same topics,
// whatever their order and spelling (the seed's get_monitor(topics)).
func SameTopics(a, b []string) bool {
	canon := func(ts []string) ([]string, bool) {
		out := make([]string, 0, len(ts))
		for _, s := range ts {
			t, err := ParseTopic(s)
			if err != nil {
				return nil, false
			}
			out = append(out, t.String())
		}
		slices.Sort(out)
		return slices.Compact(out), true
	}
	ca, ok1 := canon(a)
	cb, ok2 := canon(b)
	return ok1 && ok2 && slices.Equal(ca, cb)
}
