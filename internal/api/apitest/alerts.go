package apitest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/devicehub/devicehub/internal/alerts"
)

// Alerts is an in-memory stand-in of the alert service for the API's own
// tests (rules are checked by the real parser; the real service is tested
// end to end in internal/hub). It holds an active alert alr_1 of ws-1, a
// configuration rule hot, an API rule humid and a silence sil_1.
type Alerts struct {
	mu       sync.Mutex
	alerts   map[string]alerts.Alert
	rules    map[string]alerts.RuleInfo
	silences map[string]alerts.Silence
	n        int
}

func newAlerts() *Alerts {
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return &Alerts{
		alerts: map[string]alerts.Alert{"alr_1": {ID: "alr_1", Rule: "hot", DeviceID: "ws-1", DeviceType: "WeatherStation",
			Severity: "major", State: alerts.StateActive, Value: 81.0, Count: 1, StartedAt: at, RaisedAt: &at, LastAt: at, UpdatedAt: at}},
		rules: map[string]alerts.RuleInfo{
			"hot":   {RuleSpec: alerts.RuleSpec{Name: "hot", DeviceType: "WeatherStation", When: "temperature > 80"}, Kind: "reading", Source: "config"},
			"humid": {RuleSpec: alerts.RuleSpec{Name: "humid", DeviceType: "WeatherStation", When: "humidity > 90"}, Kind: "reading", Source: "api"},
		},
		silences: map[string]alerts.Silence{"sil_1": {ID: "sil_1", DeviceID: "ws-1", Until: at.Add(100 * 365 * 24 * time.Hour), CreatedAt: at}},
	}
}

func (a *Alerts) List(ctx context.Context, q alerts.Query) ([]alerts.Alert, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []alerts.Alert{}
	for _, x := range a.alerts {
		if (q.DeviceID == "" || q.DeviceID == x.DeviceID) && (q.Rule == "" || q.Rule == x.Rule) {
			out = append(out, x)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (a *Alerts) Get(ctx context.Context, id string) (*alerts.Alert, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	x, ok := a.alerts[id]
	if !ok {
		return nil, fmt.Errorf("alert %s: %w", id, alerts.ErrNotFound)
	}
	return &x, nil
}

func (a *Alerts) set(id string, fn func(x *alerts.Alert) error) (*alerts.Alert, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	x, ok := a.alerts[id]
	if !ok {
		return nil, fmt.Errorf("alert %s: %w", id, alerts.ErrNotFound)
	}
	if err := fn(&x); err != nil {
		return nil, err
	}
	a.alerts[id] = x
	return &x, nil
}

func (a *Alerts) Acknowledge(ctx context.Context, id, by, note string) (*alerts.Alert, error) {
	return a.set(id, func(x *alerts.Alert) error {
		if x.State != alerts.StateActive {
			return fmt.Errorf("alert %s is %s: %w", id, x.State, alerts.ErrState)
		}
		now := time.Now()
		x.State, x.AckAt, x.AckBy, x.AckNote = alerts.StateAcknowledged, &now, by, note
		return nil
	})
}

func (a *Alerts) Clear(ctx context.Context, id, by, note string) (*alerts.Alert, error) {
	return a.set(id, func(x *alerts.Alert) error {
		if !x.Open() {
			return fmt.Errorf("alert %s: %w", id, alerts.ErrState)
		}
		now := time.Now()
		x.State, x.ClearedAt, x.ClearedBy, x.ClearNote = alerts.StateCleared, &now, by, note
		return nil
	})
}

func (a *Alerts) Rules() []alerts.RuleInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []alerts.RuleInfo{}
	for _, r := range a.rules {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *Alerts) Rule(name string) (alerts.RuleInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.rules[name]
	if !ok {
		return r, fmt.Errorf("rule %q: %w", name, alerts.ErrNotFound)
	}
	return r, nil
}

func (a *Alerts) CreateRule(ctx context.Context, spec alerts.RuleSpec, by string) (alerts.RuleInfo, error) {
	r, err := alerts.ParseRule(spec)
	if err != nil {
		return alerts.RuleInfo{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.rules[spec.Name]; ok {
		return alerts.RuleInfo{}, fmt.Errorf("rule %q: %w", spec.Name, alerts.ErrExists)
	}
	info := alerts.RuleInfo{RuleSpec: spec, Kind: r.Kind.String(), Source: "api"}
	a.rules[spec.Name] = info
	return info, nil
}

func (a *Alerts) DeleteRule(ctx context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.rules[name]
	switch {
	case !ok:
		return fmt.Errorf("rule %q: %w", name, alerts.ErrNotFound)
	case r.Source != "api":
		return fmt.Errorf("rule %q: %w", name, alerts.ErrReadOnly)
	}
	delete(a.rules, name)
	return nil
}

func (a *Alerts) TestRule(ctx context.Context, name string, spec *alerts.RuleSpec, deviceID string, since time.Duration) (*alerts.TestResult, error) {
	if name != "" {
		if _, err := a.Rule(name); err != nil {
			return nil, err
		}
	} else if _, err := alerts.ParseRule(*spec); err != nil {
		return nil, err
	}
	now := time.Now()
	return &alerts.TestResult{Rule: name, DeviceID: deviceID, From: now.Add(-since), To: now, Firings: []alerts.Firing{}}, nil
}

func (a *Alerts) Silence(ctx context.Context, spec alerts.SilenceSpec) (*alerts.Silence, error) {
	if spec.Rule == "" && spec.DeviceID == "" {
		return nil, fmt.Errorf("silence: %w: name a rule, a device, or both", alerts.ErrInvalid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	now := time.Now()
	s := alerts.Silence{ID: fmt.Sprintf("sil_n%d", a.n), Rule: spec.Rule, DeviceID: spec.DeviceID, Until: now.Add(spec.For), Note: spec.Note, CreatedBy: spec.By, CreatedAt: now}
	a.silences[s.ID] = s
	return &s, nil
}

func (a *Alerts) Silences() []alerts.Silence {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []alerts.Silence{}
	for _, s := range a.silences {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (a *Alerts) Unsilence(ctx context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.silences[id]; !ok {
		return fmt.Errorf("silence %s: %w", id, alerts.ErrNotFound)
	}
	delete(a.silences, id)
	return nil
}
