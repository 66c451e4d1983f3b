package alerts

import (
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// flood counts the alerts raised in the current minute, per device and in
// all, and the ones refused for a cap, to be summed up in one alert_flood
// event when the minute ends.
type flood struct {
	window    time.Time // start of the current minute
	perDevice map[string]int
	global    int

	suppressed int64
	byReason   map[string]int64
	byRule     map[string]int64
	devices    map[string]struct{}
}

// suppress says why a new alert of r on device must not be raised now ("":
// it may), and counts it in the flood window.
func (s *Service) suppress(r *Rule, device string, now time.Time) string {
	if s.silenced(r.Name, device, now) {
		s.m.suppressed.WithLabelValues("silenced").Inc()
		return "silenced"
	}
	f := &s.flood
	s.roll(now)
	reason := ""
	switch {
	case s.opts.DevicePerMinute > 0 && f.perDevice[device] >= s.opts.DevicePerMinute:
		reason = "device_cap"
	case s.opts.GlobalPerMinute > 0 && f.global >= s.opts.GlobalPerMinute:
		reason = "global_cap"
	}
	if reason == "" {
		if f.perDevice == nil {
			f.perDevice = map[string]int{}
		}
		f.perDevice[device]++
		f.global++
		return ""
	}
	s.m.suppressed.WithLabelValues(reason).Inc()
	if f.byReason == nil {
		f.byReason, f.byRule, f.devices = map[string]int64{}, map[string]int64{}, map[string]struct{}{}
	}
	f.suppressed++
	f.byReason[reason]++
	f.byRule[r.Name]++
	f.devices[device] = struct{}{}
	return reason
}

// roll starts a new window when the minute changed, keeping the summary
// of the window that ended if it suppressed alerts.
func (s *Service) roll(now time.Time) {
	f := &s.flood
	w := now.Truncate(time.Minute)
	if w.Equal(f.window) {
		return
	}
	if f.suppressed > 0 {
		devs := make([]string, 0, len(f.devices))
		for d := range f.devices {
			devs = append(devs, d)
		}
		sort.Strings(devs)
		n := len(devs)
		if len(devs) > 20 {
			devs = devs[:20]
		}
		s.floodDone = append(s.floodDone, events.AlertFloodSummary{
			WindowStart: f.window, WindowEnd: f.window.Add(time.Minute), Suppressed: f.suppressed,
			ByReason: f.byReason, ByRule: f.byRule, Devices: devs, DeviceCount: n,
		})
	}
	s.flood = flood{window: w}
}

// floodChange returns the change with the alert_flood events of the windows
// that ended with suppressed alerts, or nil.
func (s *Service) floodChange(now time.Time) *commit.Change {
	s.roll(now)
	if len(s.floodDone) == 0 {
		return nil
	}
	ch := &commit.Change{}
	for i := range s.floodDone {
		ev, err := commit.NewEvent(events.Event{Type: events.AlertFlood, Time: now, Args: &s.floodDone[i]})
		if err != nil {
			s.log.Error("alert_flood event", "err", err)
			continue
		}
		ch.Events = append(ch.Events, ev)
	}
	s.floodDone = nil
	return ch
}

// silenced reports whether a silence covers (rule, device) at now.
func (s *Service) silenced(rule, device string, now time.Time) bool {
	for i := range s.silences {
		sl := &s.silences[i]
		if sl.Until.After(now) && (sl.Rule == "" || sl.Rule == rule) && (sl.DeviceID == "" || sl.DeviceID == device) {
			return true
		}
	}
	return false
}

type metrics struct {
	raised     *prometheus.CounterVec
	suppressed *prometheus.CounterVec
	open       prometheus.Gauge
	evaluated  prometheus.Counter
	errors     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		raised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_alerts_raised_total", Help: "Alerts raised (became active), by severity.",
		}, []string{"severity"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_alerts_suppressed_total",
			Help: "Alerts not raised: silenced, or over the per-device (device_cap) or global (global_cap) cap per minute.",
		}, []string{"reason"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devicehub_alerts_open", Help: "Alerts active or acknowledged that this hub evaluates.",
		}),
		evaluated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_alerts_evaluated_events_total", Help: "Events of devices with rules that the evaluator read.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_alerts_write_errors_total", Help: "Alert changes the store did not take.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.raised, m.suppressed, m.open, m.evaluated, m.errors)
	}
	return m
}
