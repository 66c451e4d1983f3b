package web

import (
	"html/template"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/devicehub/devicehub/client"
)

// defaultStale is how long a device may stay silent before its values are
// shown stale when its type declares no heartbeat.
const defaultStale = 10 * time.Minute

// typeIndex maps type names to their declarations.
func typeIndex(types []client.DeviceType) map[string]*client.DeviceType {
	m := make(map[string]*client.DeviceType, len(types))
	for i := range types {
		m[types[i].Name] = &types[i]
	}
	return m
}

// staleAfter is how long values of a device of type t stay fresh: its
// heartbeat timeout, or defaultStale.
func staleAfter(t *client.DeviceType) time.Duration {
	if t != nil && t.HeartbeatTimeout != "" {
		if d, err := time.ParseDuration(t.HeartbeatTimeout); err == nil && d > 0 {
			return d
		}
	}
	return defaultStale
}

type overviewPage struct {
	Summary  *client.FleetSummary
	Types    []kv
	Statuses []kv
	Pending  int
	Showing  bool // Pending is known (the role may list operations)
	Fleet    fleetCounts
}

func (overviewPage) PageTitle() string { return "Overview" }

type kv struct {
	Key   string
	Value int64
}

func sortedCounts(m map[string]int64) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Value != out[j].Value {
			return out[i].Value > out[j].Value
		}
		return out[i].Key < out[j].Key
	})
	return out
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	sum, err := s.api.FleetSummary(ctx)
	if err != nil {
		return "", nil, err
	}
	p := overviewPage{Summary: sum, Types: sortedCounts(sum.ByType), Statuses: sortedCounts(sum.ByStatus)}
	if s.canWrite() {
		ops, err := s.api.ListOperations(ctx, "pending")
		if err == nil {
			p.Pending, p.Showing = len(ops), true
		}
	}
	p.Fleet = d.fleetCounts(r, s)
	return "overview", p, nil
}

type devicesPage struct {
	Filter    client.ListOptions
	Connected string
	// Query is the filter and order as a query string, for the pager
	// and the sort link (without after).
	Query     template.URL
	SortQuery template.URL // Query with the other order
	Commands  []string     // every command a type declares, for the bulk form
	Devices   []deviceRow
	Next      string
	Types     []string
	Groups    []client.Group
	Limit     int
	First     bool
}

func (devicesPage) PageTitle() string { return "Devices" }

type deviceRow struct {
	client.Device
	StaleSec int64
}

// pageSizes are the page sizes the devices list offers.
var pageSizes = map[int]bool{25: true, 50: true, 100: true, 250: true}

func (d *Dashboard) devices(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	q := r.URL.Query()
	p := devicesPage{Limit: 50, Connected: q.Get("connected")}
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && pageSizes[n] {
		p.Limit = n
	}
	p.Filter = client.ListOptions{Type: q.Get("type"), Group: q.Get("group"), Status: q.Get("status"), Tag: q.Get("tag"),
		Query: q.Get("q"), After: q.Get("after"), Limit: p.Limit}
	if q.Get("sort") == "last_seen" {
		p.Filter.Sort = "last_seen"
	}
	switch p.Connected {
	case "true", "false":
		b := p.Connected == "true"
		p.Filter.Connected = &b
	default:
		p.Connected = ""
	}
	p.First = p.Filter.After == ""
	list, err := s.api.ListDevices(ctx, p.Filter)
	if err != nil {
		return "", nil, err
	}
	types, err := s.api.DeviceTypes(ctx)
	if err != nil {
		return "", nil, err
	}
	groups, err := s.api.ListGroups(ctx)
	if err != nil {
		return "", nil, err
	}
	ti := typeIndex(types)
	for _, t := range types {
		p.Types = append(p.Types, t.Name)
	}
	sort.Strings(p.Types)
	cmds := map[string]bool{}
	for _, t := range types {
		for _, c := range t.Commands {
			cmds[c] = true
		}
	}
	for c := range cmds {
		p.Commands = append(p.Commands, c)
	}
	sort.Strings(p.Commands)
	p.Groups = groups
	p.Query, p.SortQuery = listQuery(p.Filter, p.Connected, p.Limit)
	p.Next = list.Next
	for _, dev := range list.Devices {
		p.Devices = append(p.Devices, deviceRow{Device: dev, StaleSec: int64(staleAfter(ti[dev.Type]).Seconds())})
	}
	return "devices", p, nil
}

type devicePage struct {
	Device   *client.Device
	Type     *client.DeviceType
	StaleSec int64
	Latest   []latestValue
	Fields   []chartField
	Readings []client.Reading
	Messages []client.Message
	Commands []client.Command
	Twin     *client.Twin
	Delta    map[string]any
	// The features beside the registry; nil when the hub gave nothing.
	Config   *client.DeviceConfig
	Firmware []client.UpdateHistoryEntry
	Alerts   []client.Alert
}

func (p devicePage) PageTitle() string { return "Device " + p.Device.ID }

type latestValue struct {
	Field  string
	Value  any
	Time   time.Time
	Stream string
}

type chartField struct {
	Name string
	Unit string
}

func (d *Dashboard) device(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	id := r.PathValue("id")
	dev, err := s.api.GetDevice(ctx, id)
	if err != nil {
		return "", nil, err
	}
	p := devicePage{Device: dev}
	types, err := s.api.DeviceTypes(ctx)
	if err != nil {
		return "", nil, err
	}
	p.Type = typeIndex(types)[dev.Type]
	p.StaleSec = int64(staleAfter(p.Type).Seconds())
	rd, err := s.api.Readings(ctx, client.ReadingsQuery{DeviceID: id, Limit: 100})
	if err != nil {
		return "", nil, err
	}
	p.Readings = rd.Readings
	p.Latest, p.Fields = latestValues(p.Type, rd.Readings)
	msgs, err := s.api.Messages(ctx, client.MessagesQuery{DeviceID: id, Limit: 50})
	if err != nil {
		return "", nil, err
	}
	p.Messages = msgs.Messages
	if p.Commands, err = s.api.ListCommands(ctx, id, "", 20); err != nil {
		return "", nil, err
	}
	if p.Twin, err = s.api.GetTwin(ctx, id); err != nil {
		return "", nil, err
	}
	p.Delta = twinDelta(p.Twin)
	// Configuration, firmware and alerts: a device may have none of them
	// (404), and a hub may answer without one; the page shows what is.
	if c, err := s.api.DeviceConfig(ctx, id); err == nil {
		p.Config = c
	}
	if h, err := s.api.FirmwareHistory(ctx, id, ""); err == nil {
		if len(h) > 8 {
			h = h[len(h)-8:]
		}
		slices.Reverse(h)
		p.Firmware = h
	}
	if a, err := s.api.Alerts(ctx, client.AlertQuery{DeviceID: id, Limit: 10}); err == nil {
		p.Alerts = a
	}
	if len(p.Readings) > 50 {
		p.Readings = p.Readings[:50]
	}
	return "device", p, nil
}

// latestValues returns the newest value of each field in readings (newest
// first), and the numeric fields to chart: the type's declared int and
// float fields, then any other numeric field seen.
func latestValues(t *client.DeviceType, readings []client.Reading) ([]latestValue, []chartField) {
	seen := map[string]bool{}
	var latest []latestValue
	numeric := map[string]bool{}
	for _, rd := range readings {
		for k, v := range rd.Values {
			if _, ok := v.(float64); ok {
				numeric[k] = true
			}
			if seen[k] {
				continue
			}
			seen[k] = true
			latest = append(latest, latestValue{Field: k, Value: v, Time: rd.Time, Stream: rd.Stream})
		}
	}
	sort.Slice(latest, func(i, j int) bool { return latest[i].Field < latest[j].Field })
	var fields []chartField
	added := map[string]bool{}
	if t != nil {
		names := make([]string, 0, len(t.Fields))
		for n, f := range t.Fields {
			if f.Type == "int" || f.Type == "float" {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			fields = append(fields, chartField{Name: n, Unit: t.Fields[n].Unit})
			added[n] = true
		}
	}
	var extra []string
	for n := range numeric {
		if !added[n] {
			extra = append(extra, n)
		}
	}
	sort.Strings(extra)
	for _, n := range extra {
		fields = append(fields, chartField{Name: n})
	}
	return latest, fields
}

// twinDelta is what the device has yet to apply: the desired values that
// its reported values do not match.
func twinDelta(t *client.Twin) map[string]any {
	delta := map[string]any{}
	if t == nil {
		return delta
	}
	for k, v := range t.Desired.Values {
		if rv, ok := t.Reported.Values[k]; !ok || !reflect.DeepEqual(rv, v) {
			delta[k] = v
		}
	}
	return delta
}

// listQuery is the devices list's filter and order as a query string
// (without the cursor), and the same with the other order.
func listQuery(f client.ListOptions, connected string, limit int) (template.URL, template.URL) {
	v := url.Values{}
	for k, x := range map[string]string{"q": f.Query, "type": f.Type, "group": f.Group, "tag": f.Tag, "status": f.Status, "connected": connected} {
		if x != "" {
			v.Set(k, x)
		}
	}
	v.Set("limit", strconv.Itoa(limit))
	other := url.Values{}
	for k, x := range v {
		other[k] = x
	}
	if f.Sort == "last_seen" {
		v.Set("sort", "last_seen")
	} else {
		other.Set("sort", "last_seen")
	}
	return template.URL(v.Encode()), template.URL(other.Encode())
}
