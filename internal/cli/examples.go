package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the Examples sections of the help pages, by command path
// without the leading "devicehub". Every visible command has some; a test
// parses each line against the command tree so that they cannot drift.
var examples = map[string]string{
	"": `# Run a hub with the example configuration (MQTT on 1884 if Mosquitto holds 1883)
devicehub serve --config devicehub.example.yaml --mqtt-addr :1884
# Then, from the same directory (the CLI finds devicehub-data/admin.token)
devicehub provision dev1 --type WeatherStation`,
	"serve": `devicehub serve --config devicehub.example.yaml
# Another MQTT port when something (Mosquitto) holds 1883, and another data directory
devicehub serve --config devicehub.example.yaml --mqtt-addr :1884 --data-dir /var/lib/devicehub
# The same with the environment
DEVICEHUB_MQTT_ADDR=:1884 DEVICEHUB_HTTP_ADDR=:8081 devicehub serve`,
	"provision": `devicehub provision dev1 --type WeatherStation
devicehub provision dev1 --type WeatherStation --name "Roof station" --group roof --tag outdoor --output json
# New credentials for an existing device (the old ones stop working at once)
devicehub provision dev1 --type WeatherStation --replace`,
	"devices": `devicehub devices
devicehub devices --type WeatherStation --connected=false
devicehub devices --query roof --all --output json`,
	"devices get":      `devicehub devices get dev1`,
	"devices messages": "# The device's message log: every message it sent, accepted or rejected\ndevicehub devices messages dev1\ndevicehub devices messages dev1 --rejected --limit 20",
	"devices update": `devicehub devices update dev1 --name "Roof station" --group roof --tag outdoor --tag solar
devicehub devices update dev1 --lat 48.85 --lon 2.35 --location "Paris, roof" --firmware 1.4.2`,
	"devices disable": `devicehub devices disable dev1 --reason "stolen"`,
	"devices enable":  `devicehub devices enable dev1`,
	"devices revoke":  `devicehub devices revoke dev1 --reason "decommissioned"`,
	"devices rotate": `devicehub devices rotate dev1
devicehub devices rotate dev1 --overlap 1h`,
	"devices certificate": `devicehub devices certificate dev1 --cert dev1.pem
devicehub devices certificate dev1 --remove`,
	"devices import": `devicehub devices import devices.csv
devicehub devices import devices.json --partial`,
	"readings": `devicehub readings dev1
devicehub readings dev1 --field temperature --from 24h --limit 1000 --output json`,
	"latest": `# The newest value of every field of every device, in one request
devicehub latest
devicehub latest --type WeatherStation --field temperature --output json`,
	"aggregate": `# Min, max, avg, count and last temperature of dev1 over a week, in 500 buckets
devicehub aggregate dev1 --field temperature --from 168h --buckets 500
devicehub aggregate dev1 --field temperature --from 2025-03-01T00:00:00Z --to 2025-03-02T00:00:00Z --buckets 24 --output json
# A year from the 1-hour rollups (retention.rollups)
devicehub aggregate dev1 --field temperature --from 8760h --buckets 365 --resolution 1h`,
	"events": `devicehub events
devicehub events --type device_data_received --device-type WeatherStation
devicehub events --device-id dev1 --from 0`,
	"types": `devicehub types
devicehub types --output json`,
	"token": `devicehub token create --role viewer
devicehub token list`,
	"token create": `devicehub token create --role viewer
devicehub token create --name ci-deploy --role operator --output json`,
	"token list":   `devicehub token list`,
	"token revoke": `devicehub token revoke 3f9c2a1b7d4e8f60`,
	"audit": `# The audit trail: what operators (tokens) asked of the API
devicehub audit
devicehub audit --failed --since 24h
devicehub audit --target dev1`,
	"groups": `devicehub groups
devicehub groups create roof --name "Roof devices"`,
	"groups list":    `devicehub groups list`,
	"groups create":  `devicehub groups create roof --name "Roof devices"`,
	"groups rename":  `devicehub groups rename roof "Roof stations"`,
	"groups devices": `devicehub groups devices roof`,
	"provisioning": `devicehub provisioning list
devicehub provisioning approve 8d2f0c1e`,
	"provisioning list": `devicehub provisioning list
devicehub provisioning list --all --output json`,
	"provisioning get": `devicehub provisioning get 8d2f0c1e`,
	"provisioning approve": `devicehub provisioning approve 8d2f0c1e
devicehub provisioning approve 8d2f0c1e --device-id roof-station-2`,
	"provisioning reject": `devicehub provisioning reject 8d2f0c1e --reason "unknown device"`,
	"provisioning tokens": `devicehub provisioning tokens create --type WeatherStation --max-uses 10
devicehub provisioning tokens list`,
	"provisioning tokens create": `devicehub provisioning tokens create --type WeatherStation --max-uses 10
devicehub provisioning tokens create --type WeatherStation --group roof --expires 24h --auto-approve --output json`,
	"provisioning tokens list":   `devicehub provisioning tokens list`,
	"provisioning tokens revoke": `devicehub provisioning tokens revoke 5b1e9a70`,
	"command": `devicehub command send dev1 reboot
devicehub command list dev1`,
	"command send": `devicehub command send dev1 reboot --wait --timeout 30s
devicehub command send --group north reboot
devicehub command send dev1 set_interval --payload '{"seconds": 30}' --expires-in 10m`,
	"command list": `devicehub command list dev1
devicehub command list dev1 --status queued`,
	"command get":    `devicehub command get cmd_187c2d1e9a4b5c60a1b2c3d4`,
	"command cancel": `devicehub command cancel cmd_187c2d1e9a4b5c60a1b2c3d4`,
	"command job": `devicehub command job job_187c2d1e9a4b5c60a1b2c3d4
devicehub command job job_187c2d1e9a4b5c60a1b2c3d4 --devices --status failed`,
	"send": `devicehub send dev1 reboot --wait
devicehub send --group north reboot
devicehub send --type WeatherStation --tag roof --online set_interval --payload '{"seconds": 30}'`,
	"twin": `devicehub twin show dev1
devicehub twin patch dev1 '{"interval": 30}'`,
	"twin show": `devicehub twin show dev1
devicehub twin show dev1 --output json`,
	"twin set": `devicehub twin set dev1 '{"interval": 30, "led": "off"}'
devicehub twin set dev1 '{"interval": 30}' --version 4`,
	"twin patch": `devicehub twin patch dev1 '{"interval": 60, "led": null}'
devicehub twin patch dev1 '{"interval": 60}' --version 5`,
	"simulate": `# Five devices joining with a provisioning token (approve them with devicehub provisioning approve)
devicehub simulate --devices 5 --rate 2 --type WeatherStation --mqtt mqtt://127.0.0.1:1884 --provisioning-token "$TOKEN"
# A hundred devices provisioned through the admin API, with dropped connections, for ten minutes
devicehub simulate --devices 100 --rate 1 --type WeatherStation --drop-every 1m --duration 10m
# Fifty devices that take firmware updates (verified with the hub's key), 10% of installs failing
devicehub simulate --devices 50 --rate 0.2 --type WeatherStation --firmware-failures 10%`,
	"bench": `devicehub bench ingest --out bench-results
devicehub bench ingest limits connections presence query --out bench-results --rounds 5
# The report and charts again from a run's results, without running anything
devicehub bench report --from bench-results/results.json`,
	"bench report": `devicehub bench report --from bench-results/results.json
# Into another directory, leaving the run's report as it is
devicehub bench report --from bench-results/results.json --out bench-rerendered`,
	"monitors": `devicehub monitors create --topic 'device_*' --transport http --url https://example.com/hook
devicehub monitors list`,
	"monitors create": `devicehub monitors create --topic 'device_*' --transport http --url https://example.com/hook
devicehub monitors create --topic 'device_data_received[type=WeatherStation]' --transport tcp --replay --format json`,
	"monitors list": `devicehub monitors list
devicehub monitors list --condition 'status = "DISABLED"'`,
	"monitors find":          `devicehub monitors find --topic device_connected`,
	"monitors get":           `devicehub monitors get mon_1a2b3c`,
	"monitors delete":        `devicehub monitors delete mon_1a2b3c`,
	"monitors enable":        `devicehub monitors enable mon_1a2b3c`,
	"monitors rotate-secret": `devicehub monitors rotate-secret mon_1a2b3c --overlap 24h`,
	"monitors rotate-token":  `devicehub monitors rotate-token mon_1a2b3c`,
	"monitors listen":        `devicehub monitors listen mon_1a2b3c --token "$MONITOR_TOKEN" --addr 127.0.0.1:8883`,
	"templates": `devicehub templates create ntp --config '{"ntp": {"server": "{{ ntp_server }}"}}' --default-var ntp_server=pool.ntp.org
devicehub templates list`,
	"templates list": `devicehub templates list
devicehub templates list --output json`,
	"templates get": `devicehub templates get ntp`,
	"templates create": `devicehub templates create ntp --config '{"ntp": {"server": "{{ ntp_server }}"}}' --default-var ntp_server=pool.ntp.org
# From a file, given to every new router, and never removable from a device
devicehub templates create base --config @base.json --default --required --type Router`,
	"templates edit": `# Re-renders every device using it in the background; prints the job
devicehub templates edit ntp --default-var ntp_server=ntp.example.com
devicehub templates edit ntp --config @ntp.json --output json`,
	"templates delete": `devicehub templates delete ntp`,
	"config": `devicehub config set router-1 --template base --template ntp --var ntp_server=10.0.0.1
devicehub config get router-1 --rendered
devicehub config list --not-applied`,
	"config get": `devicehub config get router-1
devicehub config get router-1 --rendered --output json`,
	"config set": `devicehub config set router-1 --template base --template ntp --var ntp_server=10.0.0.1
devicehub config set router-1 --overrides '{"ntp": {"enabled": false}}' --backend yaml`,
	"config preview": `devicehub config preview router-1 --template base --template ntp`,
	"config list": `devicehub config list --not-applied
devicehub config list --status error --all --output json`,
	"config deactivate": `devicehub config deactivate router-1`,
	"config reactivate": `devicehub config reactivate router-1`,
	"config history":    `devicehub config history router-1 --rendered`,
	"config restore":    `devicehub config restore router-1 3`,
	"config group": `devicehub config group north
devicehub config group north --template base --template ntp --var ntp_server=10.1.0.1`,
	"config job": `devicehub config job job_4f2a --wait`,
	"users": `devicehub users add alice --role admin
devicehub users list`,
	"users add": `devicehub users add alice --role admin
# In a script: the password from the first line of stdin
echo "$PASSWORD" | devicehub users add bob --role viewer --password-stdin`,
	"users list":   `devicehub users list`,
	"users remove": `devicehub users remove bob`,
}

// setExamples sets the Example of every command from examples.
func setExamples(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := strings.TrimPrefix(strings.TrimPrefix(c.CommandPath(), root.Name()), " ")
		if ex, ok := examples[path]; ok {
			c.Example = indent(ex)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

func indent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
