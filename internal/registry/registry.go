// Package registry knows the devices: their identity, type, credentials and
// state. It owns its store interface and keeps an in-memory view of
// credentials so that authenticating a device costs no database query.
package registry

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Errors of the registry.
var (
	ErrNotFound     = errors.New("device not found")
	ErrExists       = errors.New("device already exists")
	ErrInvalidID    = errors.New("invalid device id")
	ErrUnauthorized = errors.New("bad credentials")
	// ErrGroupNotFound: no group has this id.
	ErrGroupNotFound = errors.New("group not found")
	// ErrGroupExists: a group with this id exists already.
	ErrGroupExists = errors.New("group already exists")
	// ErrInvalid: a field of a request is not acceptable; the error says
	// which.
	ErrInvalid = errors.New("invalid request")
)

// IDPattern is the alphabet and length of a device id; ValidID also
// refuses the ids a URL path cannot carry plainly.
var IDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// IDRule says what a device or group id must be, for error messages.
const IDRule = "1 to 128 of A-Z a-z 0-9 . _ : - and not . or .."

// ValidID reports whether id is a valid device id: IDPattern, and not "."
// or "..", which a URL path resolves away (/devices/.. is /), so that such
// a device could be created but never reached through the API or CLI.
func ValidID(id string) bool { return IDPattern.MatchString(id) && !dotSegment(id) }

func dotSegment(id string) bool { return id == "." || id == ".." }

// Device is a registered device.
type Device struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Name     string         `json:"name,omitempty"`
	Group    string         `json:"group,omitempty"`
	Tags     []string       `json:"tags,omitempty"`
	Location *Location      `json:"location,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
	// FirmwareVersion, HardwareVersion and ManagementIP are what the
	// operator (or the device's registration) last said.
	FirmwareVersion string `json:"firmware_version,omitempty"`
	HardwareVersion string `json:"hardware_version,omitempty"`
	ManagementIP    string `json:"management_ip,omitempty"`

	Status    string `json:"status"`
	Connected bool   `json:"connected"`
	// LastSeen is when the hub last heard from the device, to
	// SeenResolution: it may lag the device's last message by up to that.
	LastSeen  *time.Time     `json:"last_seen,omitempty"`
	Metrics   map[string]any `json:"metrics,omitempty"` // the latest heartbeat metrics
	Disabled  bool           `json:"disabled"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// Location is where a device is. A zero Location in an update removes it.
type Location struct {
	Lat         float64 `json:"lat"`
	Lon         float64 `json:"lon"`
	Description string  `json:"description,omitempty"`
}

// Credentials are a device's stored credentials: hashes only.
type Credentials struct {
	DeviceID     string
	DeviceType   string
	MQTTUsername string
	PasswordHash []byte // SHA-256; empty when revoked
	APIKeyHash   []byte // SHA-256; empty when revoked
	Disabled     bool

	// The credentials a rotation replaced, valid until PrevUntil (nil: none).
	PrevPasswordHash []byte
	PrevAPIKeyHash   []byte
	PrevUntil        *time.Time
	// Revoked: nothing authenticates as the device.
	Revoked bool
	// CertFingerprint is the pinned client certificate's SHA-256, or nil.
	CertFingerprint []byte
}

// Group is a device group. Devices name their group by its ID, which never
// changes; the Name may.
type Group struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Devices   int       `json:"devices"` // how many devices are in it (set by listings)
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ListOptions filter, order and page a device listing. The store applies
// every filter, the order and the cursor in its query, so that a page of
// an ordered listing is right across the whole fleet, not within a page.
type ListOptions struct {
	Type      string
	Group     string
	Status    string
	Connected *bool
	// Tag keeps the devices that carry this tag.
	Tag string
	// Text keeps the devices whose id or name contains it, ignoring case.
	Text  string
	Order Order
	// After is the cursor: the id of the previous page's last device.
	// With OrderLastSeen, AfterSeen is that device's last seen (nil: it
	// was never seen).
	After     string
	AfterSeen *time.Time
	Limit     int // 0: a default of 100
}

// Order is the order of a device listing.
type Order int

const (
	// OrderID lists devices by id.
	OrderID Order = iota
	// OrderLastSeen lists the most recently seen first, devices never
	// seen last, and devices seen at the same instant by id.
	OrderLastSeen
)

// SeenCursor is the cursor after d in a listing by last seen: its last
// seen in Unix microseconds (empty if never seen), "_", its id.
func SeenCursor(d *Device) string {
	if d.LastSeen == nil {
		return "_" + d.ID
	}
	return strconv.FormatInt(d.LastSeen.UnixMicro(), 10) + "_" + d.ID
}

// ParseSeenCursor reads a SeenCursor into o's After and AfterSeen.
func ParseSeenCursor(cursor string, o *ListOptions) error {
	us, id, ok := strings.Cut(cursor, "_")
	if !ok || id == "" {
		return fmt.Errorf("%w: cursor %q: want LASTSEEN_ID, the next of a page listed by last seen", ErrInvalid, cursor)
	}
	o.After, o.AfterSeen = id, nil
	if us == "" {
		return nil
	}
	n, err := strconv.ParseInt(us, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: cursor %q: last seen %q is not Unix microseconds", ErrInvalid, cursor, us)
	}
	t := time.UnixMicro(n).UTC()
	o.AfterSeen = &t
	return nil
}

// SeenBefore reports whether a comes before b in OrderLastSeen (for lists
// kept in memory; the stores order in their queries).
func SeenBefore(aSeen *time.Time, aID string, bSeen *time.Time, bID string) bool {
	switch {
	case aSeen == nil && bSeen == nil:
		return aID < bID
	case aSeen == nil:
		return false
	case bSeen == nil:
		return true
	case !aSeen.Equal(*bSeen):
		return aSeen.After(*bSeen)
	}
	return aID < bID
}

// Store is what the registry needs of storage. Writes go through the
// commit path; these are the reads.
type Store interface {
	GetDevice(ctx context.Context, id string) (*Device, error) // ErrNotFound
	ListDevices(ctx context.Context, opts ListOptions) ([]Device, error)
	// AllCredentials returns every device's credentials, to fill the
	// in-memory authentication view at start.
	AllCredentials(ctx context.Context) ([]Credentials, error)

	// Groups are written directly: no signal describes them.
	CreateGroup(ctx context.Context, g Group) error                       // ErrGroupExists
	RenameGroup(ctx context.Context, id, name string, at time.Time) error // ErrGroupNotFound
	GetGroup(ctx context.Context, id string) (*Group, error)              // ErrGroupNotFound
	ListGroups(ctx context.Context) ([]Group, error)
}

// DeviceCount is how many devices share a type, a status, a connection
// state and a disabled flag: one row of a fleet summary.
type DeviceCount struct {
	Type      string `json:"type"`
	Status    string `json:"status"`
	Connected bool   `json:"connected"`
	Disabled  bool   `json:"disabled"`
	Devices   int64  `json:"devices"`
}

// Counter counts the devices by type and state, for the dashboard's
// overview, in one grouped query.
type Counter interface {
	CountDevices(ctx context.Context) ([]DeviceCount, error)
}
