package readings

import (
	"encoding/json"
	"time"
)

// Page sizes of LatestValues, in devices.
const (
	DefaultLatestLimit = 10000
	MaxLatestLimit     = 100000
)

// LatestQuery selects the latest values of many devices: every device
// with a stored reading, by device id.
type LatestQuery struct {
	Type   string // only devices of this type
	Stream string // "": every stream
	Field  string // "": every field
	After  string // only devices with an id after this (the previous page's Next)
	Limit  int    // devices per page; 0: DefaultLatestLimit; at most MaxLatestLimit
}

// PageSize is the number of devices a page of q holds.
func (q LatestQuery) PageSize() int {
	switch {
	case q.Limit <= 0:
		return DefaultLatestLimit
	case q.Limit > MaxLatestLimit:
		return MaxLatestLimit
	}
	return q.Limit
}

// LatestValue is the newest value of one field of one stream of a device.
type LatestValue struct {
	Stream string          `json:"stream,omitempty"`
	Field  string          `json:"field"`
	Time   time.Time       `json:"ts"`
	Value  json.RawMessage `json:"value"`
}

// DeviceLatest is the latest values of one device, by stream and field.
type DeviceLatest struct {
	DeviceID string        `json:"device_id"`
	Values   []LatestValue `json:"values"`
}

// LatestPage is one page of LatestValues; Next is "" on the last page.
type LatestPage struct {
	Devices []DeviceLatest `json:"devices"`
	Next    string         `json:"next,omitempty"`
}

// LatestRow is a field value to keep as its device's latest, unless a
// newer one is kept already (see TxStore.UpsertLatest).
type LatestRow struct {
	DeviceID string
	Stream   string
	Field    string
	Time     time.Time
	Value    json.RawMessage
}

// LatestPager collects rows ordered by device id (then stream, field) into
// a page of at most limit devices: stores stream their rows through Add and
// stop when it returns false.
type LatestPager struct {
	limit int
	page  LatestPage
}

// NewLatestPager starts a page of q.
func NewLatestPager(q LatestQuery) *LatestPager {
	return &LatestPager{limit: q.PageSize(), page: LatestPage{Devices: []DeviceLatest{}}}
}

// Add adds one row; false means the page is full and the row's device
// starts the next page.
func (p *LatestPager) Add(device string, v LatestValue) bool {
	n := len(p.page.Devices)
	if n == 0 || p.page.Devices[n-1].DeviceID != device {
		if n == p.limit {
			p.page.Next = p.page.Devices[n-1].DeviceID
			return false
		}
		p.page.Devices = append(p.page.Devices, DeviceLatest{DeviceID: device})
		n++
	}
	d := &p.page.Devices[n-1]
	d.Values = append(d.Values, v)
	return true
}

// Page returns the page.
func (p *LatestPager) Page() LatestPage { return p.page }
