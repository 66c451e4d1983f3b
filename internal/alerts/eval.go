package alerts

import (
	"encoding/json"
	"math"
	"time"
)

// phase is where a (rule, device) pair is in the alert lifecycle.
type phase uint8

const (
	idle    phase = iota // no open alert
	pending              // the condition holds, its for period has not passed
	firing               // an active or acknowledged alert
)

// transition is what an input did to a (rule, device) pair.
type transition uint8

const (
	tNone    transition = iota
	tPending            // a pending alert starts (for: rules)
	tDrop               // a pending alert ends before its for period passed
	tRaise              // an alert becomes active
	tRefire             // an open alert's condition held again
	tClear              // an open alert's condition ended
)

var transitionNames = [...]string{"none", "pending", "drop", "raise", "refire", "clear"}

func (t transition) String() string { return transitionNames[t] }

// ruleState is the evaluation state of one (rule, device). Its size is the
// memory the evaluator needs per pair (see BenchmarkStateMemory).
type ruleState struct {
	phase phase
	// hold: an operator cleared the alert while its condition held; the
	// pair waits for the condition to end before it can fire again.
	hold    bool
	hasPrev bool
	since   int64 // pending since (reading time, Unix ns)
	prevT   int64 // the previous reading (rate of change)
	prevV   float64
	// deadline is the time (Unix ns) of the pair's timer: offline, no data,
	// or the end of a window; 0 for none.
	deadline int64
	armed    int64      // the deadline of the pair's timer in the heap, 0 for none
	hits     []int64    // times of the hits in the count window (count, flapping, rejected)
	alert    *openAlert // the open alert (pending, active or acknowledged)
}

// addHit records a hit at t, forgets the ones older than window before t,
// and keeps at most keep of them.
func (st *ruleState) addHit(t int64, window time.Duration, keep int) int {
	st.hits = append(st.hits, t)
	return st.prune(t, window, keep)
}

func (st *ruleState) prune(now int64, window time.Duration, keep int) int {
	cut := 0
	for cut < len(st.hits) && (st.hits[cut] <= now-int64(window) || len(st.hits)-cut > keep) {
		cut++
	}
	if cut > 0 {
		n := copy(st.hits, st.hits[cut:])
		st.hits = st.hits[:n]
	}
	return len(st.hits)
}

// toFloat reads a reading value as a number.
func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, !math.IsNaN(x)
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// test evaluates a reading condition on a value; known is false when the
// value cannot be compared (a text where a number is expected).
func (c *Cond) test(v any) (holds, known bool) {
	if c.IsStr {
		s, ok := v.(string)
		if !ok {
			return false, false
		}
		return (s == c.Str) == (c.Op == "=="), true
	}
	if c.IsBool {
		b, ok := v.(bool)
		if !ok {
			return false, false
		}
		return (b == c.Bool) == (c.Op == "=="), true
	}
	f, ok := toFloat(v)
	if !ok {
		return false, false
	}
	switch c.Op {
	case ">":
		return f > c.Num, true
	case ">=":
		return f >= c.Num, true
	case "<":
		return f < c.Num, true
	case "<=":
		return f <= c.Num, true
	case "==":
		return f == c.Num, true
	case "!=":
		return f != c.Num, true
	case "outside":
		return f < c.Lo || f > c.Hi, true
	case "inside":
		return f >= c.Lo && f <= c.Hi, true
	}
	return false, false
}

// onReading evaluates a reading rule on one reading of its field, taken at
// ts (the reading's own time). It returns the transition and the value the
// rule looked at (the rate of change for rate rules).
func (r *Rule) onReading(st *ruleState, ts time.Time, v any) (transition, any) {
	t := ts.UnixNano()
	val := v
	if r.When.Rate {
		f, ok := toFloat(v)
		if !ok {
			return tNone, nil
		}
		prevT, prevV, had := st.prevT, st.prevV, st.hasPrev
		if had && t <= prevT {
			return tNone, nil // out of order or the same instant: no rate
		}
		st.prevT, st.prevV, st.hasPrev = t, f, true
		if !had {
			return tNone, nil
		}
		val = (f - prevV) / (float64(t-prevT) / float64(r.When.RateUnit))
	}
	holds, known := r.When.test(val)
	if !known {
		return tNone, nil
	}
	switch st.phase {
	case idle:
		if st.hold {
			st.hold = holds
			return tNone, val
		}
		if !holds {
			return tNone, val
		}
		if r.CountN > 0 {
			if st.addHit(t, r.CountIn, r.CountN) < r.CountN {
				return tNone, val
			}
			st.hits = st.hits[:0]
		} else if r.For > 0 {
			st.phase, st.since = pending, t
			return tPending, val
		}
		st.phase = firing
		return tRaise, val
	case pending:
		if !holds {
			st.phase = idle
			return tDrop, val
		}
		if t-st.since >= int64(r.For) {
			st.phase = firing
			return tRaise, val
		}
		return tNone, val
	default: // firing
		if holds {
			return tRefire, val
		}
		clear := true
		if r.Clear != nil {
			c, k := r.Clear.test(val)
			clear = c && k
		}
		if clear {
			st.phase = idle
			return tClear, val
		}
		return tNone, val
	}
}

// onConnect: the device connected.
func (r *Rule) onConnect(st *ruleState, now int64) transition {
	switch r.Kind {
	case KindOffline:
		st.deadline, st.hold = 0, false
		if st.phase == firing {
			st.phase = idle
			return tClear
		}
	case KindNoData:
		if st.deadline == 0 && st.phase == idle {
			st.deadline = now + int64(r.When.Dur)
		}
	}
	return tNone
}

// onDisconnect: the device disconnected at now.
func (r *Rule) onDisconnect(st *ruleState, now int64) (transition, any) {
	switch r.Kind {
	case KindOffline:
		if st.phase == idle && !st.hold {
			st.deadline = now + int64(r.When.Dur)
		}
	case KindFlapping:
		n := st.addHit(now, r.When.Dur, r.When.N)
		if n > 0 {
			st.deadline = st.hits[0] + int64(r.When.Dur)
		}
		if n >= r.When.N {
			if st.phase == firing {
				return tRefire, n
			}
			if !st.hold {
				st.phase = firing
				return tRaise, n
			}
		}
	}
	return tNone, nil
}

// onStatus: the device's status changed to status.
func (r *Rule) onStatus(st *ruleState, status string) (transition, any) {
	holds, _ := r.When.test(status)
	switch {
	case st.hold:
		st.hold = holds
	case holds && st.phase == idle:
		st.phase = firing
		return tRaise, status
	case !holds && st.phase == firing:
		st.phase = idle
		return tClear, status
	}
	return tNone, nil
}

// onRejected: n messages of the device were refused at now.
func (r *Rule) onRejected(st *ruleState, now int64, n64 int64) (transition, any) {
	n := 0
	for range min(n64, int64(r.When.N+1)) {
		n = st.addHit(now, r.When.Dur, r.When.N+1)
	}
	st.deadline = st.hits[0] + int64(r.When.Dur)
	if n > r.When.N {
		if st.phase == firing {
			return tRefire, n
		}
		if !st.hold {
			st.phase = firing
			return tRaise, n
		}
	}
	return tNone, nil
}

// onData: a reading carried a no-data rule's field at now.
func (r *Rule) onData(st *ruleState, now int64) transition {
	st.deadline, st.hold = now+int64(r.When.Dur), false
	if st.phase == firing {
		st.phase = idle
		return tClear
	}
	return tNone
}

// onTimer: the pair's deadline passed (now >= deadline).
func (r *Rule) onTimer(st *ruleState, now int64) (transition, any) {
	switch r.Kind {
	case KindOffline, KindNoData:
		since := st.deadline - int64(r.When.Dur)
		st.deadline = 0
		if st.phase == idle && !st.hold {
			st.phase = firing
			return tRaise, math.Round(float64(now-since)/1e9*10) / 10 // seconds silent
		}
	case KindFlapping, KindRejected:
		keep := r.When.N
		if r.Kind == KindRejected {
			keep++
		}
		n := st.prune(now, r.When.Dur, keep)
		st.deadline = 0
		if n > 0 {
			st.deadline = st.hits[0] + int64(r.When.Dur)
		}
		limit := r.When.N
		if r.Kind == KindRejected {
			limit++
		}
		if n < limit {
			st.hold = false
			if st.phase == firing {
				st.phase = idle
				return tClear, n
			}
		}
	}
	return tNone, nil
}
