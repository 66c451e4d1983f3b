// Package registry knows the devices: their identity, type, credentials and
// state. It owns its store interface and keeps an in-memory view of
// credentials so that authenticating a device costs no database query.
package registry

import (
	"context"
	"errors"
	"regexp"
	"time"
)

// Errors of the registry.
var (
	ErrNotFound     = errors.New("device not found")
	ErrExists       = errors.New("device already exists")
	ErrInvalidID    = errors.New("invalid device id")
	ErrUnauthorized = errors.New("bad credentials")
)

// IDPattern is what a device id must match.
var IDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// ValidID reports whether id is a valid device id.
func ValidID(id string) bool { return IDPattern.MatchString(id) }

// Device is a registered device.
type Device struct {
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	Name      string         `json:"name,omitempty"`
	Group     string         `json:"group,omitempty"`
	Tags      []string       `json:"tags,omitempty"`
	Metadata  map[string]any `json:"metadata,omitempty"`
	Status    string         `json:"status"`
	Connected bool           `json:"connected"`
	LastSeen  *time.Time     `json:"last_seen,omitempty"`
	Metrics   map[string]any `json:"metrics,omitempty"` // the latest heartbeat metrics
	Disabled  bool           `json:"disabled"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// Credentials are a device's stored credentials: hashes only.
type Credentials struct {
	DeviceID     string
	DeviceType   string
	MQTTUsername string
	PasswordHash []byte // SHA-256
	APIKeyHash   []byte // SHA-256
	Disabled     bool
}

// ListOptions filter and page a device listing. Devices are listed by id.
type ListOptions struct {
	Type      string
	Group     string
	Status    string
	Connected *bool
	After     string // cursor: list devices with id greater than this
	Limit     int    // 0: a default of 100
}

// Store is what the registry needs of storage. Writes go through the
// commit path; these are the reads.
type Store interface {
	GetDevice(ctx context.Context, id string) (*Device, error) // ErrNotFound
	ListDevices(ctx context.Context, opts ListOptions) ([]Device, error)
	// AllCredentials returns every device's credentials, to fill the
	// in-memory authentication view at start.
	AllCredentials(ctx context.Context) ([]Credentials, error)
}
