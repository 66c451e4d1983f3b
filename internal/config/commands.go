package config

import (
	"time"

	"gopkg.in/yaml.v3"

	"github.com/devicehub/devicehub/internal/devicetype"
)

// CommandsConfig configures commands to devices (internal/commands).
type CommandsConfig struct {
	// ConnectDelay is how long after a device connects its undelivered
	// commands are handed over again, so that it has subscribed.
	ConnectDelay time.Duration `yaml:"connect_delay"`
	// ResendInterval is how often a command the device has not
	// acknowledged is handed over again while it is connected.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// FleetConcurrency bounds the commands a fleet job stores at once.
	FleetConcurrency int `yaml:"fleet_concurrency"`
}

func defaultCommands() CommandsConfig {
	return CommandsConfig{ConnectDelay: 500 * time.Millisecond, ResendInterval: 30 * time.Second, FleetConcurrency: 256}
}

func (c *Config) checkCommands() error {
	cc := c.Commands
	if cc.ConnectDelay < 0 || cc.ConnectDelay > time.Minute {
		return invalid("commands.connect_delay", "must be from 0s to 1m")
	}
	if cc.ResendInterval < time.Second {
		return invalid("commands.resend_interval", "must be at least 1s")
	}
	if cc.FleetConcurrency < 1 || cc.FleetConcurrency > 10000 {
		return invalid("commands.fleet_concurrency", "must be from 1 to 10000")
	}
	return nil
}

// commandParams reads the mapping form of each type's commands,
//
//	commands:
//	  reboot: {}
//	  set_interval: {params: {seconds: {type: int, min: 1, max: 86400, required: true}}}
//
// into their parameters, and leaves the list of names in its place, so
// that the list form (commands: [reboot, set_interval]) keeps working.
func commandParams(types *yaml.Node) (map[string]map[string]devicetype.CommandSpec, error) {
	if types.Kind != yaml.MappingNode {
		return nil, nil // decodeNode reports it
	}
	out := map[string]map[string]devicetype.CommandSpec{}
	for i := 0; i+1 < len(types.Content); i += 2 {
		name, t := types.Content[i].Value, types.Content[i+1]
		if t.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(t.Content); j += 2 {
			if t.Content[j].Value != "commands" || t.Content[j+1].Kind != yaml.MappingNode {
				continue
			}
			m := t.Content[j+1]
			list := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: m.Line, Column: m.Column}
			for k := 0; k+1 < len(m.Content); k += 2 {
				cmd, spec := m.Content[k], m.Content[k+1]
				list.Content = append(list.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: cmd.Value, Line: cmd.Line, Column: cmd.Column})
				var cs devicetype.CommandSpec
				if err := decodeNode(spec, &cs, "device_types."+name+".commands."+cmd.Value); err != nil {
					return nil, err
				}
				if cs.Params != nil {
					if out[name] == nil {
						out[name] = map[string]devicetype.CommandSpec{}
					}
					out[name][cmd.Value] = cs
				}
			}
			t.Content[j+1] = list
		}
	}
	return out, nil
}
