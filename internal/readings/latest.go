package readings

import (
	"cmp"
	"encoding/json"
	"fmt"
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
	// Raw, when not nil, holds Values as the JSON array of LatestValue
	// that a store keeps ready to answer (Values is then nil): written to
	// an answer as it is, without decoding; Decoded gives the values.
	// It may be the store's own copy, shared by every answer: read only.
	Raw json.RawMessage `json:"-"`
}

// Decoded returns the device's values, decoding Raw if it is set.
func (d *DeviceLatest) Decoded() ([]LatestValue, error) {
	if d.Raw == nil {
		return d.Values, nil
	}
	var vs []LatestValue
	if err := json.Unmarshal(d.Raw, &vs); err != nil {
		return nil, fmt.Errorf("latest values of %s: %w", d.DeviceID, err)
	}
	return vs, nil
}

// MarshalJSON writes Raw as the values when it is set.
func (d DeviceLatest) MarshalJSON() ([]byte, error) {
	if d.Raw == nil {
		type plain DeviceLatest
		return json.Marshal(plain(d))
	}
	id, err := json.Marshal(d.DeviceID)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(id)+len(d.Raw)+26)
	b = append(b, `{"device_id":`...)
	b = append(b, id...)
	b = append(b, `,"values":`...)
	b = append(b, d.Raw...)
	return append(b, '}'), nil
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

// AddRaw adds a device whose values are the JSON array raw (see
// DeviceLatest.Raw); false means the page is full and the device starts
// the next page.
func (p *LatestPager) AddRaw(device string, raw json.RawMessage) bool {
	if n := len(p.page.Devices); n == p.limit {
		p.page.Next = p.page.Devices[n-1].DeviceID
		return false
	}
	p.page.Devices = append(p.page.Devices, DeviceLatest{DeviceID: device, Raw: raw})
	return true
}

// MergeLatest merges rows of one device (sorted by stream and field) into
// its kept values vs (sorted so too): a row replaces the value of its
// stream and field unless that has a later time. The result is sorted.
func MergeLatest(vs []LatestValue, rows []LatestRow) []LatestValue {
	out := make([]LatestValue, 0, len(vs)+len(rows))
	i, j := 0, 0
	for i < len(vs) || j < len(rows) {
		switch {
		case j == len(rows):
			out = append(out, vs[i])
			i++
		case i == len(vs):
			r := rows[j]
			out = append(out, LatestValue{Stream: r.Stream, Field: r.Field, Time: r.Time, Value: r.Value})
			j++
		default:
			v, r := vs[i], rows[j]
			switch c := cmp.Or(cmp.Compare(v.Stream, r.Stream), cmp.Compare(v.Field, r.Field)); {
			case c < 0:
				out = append(out, v)
				i++
			case c > 0:
				out = append(out, LatestValue{Stream: r.Stream, Field: r.Field, Time: r.Time, Value: r.Value})
				j++
			default:
				if !r.Time.Before(v.Time) {
					v = LatestValue{Stream: r.Stream, Field: r.Field, Time: r.Time, Value: r.Value}
				}
				out = append(out, v)
				i++
				j++
			}
		}
	}
	return out
}

// MergeLatestInPlace is MergeLatest writing into vs, which it returns,
// when every row's stream and field has a value in vs already (a device
// that sends the same fields each time); otherwise it returns
// MergeLatest's new slice and leaves vs as it was. The caller must own
// vs: nothing else may read it meanwhile.
func MergeLatestInPlace(vs []LatestValue, rows []LatestRow) []LatestValue {
	// Both are sorted: one walk finds each row's value, or that one is
	// missing, before anything is written.
	i := 0
	for j := range rows {
		r := &rows[j]
		for i < len(vs) && cmp.Or(cmp.Compare(vs[i].Stream, r.Stream), cmp.Compare(vs[i].Field, r.Field)) < 0 {
			i++
		}
		if i == len(vs) || vs[i].Stream != r.Stream || vs[i].Field != r.Field {
			return MergeLatest(vs, rows)
		}
	}
	i = 0
	for j := range rows {
		r := &rows[j]
		for vs[i].Stream != r.Stream || vs[i].Field != r.Field {
			i++
		}
		if !r.Time.Before(vs[i].Time) {
			vs[i] = LatestValue{Stream: r.Stream, Field: r.Field, Time: r.Time, Value: r.Value}
		}
	}
	return vs
}

// Page returns the page.
func (p *LatestPager) Page() LatestPage { return p.page }
