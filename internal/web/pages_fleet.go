package web

import (
	"net/http"
	"sort"

	"github.com/devicehub/devicehub/client"
)

// tileLimit bounds the counts of the overview's tiles: past it a tile
// reads "1000+" rather than paging through the fleet.
const tileLimit = 1000

// fleetCounts are the overview's tiles of the features beside the
// registry; a count the hub cannot give (a feature off) is -1.
type fleetCounts struct {
	OpenAlerts    int
	NotApplied    int
	NotAppliedMax bool // more than tileLimit
	Rollouts      int
}

func (d *Dashboard) fleetCounts(r *http.Request, s *session) fleetCounts {
	ctx := r.Context()
	c := fleetCounts{OpenAlerts: -1, NotApplied: -1, Rollouts: -1}
	if a, err := s.api.Alerts(ctx, client.AlertQuery{States: []string{"open"}, Limit: tileLimit}); err == nil {
		c.OpenAlerts = len(a)
	}
	if l, err := s.api.DeviceConfigs(ctx, client.ConfigListOptions{NotApplied: true, Limit: tileLimit}); err == nil {
		c.NotApplied, c.NotAppliedMax = len(l.Configs), l.Next != ""
	}
	if rs, err := s.api.ListRollouts(ctx); err == nil {
		c.Rollouts = 0
		for _, ro := range rs {
			if ro.Status == "running" || ro.Status == "paused" {
				c.Rollouts++
			}
		}
	}
	return c
}

type alertsPage struct {
	State    string
	Alerts   []client.Alert
	Rules    []client.AlertRule
	Silences []client.Silence
}

func (alertsPage) PageTitle() string { return "Alerts" }

// alertStates are the state filters the alerts page offers.
var alertStates = map[string]bool{"open": true, "pending": true, "active": true, "acknowledged": true, "cleared": true}

func (d *Dashboard) alerts(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	p := alertsPage{State: r.URL.Query().Get("state")}
	q := client.AlertQuery{Limit: 200, DeviceID: r.URL.Query().Get("device_id")}
	switch {
	case p.State == "all":
	case alertStates[p.State]:
		q.States = []string{p.State}
	default:
		p.State, q.States = "open", []string{"open"}
	}
	var err error
	if p.Alerts, err = s.api.Alerts(ctx, q); err != nil {
		return "", nil, err
	}
	if p.Rules, err = s.api.AlertRules(ctx); err != nil {
		return "", nil, err
	}
	sort.Slice(p.Rules, func(i, j int) bool { return p.Rules[i].Name < p.Rules[j].Name })
	if p.Silences, err = s.api.Silences(ctx); err != nil {
		return "", nil, err
	}
	return "alerts", p, nil
}

type firmwarePage struct {
	Rollouts  []rolloutRow
	Artifacts []client.Artifact
}

type rolloutRow struct {
	client.Rollout
	Finished int
	Active   bool // running or paused: it can be paused, resumed, canceled
}

func (firmwarePage) PageTitle() string { return "Firmware" }

func (d *Dashboard) firmware(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	p := firmwarePage{}
	rs, err := s.api.ListRollouts(ctx)
	if err != nil {
		return "", nil, err
	}
	for i := range rs {
		p.Rollouts = append(p.Rollouts, rolloutRow{Rollout: rs[i], Finished: rs[i].Finished(), Active: rs[i].Status == "running" || rs[i].Status == "paused"})
	}
	if p.Artifacts, err = s.api.ListArtifacts(ctx); err != nil {
		return "", nil, err
	}
	return "firmware", p, nil
}

type rolloutPage struct {
	Rollout rolloutRow
	Devices []client.DeviceUpdate
}

func (p rolloutPage) PageTitle() string { return "Rollout " + p.Rollout.ID }

func (d *Dashboard) rollout(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	ro, err := s.api.GetRollout(ctx, r.PathValue("id"))
	if err != nil {
		return "", nil, err
	}
	p := rolloutPage{Rollout: rolloutRow{Rollout: *ro, Finished: ro.Finished(), Active: ro.Status == "running" || ro.Status == "paused"}}
	if p.Devices, err = s.api.RolloutDevices(ctx, ro.ID); err != nil {
		return "", nil, err
	}
	return "rollout", p, nil
}

type configPage struct {
	Templates  []client.Template
	NotApplied []client.ConfigStatusRow
	Next       string
	Status     string
}

func (configPage) PageTitle() string { return "Configuration" }

// configStatuses are the status filters the configuration page offers.
var configStatuses = map[string]bool{"applied": true, "modified": true, "error": true, "deactivating": true, "deactivated": true}

func (d *Dashboard) config(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	q := r.URL.Query()
	p := configPage{Status: q.Get("status")}
	var err error
	if p.Templates, err = s.api.Templates(ctx); err != nil {
		return "", nil, err
	}
	o := client.ConfigListOptions{After: q.Get("after"), Limit: 100}
	if configStatuses[p.Status] {
		o.Status = p.Status
	} else {
		p.Status, o.NotApplied = "", true
	}
	l, err := s.api.DeviceConfigs(ctx, o)
	if err != nil {
		return "", nil, err
	}
	p.NotApplied, p.Next = l.Configs, l.Next
	return "config", p, nil
}

type monitorsPage struct{ Monitors []client.Monitor }

func (monitorsPage) PageTitle() string { return "Monitors" }

func (d *Dashboard) monitors(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	m, err := s.api.Monitors(r.Context(), "")
	if err != nil {
		return "", nil, err
	}
	sort.Slice(m, func(i, j int) bool { return m[i].ID < m[j].ID })
	return "monitors", monitorsPage{Monitors: m}, nil
}
