package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// User is a dashboard user.
type User struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateUser adds a dashboard user (admin).
func (c *Client) CreateUser(ctx context.Context, name, role, password string) (*User, error) {
	var out struct {
		User User `json:"user"`
	}
	body := map[string]string{"name": name, "role": role, "password": password}
	if err := c.do(ctx, http.MethodPost, "/api/v1/users", nil, body, &out); err != nil {
		return nil, fmt.Errorf("add user %s: %w", name, err)
	}
	return &out.User, nil
}

// ListUsers lists the dashboard users (admin).
func (c *Client) ListUsers(ctx context.Context) ([]User, error) {
	var out struct {
		Users []User `json:"users"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/users", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out.Users, nil
}

// DeleteUser removes a dashboard user and its sessions (admin).
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	var out struct {
		User User `json:"user"`
	}
	if err := c.do(ctx, http.MethodDelete, "/api/v1/users/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return fmt.Errorf("remove user %s: %w", name, err)
	}
	return nil
}

// Whoami says who the client's credentials are.
type Whoami struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // token or user
	Role string `json:"role"`
}

// Whoami returns the caller's name, kind and role.
func (c *Client) Whoami(ctx context.Context) (*Whoami, error) {
	var out Whoami
	if err := c.do(ctx, http.MethodGet, "/api/v1/whoami", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("whoami: %w", err)
	}
	return &out, nil
}

// DeviceCount is one row of a fleet summary.
type DeviceCount struct {
	Type      string `json:"type"`
	Status    string `json:"status"`
	Connected bool   `json:"connected"`
	Disabled  bool   `json:"disabled"`
	Devices   int64  `json:"devices"`
}

// FleetSummary counts the devices by state and type.
type FleetSummary struct {
	Total    int64            `json:"total"`
	Online   int64            `json:"online"`
	Offline  int64            `json:"offline"`
	Error    int64            `json:"error"`
	Disabled int64            `json:"disabled"`
	ByStatus map[string]int64 `json:"by_status"`
	ByType   map[string]int64 `json:"by_type"`
	Rows     []DeviceCount    `json:"rows"`
}

// FleetSummary returns the device counts.
func (c *Client) FleetSummary(ctx context.Context) (*FleetSummary, error) {
	var out FleetSummary
	if err := c.do(ctx, http.MethodGet, "/api/v1/fleet/summary", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("fleet summary: %w", err)
	}
	return &out, nil
}
