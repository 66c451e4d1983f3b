package alerts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
)

// List returns the alerts q selects.
func (s *Service) List(ctx context.Context, q Query) ([]Alert, error) {
	for _, st := range q.States {
		if !slices.Contains([]string{StatePending, StateActive, StateAcknowledged, StateCleared, "open"}, st) {
			return nil, fmt.Errorf("state %q: %w: one of pending, active, acknowledged, cleared, open", st, ErrInvalid)
		}
	}
	if i := slices.Index(q.States, "open"); i >= 0 {
		q.States = append(slices.Delete(q.States, i, i+1), StatePending, StateActive, StateAcknowledged)
	}
	if q.Severity != "" && !slices.Contains(Severities, q.Severity) {
		return nil, fmt.Errorf("severity %q: %w: one of %s", q.Severity, ErrInvalid, strings.Join(Severities, ", "))
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, 1000)
	return s.deps.Store.ListAlerts(ctx, q)
}

// Get returns one alert.
func (s *Service) Get(ctx context.Context, id string) (*Alert, error) {
	return s.deps.Store.GetAlert(ctx, id)
}

// Acknowledge marks an active alert as seen by an operator (by, with a
// note). It stays open until its condition ends or it is cleared.
func (s *Service) Acknowledge(ctx context.Context, id, by, note string) (*Alert, error) {
	return s.operate(ctx, id, func(a *Alert, now time.Time) (events.Type, error) {
		if a.State != StateActive {
			return "", fmt.Errorf("alert %s is %s: %w (only an active alert can be acknowledged)", id, a.State, ErrState)
		}
		a.State, a.AckAt, a.AckBy, a.AckNote = StateAcknowledged, &now, by, note
		return events.AlertAcknowledged, nil
	})
}

// Clear ends an open alert by hand. The pair does not fire again until its
// condition has ended once.
func (s *Service) Clear(ctx context.Context, id, by, note string) (*Alert, error) {
	return s.operate(ctx, id, func(a *Alert, now time.Time) (events.Type, error) {
		if !a.Open() {
			return "", fmt.Errorf("alert %s is cleared already: %w", id, ErrState)
		}
		a.State, a.ClearedAt, a.ClearedBy, a.ClearNote = StateCleared, &now, by, note
		return events.AlertCleared, nil
	})
}

func (s *Service) operate(ctx context.Context, id string, fn func(a *Alert, now time.Time) (events.Type, error)) (*Alert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled(ctx) // the evaluator's changes in flight are in the store
	stored, err := s.deps.Store.GetAlert(ctx, id)
	if err != nil {
		return nil, err
	}
	var st *ruleState
	a := *stored
	if d := s.devs[a.DeviceID]; d != nil {
		if i := d.index(a.Rule); i >= 0 && d.st[i].alert != nil && d.st[i].alert.ID == id {
			st = &d.st[i]
			a = st.alert.Alert // the evaluator's copy has the count not written yet
		}
	}
	now := s.opts.Now()
	typ, err := fn(&a, now)
	if err != nil {
		return nil, err
	}
	a.UpdatedAt = now
	ch := s.change(a.DeviceID, &AlertOp{Kind: OpUpdate, Alert: a}, eventOf(typ, &a, now))
	t, err := s.deps.Committer.Enqueue(ctx, ch)
	if err != nil {
		return nil, err
	}
	if err := t.Wait(ctx); err != nil {
		if errors.Is(err, commit.ErrConflict) {
			return nil, fmt.Errorf("alert %s changed meanwhile: %w", id, ErrState)
		}
		return nil, err
	}
	if st != nil {
		if a.State == StateCleared {
			if st.phase == firing {
				s.m.open.Dec()
			}
			st.alert, st.phase, st.hold = nil, idle, true
			st.deadline, st.hits = 0, st.hits[:0]
		} else {
			st.alert.Alert = a
		}
	}
	return &a, nil
}

// RuleInfo is a rule as the API shows it.
type RuleInfo struct {
	RuleSpec
	Kind   string `json:"kind"`
	Source string `json:"source"` // config or api
}

// Rules returns every rule, by name.
func (s *Service) Rules() []RuleInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RuleInfo, 0, len(s.rules))
	for _, r := range s.rules {
		out = append(out, r.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (r *Rule) info() RuleInfo {
	return RuleInfo{RuleSpec: r.Spec, Kind: r.Kind.String(), Source: r.Source}
}

// Rule returns one rule.
func (s *Service) Rule(name string) (RuleInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rules[name]
	if r == nil {
		return RuleInfo{}, fmt.Errorf("rule %q: %w", name, ErrNotFound)
	}
	return r.info(), nil
}

// CreateRule checks spec with the configuration file's parser, stores it
// and starts evaluating it with the next event.
func (s *Service) CreateRule(ctx context.Context, spec RuleSpec, by string) (RuleInfo, error) {
	r, err := ParseRule(spec)
	if err != nil {
		return RuleInfo{}, err
	}
	if s.deps.Types != nil && !s.deps.Types.Known(spec.DeviceType) {
		return RuleInfo{}, &RuleError{Rule: spec.Name, Field: "device_type", Msg: fmt.Sprintf("%q is not a declared device type", spec.DeviceType)}
	}
	r.Source = "api"
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rules[r.Name] != nil {
		return RuleInfo{}, fmt.Errorf("rule %q: %w", r.Name, ErrExists)
	}
	if err := s.deps.Store.InsertAlertRule(ctx, StoredRule{Spec: spec, CreatedAt: s.opts.Now(), CreatedBy: by}); err != nil {
		return RuleInfo{}, err
	}
	s.rules[r.Name] = r
	s.rebuild()
	return r.info(), nil
}

// DeleteRule removes a rule created over the API and clears its open
// alerts.
func (s *Service) DeleteRule(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rules[name]
	if r == nil {
		return fmt.Errorf("rule %q: %w", name, ErrNotFound)
	}
	if r.Source != "api" {
		return fmt.Errorf("rule %q: %w; remove it there", name, ErrReadOnly)
	}
	if err := s.deps.Store.DeleteAlertRule(ctx, name); err != nil {
		return err
	}
	now := s.opts.Now()
	var out []*commit.Change
	for _, d := range s.devs {
		i := d.index(name)
		if i < 0 || d.st[i].alert == nil {
			continue
		}
		a := d.st[i].alert.Alert
		d.st[i].alert = nil
		if a.State == StatePending {
			out = append(out, s.change(d.id, &AlertOp{Kind: OpDelete, Alert: a}))
			continue
		}
		s.m.open.Dec()
		a.State, a.ClearedAt, a.ClearedBy, a.ClearNote, a.UpdatedAt = StateCleared, &now, "rule", "the rule was deleted", now
		out = append(out, s.change(d.id, &AlertOp{Kind: OpUpdate, Alert: a}, eventOf(events.AlertCleared, &a, now)))
	}
	delete(s.rules, name)
	s.rebuild()
	s.submit(ctx, out)
	s.settled(ctx) // the caller sees the alerts cleared
	return nil
}

// SilenceSpec asks for a silence.
type SilenceSpec struct {
	Rule     string
	DeviceID string
	For      time.Duration
	Note     string
	By       string
}

// Silence keeps a rule, a device, or a rule on a device from raising alerts
// for a time; open alerts stay open but are not announced again.
func (s *Service) Silence(ctx context.Context, spec SilenceSpec) (*Silence, error) {
	if spec.Rule == "" && spec.DeviceID == "" {
		return nil, fmt.Errorf("silence: %w: name a rule, a device, or both", ErrInvalid)
	}
	if spec.For <= 0 || spec.For > 30*24*time.Hour {
		return nil, fmt.Errorf("silence: duration: %w: must be from 1s to 720h", ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if spec.Rule != "" && s.rules[spec.Rule] == nil {
		return nil, fmt.Errorf("rule %q: %w", spec.Rule, ErrNotFound)
	}
	now := s.opts.Now()
	sl := Silence{ID: "sil_" + newID()[4:], Rule: spec.Rule, DeviceID: spec.DeviceID, Until: now.Add(spec.For).UTC().Truncate(time.Microsecond),
		Note: spec.Note, CreatedBy: spec.By, CreatedAt: now.UTC().Truncate(time.Microsecond)}
	if err := s.deps.Store.InsertSilence(ctx, sl); err != nil {
		return nil, err
	}
	s.silences = append(s.silences, sl)
	return &sl, nil
}

// Silences returns the silences in force.
func (s *Service) Silences() []Silence {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	var out []Silence
	for _, sl := range s.silences {
		if sl.Until.After(now) {
			out = append(out, sl)
		}
	}
	return out
}

// Unsilence ends a silence.
func (s *Service) Unsilence(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.deps.Store.DeleteSilence(ctx, id); err != nil {
		return err
	}
	s.silences = slices.DeleteFunc(s.silences, func(sl Silence) bool { return sl.ID == id })
	return nil
}

// TestResult says how a rule would have behaved on a device's readings.
type TestResult struct {
	Rule     string    `json:"rule"`
	DeviceID string    `json:"device_id"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Readings int       `json:"readings" doc:"Readings that carried the rule's field."`
	// Fired is how often an alert would have been raised; Firings lists
	// them (at most 100), with when and the value.
	Fired     int      `json:"fired"`
	Cleared   int      `json:"cleared"`
	Refired   int      `json:"refired"`
	OpenAtEnd bool     `json:"open_at_end"`
	Firings   []Firing `json:"firings"`
	Truncated bool     `json:"truncated,omitempty" doc:"More readings than were read (100000): only the newest were used."`
}

// Firing is one raise in a TestResult.
type Firing struct {
	At      time.Time  `json:"at"`
	Value   any        `json:"value,omitempty"`
	Cleared *time.Time `json:"cleared,omitempty"`
}

// maxTestReadings bounds what TestRule reads.
const maxTestReadings = 100000

// TestRule runs a rule (by name, or spec when name is "") over a device's
// readings from since until now, with fresh state and no flood control or
// silences, and tells how often it would have fired. Reading and no-data
// rules only: presence and status rules need events, not readings.
func (s *Service) TestRule(ctx context.Context, name string, spec *RuleSpec, deviceID string, since time.Duration) (*TestResult, error) {
	var r *Rule
	if name != "" {
		s.mu.Lock()
		r = s.rules[name]
		s.mu.Unlock()
		if r == nil {
			return nil, fmt.Errorf("rule %q: %w", name, ErrNotFound)
		}
	} else {
		if spec == nil {
			return nil, fmt.Errorf("test: %w: name a rule or give one", ErrInvalid)
		}
		var err error
		if spec.DeviceType == "" {
			spec.DeviceType = "-" // not needed to test
		}
		if r, err = ParseRule(*spec); err != nil {
			return nil, err
		}
	}
	if r.Kind != KindReading && r.Kind != KindNoData {
		return nil, &RuleError{Rule: r.Name, Field: "when", Msg: fmt.Sprintf("a %s rule watches events, not readings: only reading and nodata rules can be tested", r.Kind)}
	}
	if since <= 0 {
		since = 24 * time.Hour
	}
	now := s.opts.Now()
	res := &TestResult{Rule: r.Name, DeviceID: deviceID, From: now.Add(-since), To: now, Firings: []Firing{}}
	// The store answers newest first; collect, then run oldest first.
	var recs []readings.Record
	q := readings.Query{DeviceID: deviceID, Field: r.When.Field, From: res.From, To: now, Limit: 10000}
	for {
		p, err := s.deps.Readings.QueryReadings(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("read readings of %s: %w", deviceID, err)
		}
		recs = append(recs, p.Readings...)
		if p.Next == "" {
			break
		}
		if len(recs) >= maxTestReadings {
			res.Truncated = true
			break
		}
		q.Cursor = p.Next
	}
	slices.Reverse(recs)
	var st ruleState
	var last *Firing
	fire := func(at time.Time, v any) {
		res.Fired++
		if len(res.Firings) < 100 {
			res.Firings = append(res.Firings, Firing{At: at, Value: v})
			last = &res.Firings[len(res.Firings)-1]
		} else {
			last = nil
		}
	}
	clear := func(at time.Time) {
		res.Cleared++
		if last != nil {
			t := at
			last.Cleared = &t
		}
	}
	var prev time.Time
	for _, rec := range recs {
		v, ok := rec.Values[r.When.Field]
		if !ok {
			continue
		}
		res.Readings++
		if r.Kind == KindNoData {
			if !prev.IsZero() && rec.Time.Sub(prev) > r.When.Dur {
				fire(prev.Add(r.When.Dur), rec.Time.Sub(prev).Seconds())
				clear(rec.Time)
			}
			prev = rec.Time
			continue
		}
		switch tr, val := r.onReading(&st, rec.Time, v); tr {
		case tRaise:
			fire(rec.Time, val)
		case tRefire:
			res.Refired++
		case tClear:
			clear(rec.Time)
		}
	}
	if r.Kind == KindNoData && !prev.IsZero() && now.Sub(prev) > r.When.Dur {
		fire(prev.Add(r.When.Dur), now.Sub(prev).Seconds())
		res.OpenAtEnd = true
	}
	if r.Kind == KindReading {
		res.OpenAtEnd = st.phase == firing
	}
	return res, nil
}

// Cursor returns the Seq of the last event the evaluator handled, once
// the changes it decided so far are committed (so that the store shows
// what the evaluator did up to that event).
func (s *Service) Cursor() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled(context.Background())
	return s.cursor
}
