package config

import (
	"fmt"
	"sort"

	"github.com/devicehub/devicehub/internal/alerts"
)

// AlertsConfig configures alert rules (internal/alerts).
type AlertsConfig struct {
	// Rules are the rules of each device type: the key is the type's name.
	Rules map[string][]alerts.RuleSpec `yaml:"rules"`
	Flood FloodConfig                  `yaml:"flood"`
}

// FloodConfig caps the alerts raised per minute; a negative cap turns it
// off.
type FloodConfig struct {
	PerDevicePerMinute int `yaml:"per_device_per_minute"`
	GlobalPerMinute    int `yaml:"global_per_minute"`
}

func defaultAlerts() AlertsConfig {
	return AlertsConfig{Flood: FloodConfig{PerDevicePerMinute: 10, GlobalPerMinute: 100}}
}

// RuleSpecs returns the configured rules with their device types, in a
// stable order.
func (a AlertsConfig) RuleSpecs() []alerts.RuleSpec {
	types := make([]string, 0, len(a.Rules))
	for t := range a.Rules {
		types = append(types, t)
	}
	sort.Strings(types)
	var out []alerts.RuleSpec
	for _, t := range types {
		for _, r := range a.Rules[t] {
			r.DeviceType = t
			out = append(out, r)
		}
	}
	return out
}

func (c *Config) checkAlerts() error {
	if c.Alerts.Flood.PerDevicePerMinute == 0 {
		return invalid("alerts.flood.per_device_per_minute", "must not be 0 (negative: no cap)")
	}
	if c.Alerts.Flood.GlobalPerMinute == 0 {
		return invalid("alerts.flood.global_per_minute", "must not be 0 (negative: no cap)")
	}
	types := map[string]bool{}
	for _, t := range c.DeviceTypes {
		types[t.Name] = true
	}
	names := map[string]string{}
	keys := make([]string, 0, len(c.Alerts.Rules))
	for t := range c.Alerts.Rules {
		keys = append(keys, t)
	}
	sort.Strings(keys)
	for _, t := range keys {
		if !types[t] {
			return invalid("alerts.rules."+t, "%q is not a declared device type", t)
		}
		for i, spec := range c.Alerts.Rules[t] {
			key := fmt.Sprintf("alerts.rules.%s[%d]", t, i)
			if spec.DeviceType != "" && spec.DeviceType != t {
				return invalid(key+".device_type", "the rule is listed under %s; leave device_type out", t)
			}
			spec.DeviceType = t
			if _, err := alerts.ParseRule(spec); err != nil {
				return invalid(key, "%s", err)
			}
			if prev, ok := names[spec.Name]; ok {
				return invalid(key+".name", "rule %q is declared twice (also at %s)", spec.Name, prev)
			}
			names[spec.Name] = key
		}
	}
	return nil
}
