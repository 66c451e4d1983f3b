package apitest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/devicehub/devicehub/internal/monitors"
)

// Monitors is an in-memory stand-in of the monitor service for the API's
// own tests (validation, conditions and topics are the real ones; the
// real service is tested end to end in internal/hub). It holds a tcp
// monitor mon_1 and an http monitor mon_h.
type Monitors struct {
	mu   sync.Mutex
	mons map[string]monitors.Monitor
	n    int
}

func newMonitors() *Monitors {
	m := &Monitors{mons: map[string]monitors.Monitor{}}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, x := range []monitors.Monitor{
		{ID: "mon_1", Spec: monitors.Spec{Topics: []string{"device_*"}, Transport: "tcp"}, Status: monitors.Inactive, CreatedAt: at, UpdatedAt: at},
		{ID: "mon_h", Spec: monitors.Spec{Topics: []string{"*"}, Transport: "http", URL: "https://example.com/h"}, Status: monitors.Disabled, CreatedAt: at, UpdatedAt: at},
	} {
		if err := x.Spec.Normalize(); err != nil {
			panic(err)
		}
		m.mons[x.ID] = x
	}
	return m
}

func (m *Monitors) get(id string) (monitors.Monitor, error) {
	x, ok := m.mons[id]
	if !ok {
		return x, fmt.Errorf("monitor %s: %w", id, monitors.ErrNotFound)
	}
	return x, nil
}

// Create implements api.Monitors.
func (m *Monitors) Create(_ context.Context, spec monitors.Spec) (*monitors.CreateResult, error) {
	if err := spec.Normalize(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	x := monitors.Monitor{ID: fmt.Sprintf("mon_new%d", m.n), Spec: spec, Status: monitors.Connecting, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	res := &monitors.CreateResult{}
	if spec.Transport == monitors.TransportTCP {
		x.Status, res.Token = monitors.Inactive, "mtk_x"
	} else {
		res.Secret = "whsec_eA=="
	}
	m.mons[x.ID] = x
	res.Monitor = x
	return res, nil
}

// Get implements api.Monitors.
func (m *Monitors) Get(_ context.Context, id string) (*monitors.Monitor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	x, err := m.get(id)
	if err != nil {
		return nil, err
	}
	return &x, nil
}

// List implements api.Monitors.
func (m *Monitors) List(_ context.Context, opts monitors.ListOptions) ([]monitors.Monitor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []monitors.Monitor{}
	for _, x := range m.mons {
		if (len(opts.Topics) == 0 || monitors.SameTopics(x.Topics, opts.Topics)) && opts.Condition.Match(&x) {
			out = append(out, x)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Update implements api.Monitors.
func (m *Monitors) Update(_ context.Context, id string, spec monitors.Spec) (*monitors.Monitor, error) {
	if err := spec.Normalize(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	x, err := m.get(id)
	if err != nil {
		return nil, err
	}
	x.Spec = spec
	m.mons[id] = x
	return &x, nil
}

// Enable implements api.Monitors.
func (m *Monitors) Enable(_ context.Context, id string) (*monitors.Monitor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	x, err := m.get(id)
	if err != nil {
		return nil, err
	}
	if x.Status == monitors.Disabled {
		x.Status = monitors.Connecting
	}
	m.mons[id] = x
	return &x, nil
}

// Delete implements api.Monitors.
func (m *Monitors) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.get(id); err != nil {
		return err
	}
	delete(m.mons, id)
	return nil
}

// RotateSecret implements api.Monitors.
func (m *Monitors) RotateSecret(_ context.Context, id string, _ time.Duration) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.get(id); err != nil {
		return "", err
	}
	return "whsec_eQ==", nil
}

// RotateToken implements api.Monitors.
func (m *Monitors) RotateToken(_ context.Context, id string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.get(id); err != nil {
		return "", err
	}
	return "mtk_y", nil
}

// Backlog implements api.Monitors.
func (m *Monitors) Backlog(string) (int64, float64) { return 0, 0 }
