package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

func newAlertsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "alerts",
		Aliases: []string{"alert"},
		Short:   "Alerts: list, acknowledge and clear them; rules and silences",
		Long: "Alert rules (alerts.rules in the configuration file, or created here) watch readings, presence,\n" +
			"status and refused messages. An alert is pending while its for period runs, then active,\n" +
			"acknowledged by an operator, and cleared when its condition ends or by hand; there is at\n" +
			"most one open alert per rule and device.",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
		Example: indent(`devicehub alerts list --state open
devicehub alerts ack alr_1a2b3c --note "on it"`),
	}
	cmd.AddCommand(newAlertsListCmd(g), newAlertsGetCmd(g), newAlertsActionCmd(g, "ack"), newAlertsActionCmd(g, "clear"),
		newAlertRulesCmd(g), newAlertsSilenceCmd(g), newAlertsSilencesCmd(g), newAlertsUnsilenceCmd(g))
	return cmd
}

func printAlerts(g *globals, w io.Writer, as []client.Alert) error {
	if g.json() {
		return writeJSON(w, as)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSEVERITY\tRULE\tDEVICE\tVALUE\tCOUNT\tSTARTED\tMESSAGE")
	for _, a := range as {
		v := "-"
		if a.Value != nil {
			v = fmt.Sprint(a.Value)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", a.ID, a.State, a.Severity, a.Rule, a.DeviceID, v, a.Count,
			a.StartedAt.Local().Format(time.DateTime), a.Message)
	}
	return tw.Flush()
}

func newAlertsListCmd(g *globals) *cobra.Command {
	var q client.AlertQuery
	var states string
	cmd := &cobra.Command{
		Use:   "list [--state open] [--severity S] [--device D] [--type T] [--rule R]",
		Short: "List alerts, newest first",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if states != "" {
				q.States = strings.Split(states, ",")
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			as, err := c.Alerts(cmd.Context(), q)
			if err != nil {
				return err
			}
			return printAlerts(g, cmd.OutOrStdout(), as)
		},
		Example: indent(`devicehub alerts list
devicehub alerts list --state open --severity critical
devicehub alerts list --device dev1 --rule too_hot --output json`),
	}
	f := cmd.Flags()
	f.StringVar(&states, "state", "", "comma separated: pending, active, acknowledged, cleared, open")
	f.StringVar(&q.Severity, "severity", "", "critical, major, minor, warning or info")
	f.StringVar(&q.DeviceID, "device", "", "only this device's alerts")
	f.StringVar(&q.DeviceType, "type", "", "only alerts of devices of this type")
	f.StringVar(&q.Rule, "rule", "", "only this rule's alerts")
	f.IntVar(&q.Limit, "limit", 0, "at most this many (default 100, at most 1000)")
	return cmd
}

func printOne(g *globals, w io.Writer, v any) error {
	return writeJSON(w, v)
}

func newAlertsGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get ALERT_ID",
		Short: "Show an alert",
		Args:  exactArgs(1, "ALERT_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			a, err := c.Alert(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printOne(g, cmd.OutOrStdout(), a)
		},
		Example: indent(`devicehub alerts get alr_1a2b3c`),
	}
}

func newAlertsActionCmd(g *globals, action string) *cobra.Command {
	var note string
	short := map[string]string{"ack": "Acknowledge an active alert", "clear": "Clear an open alert by hand"}[action]
	cmd := &cobra.Command{
		Use:   action + " ALERT_ID [--note TEXT]",
		Short: short,
		Args:  exactArgs(1, "ALERT_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			var a *client.Alert
			if action == "ack" {
				a, err = c.AcknowledgeAlert(cmd.Context(), args[0], note)
			} else {
				a, err = c.ClearAlert(cmd.Context(), args[0], note)
			}
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), a)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Alert %s is %s.\n", a.ID, a.State)
			return nil
		},
		Example: indent(fmt.Sprintf(`devicehub alerts %s alr_1a2b3c --note "replaced the fan"`, action)),
	}
	cmd.Flags().StringVar(&note, "note", "", "what you say about it")
	return cmd
}

func newAlertRulesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "List alert rules",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			rs, err := c.AlertRules(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, rs)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tKIND\tSEVERITY\tWHEN\tCLEAR\tFOR/COUNT\tSOURCE")
			for _, r := range rs {
				fc := r.For + r.Count
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.DeviceType, r.Kind, orDash(r.Severity), r.When, orDash(r.Clear), orDash(fc), r.Source)
			}
			return tw.Flush()
		},
		Example: indent(`devicehub alerts rules
devicehub alerts rules create --name too_hot --type Thermostat --when 'temperature > 80' --clear 'temperature < 75' --for 5m --severity major
devicehub alerts rules test too_hot --device dev1`),
	}
	cmd.AddCommand(newAlertRulesCreateCmd(g), newAlertRulesDeleteCmd(g), newAlertRulesTestCmd(g))
	return cmd
}

func ruleFlags(cmd *cobra.Command, r *client.AlertRule, labels *[]string) {
	f := cmd.Flags()
	f.StringVar(&r.Name, "name", "", "the rule's name")
	f.StringVar(&r.DeviceType, "type", "", "the device type it watches")
	f.StringVar(&r.When, "when", "", "condition: 'temperature > 80', 'offline > 5m', 'status == error', 'nodata(temperature) > 15m' ...")
	f.StringVar(&r.Clear, "clear", "", "reading rules: the condition that ends the alert (hysteresis)")
	f.StringVar(&r.For, "for", "", "reading rules: how long the condition must hold (5m)")
	f.StringVar(&r.Count, "count", "", "reading rules: N readings within D ('3 in 10m')")
	f.StringVar(&r.Severity, "severity", "", "critical, major, minor, warning (default) or info")
	f.StringVar(&r.Message, "message", "", "Go template: {{.Device.Name}}, {{.Value}}, {{.Rule}} ...")
	f.StringVar(&r.Repeat, "repeat", "", "least time between two alert_updated events (default 1m)")
	f.StringArrayVar(labels, "label", nil, "label key=value (repeatable)")
}

func parseLabels(labels []string) (map[string]string, error) {
	if len(labels) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("--label %q: want key=value", l)
		}
		m[k] = v
	}
	return m, nil
}

func newAlertRulesCreateCmd(g *globals) *cobra.Command {
	var r client.AlertRule
	var labels []string
	cmd := &cobra.Command{
		Use:   "create --name N --type T --when COND [--clear COND] [--for D | --count 'N in D'] [--severity S]",
		Short: "Create an alert rule (checked like the configuration file's)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if r.Name == "" || r.DeviceType == "" || r.When == "" {
				return usage(cmd, errors.New("--name, --type and --when are required"))
			}
			var err error
			if r.Labels, err = parseLabels(labels); err != nil {
				return usage(cmd, err)
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			out, err := c.CreateAlertRule(cmd.Context(), r)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Rule %s created (%s rule on %s).\n", out.Name, out.Kind, out.DeviceType)
			return nil
		},
		Example: indent(`devicehub alerts rules create --name too_hot --type Thermostat --when 'temperature > 80' --clear 'temperature < 75' --for 5m --severity major
devicehub alerts rules create --name silent --type Thermostat --when 'offline > 10m' --severity critical --label team=field
devicehub alerts rules create --name flapping --type Thermostat --when 'disconnects >= 5 in 10m'`),
	}
	ruleFlags(cmd, &r, &labels)
	return cmd
}

func newAlertRulesDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a rule created over the API (its open alerts are cleared)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteAlertRule(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Rule %s deleted.\n", args[0])
			return nil
		},
		Example: indent(`devicehub alerts rules delete too_hot`),
	}
}

func newAlertRulesTestCmd(g *globals) *cobra.Command {
	var r client.AlertRule
	var labels []string
	var device string
	var hours float64
	cmd := &cobra.Command{
		Use:   "test [NAME | --when COND ...] --device D [--hours H]",
		Short: "Tell how often a rule would have fired on a device's readings (last 24 hours)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if device == "" {
				return usage(cmd, errors.New("--device is required"))
			}
			name := ""
			var rule *client.AlertRule
			switch {
			case len(args) == 1 && r.When == "":
				name = args[0]
			case len(args) == 0 && r.When != "":
				if r.Name == "" {
					r.Name = "test"
				}
				rule = &r
			default:
				return usage(cmd, errors.New("name a rule, or give one with --when (not both)"))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			res, err := c.TestAlertRule(cmd.Context(), name, rule, device, hours)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, res)
			}
			fmt.Fprintf(w, "Rule %s on %s, %s to %s: %d readings, fired %d times, cleared %d, fired again while open %d; open at the end: %v.\n",
				res.Rule, res.DeviceID, res.From.Local().Format(time.DateTime), res.To.Local().Format(time.DateTime),
				res.Readings, res.Fired, res.Cleared, res.Refired, res.OpenAtEnd)
			for _, f := range res.Firings {
				cl := "still open"
				if f.Cleared != nil {
					cl = "cleared " + f.Cleared.Local().Format(time.DateTime)
				}
				fmt.Fprintf(w, "  %s  value %v  %s\n", f.At.Local().Format(time.DateTime), f.Value, cl)
			}
			return nil
		},
		Example: indent(`devicehub alerts rules test too_hot --device dev1
devicehub alerts rules test --when 'temperature > 30' --for 10m --device dev1 --hours 6`),
	}
	ruleFlags(cmd, &r, &labels)
	cmd.Flags().StringVar(&device, "device", "", "the device whose readings to use")
	cmd.Flags().Float64Var(&hours, "hours", 0, "how far back (default 24)")
	return cmd
}

func newAlertsSilenceCmd(g *globals) *cobra.Command {
	var rule, device, note string
	var d time.Duration
	cmd := &cobra.Command{
		Use:   "silence [--rule R] [--device D] --for DURATION [--note TEXT]",
		Short: "Silence a rule, a device, or a rule on a device for a time",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rule == "" && device == "" {
				return usage(cmd, errors.New("--rule or --device is required"))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			s, err := c.Silence(cmd.Context(), rule, device, d, note)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Silence %s until %s.\n", s.ID, s.Until.Local().Format(time.DateTime))
			return nil
		},
		Example: indent(`devicehub alerts silence --device dev1 --for 2h --note "maintenance"
devicehub alerts silence --rule too_hot --for 30m`),
	}
	f := cmd.Flags()
	f.StringVar(&rule, "rule", "", "the rule to silence")
	f.StringVar(&device, "device", "", "the device to silence")
	f.DurationVar(&d, "for", time.Hour, "how long")
	f.StringVar(&note, "note", "", "why")
	return cmd
}

func newAlertsSilencesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "silences",
		Short: "List the silences in force",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ss, err := c.Silences(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, ss)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRULE\tDEVICE\tUNTIL\tNOTE")
			for _, s := range ss {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, orDash(s.Rule), orDash(s.DeviceID), s.Until.Local().Format(time.DateTime), s.Note)
			}
			return tw.Flush()
		},
		Example: indent(`devicehub alerts silences`),
	}
}

func newAlertsUnsilenceCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unsilence SILENCE_ID",
		Short: "End a silence",
		Args:  exactArgs(1, "SILENCE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if err := c.Unsilence(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Silence %s ended.\n", args[0])
			return nil
		},
		Example: indent(`devicehub alerts unsilence sil_1a2b3c`),
	}
}
