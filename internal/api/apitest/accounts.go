package apitest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/registry"
)

// Accounts is a fake of the dashboard's users and sessions: it implements
// api.Users and api.Sessions. Session secrets are Session(name).
type Accounts struct {
	mu    sync.Mutex
	users map[string]accounts.User
}

// SessionSecret is the session cookie value of a user of the fake.
func SessionSecret(name string) string { return "session-of-" + name }

// AddUser adds a user (the password is not checked by the fake).
func (a *Accounts) AddUser(_ context.Context, name, password string, role access.Role) (*accounts.User, error) {
	if err := accounts.ValidateUser(name, password, role); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.users == nil {
		a.users = map[string]accounts.User{}
	}
	if _, ok := a.users[name]; ok {
		return nil, fmt.Errorf("add user %s: %w", name, accounts.ErrExists)
	}
	u := accounts.User{Name: name, Role: role, CreatedAt: time.Date(2025, 1, 5, 0, 0, 0, 0, time.UTC)}
	a.users[name] = u
	return &u, nil
}

// ListUsers lists the users by name.
func (a *Accounts) ListUsers(context.Context) ([]accounts.User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []accounts.User{}
	for _, u := range a.users {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteUser removes a user.
func (a *Accounts) DeleteUser(_ context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.users[name]; !ok {
		return fmt.Errorf("delete user %s: %w", name, accounts.ErrNotFound)
	}
	delete(a.users, name)
	return nil
}

// Authenticate knows the secret SessionSecret(name) of every user.
func (a *Accounts) Authenticate(_ context.Context, secret string) (*accounts.User, *accounts.Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, u := range a.users {
		if secret == SessionSecret(name) {
			return &u, &accounts.Session{User: name}, nil
		}
	}
	return nil, nil, accounts.ErrBadLogin
}

// CountDevices counts the fake registry's devices (api.DeviceCounter).
func (d *Devices) CountDevices(context.Context) ([]registry.DeviceCount, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := map[registry.DeviceCount]int64{}
	for _, dev := range d.devices {
		n[registry.DeviceCount{Type: dev.Type, Status: dev.Status, Connected: dev.Connected, Disabled: dev.Disabled}]++
	}
	out := []registry.DeviceCount{}
	for k, v := range n {
		k.Devices = v
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out, nil
}

// PresenceHistory returns the presence events published to the fake
// event stream for a device, newest first (api.PresenceHistory).
func (e *Events) PresenceHistory(_ context.Context, deviceID string, before int64, limit int) ([]events.Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []events.Event{}
	for i := len(e.log) - 1; i >= 0 && len(out) < limit; i-- {
		ev := e.log[i]
		if ev.DeviceID != deviceID || (before > 0 && ev.Seq >= before) {
			continue
		}
		switch ev.Type {
		case events.DeviceConnected, events.DeviceDisconnected, events.DeviceStatusChanged:
			out = append(out, ev)
		}
	}
	return out, nil
}
