package cli

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/monitorclient"
)

func newMonitorsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "monitors",
		Aliases: []string{"monitor"},
		Short:   "Push monitors: deliver events to outside systems by webhook or stream",
		Long: "A monitor subscribes an outside system to topics of events (device_*, config_*, *,\n" +
			"device_data_received[type=sensor,group=north]). An http monitor PUTs or POSTs signed batches\n" +
			"to a URL; a tcp monitor is a stream its receiver reads from the hub's monitor port or\n" +
			"WebSocket (see `devicehub monitors listen`).",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newMonitorsCreateCmd(g), newMonitorsListCmd(g), newMonitorsGetCmd(g), newMonitorsFindCmd(g),
		newMonitorsDeleteCmd(g), newMonitorsEnableCmd(g), newMonitorsRotateSecretCmd(g), newMonitorsRotateTokenCmd(g),
		newMonitorsListenCmd(g))
	return cmd
}

func newMonitorsCreateCmd(g *globals) *cobra.Command {
	var spec client.MonitorSpec
	var duration float64
	cmd := &cobra.Command{
		Use:   "create --topic T [--topic T...] --transport http --url URL | --transport tcp",
		Short: "Create a monitor and print its secret or stream token (shown only once)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(spec.Topics) == 0 {
				return usage(cmd, errors.New("--topic is required"))
			}
			if cmd.Flags().Changed("batch-duration") {
				spec.BatchDuration = &duration
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			m, err := c.CreateMonitor(cmd.Context(), spec)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, m)
			}
			fmt.Fprintf(w, "Monitor %s created (%s, status %s).\n", m.Monitor.ID, m.Monitor.Transport, m.Monitor.Status)
			if m.Secret != "" {
				fmt.Fprintf(w, "Signing secret (Standard Webhooks; shown only once):\n\n  %s\n", m.Secret)
			}
			if m.Token != "" {
				fmt.Fprintf(w, "Stream token (shown only once):\n\n  %s\n", m.Token)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&spec.Topics, "topic", nil, "topic (repeatable): device_*, *, device_data_received[type=sensor]")
	f.StringVar(&spec.Transport, "transport", "http", "http or tcp")
	f.StringVar(&spec.URL, "url", "", "http: where to send batches")
	f.StringVar(&spec.Method, "method", "", "http: PUT (default) or POST")
	f.StringVar(&spec.BasicAuth, "basic-auth", "", "http: user:password")
	f.IntVar(&spec.ConnectTimeoutMS, "connect-timeout-ms", 0, "http: connect timeout (0: 5000)")
	f.IntVar(&spec.ResponseTimeoutMS, "response-timeout-ms", 0, "http: response timeout (0: 5000)")
	f.StringVar(&spec.Ack, "ack", "", "tcp: explicit or off (default)")
	f.IntVar(&spec.BatchSize, "batch-size", 0, "upper bound of events per delivery (default 100)")
	f.Float64Var(&duration, "batch-duration", 10, "upper bound of seconds an event waits for its batch")
	f.StringVar(&spec.Compression, "compression", "", "none (default) or zlib (gzip means zlib)")
	f.StringVar(&spec.Format, "format", "", "json (default) or xml")
	f.BoolVar(&spec.AutoReplayOnConnect, "replay", false, "keep missed events and deliver them on reconnect")
	f.StringVar(&spec.Description, "description", "", "what the monitor is for")
	return cmd
}

func printMonitors(g *globals, cmd *cobra.Command, ms []client.Monitor) error {
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, ms)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTRANSPORT\tSTATUS\tTOPICS\tTARGET\tBACKLOG\tLAST SENT")
	for _, m := range ms {
		target := m.URL
		if m.Transport == "tcp" {
			target = "ack " + m.Ack
		}
		last := "-"
		if m.LastSent != nil {
			last = m.LastSent.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.ID, m.Transport, m.Status, strings.Join(m.Topics, ","), target, m.Backlog, last)
	}
	return tw.Flush()
}

func newMonitorsListCmd(g *globals) *cobra.Command {
	var cond string
	cmd := &cobra.Command{
		Use:   "list [--condition 'status = \"DISABLED\"']",
		Short: "List monitors, all or those matching a condition",
		Long: "Conditions compare attributes with =, !=, <, <=, >, >= and combine with and, or, not:\n" +
			"  status = \"DISABLED\"\n  transport = \"http\" and status != \"ACTIVE\"\n  topic = \"device_*\" or batch_size > 10",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ms, err := c.Monitors(cmd.Context(), cond)
			if err != nil {
				return err
			}
			return printMonitors(g, cmd, ms)
		},
	}
	cmd.Flags().StringVar(&cond, "condition", "", "only monitors matching this condition")
	return cmd
}

func newMonitorsFindCmd(g *globals) *cobra.Command {
	var topics []string
	cmd := &cobra.Command{
		Use:   "find --topic T [--topic T...]",
		Short: "Find the monitor with exactly these topics",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(topics) == 0 {
				return usage(cmd, errors.New("--topic is required"))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			m, err := c.MonitorByTopics(cmd.Context(), topics)
			if err != nil {
				return err
			}
			if m == nil {
				return fmt.Errorf("no monitor has exactly the topics %s", strings.Join(topics, ", "))
			}
			return printMonitor(g, cmd, m)
		},
	}
	cmd.Flags().StringArrayVar(&topics, "topic", nil, "topic (repeatable)")
	return cmd
}

func printMonitor(g *globals, cmd *cobra.Command, m *client.Monitor) error {
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, m)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(w, string(b))
	return nil
}

func newMonitorsGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get MONITOR_ID",
		Short: "Show a monitor's definition and state",
		Args:  exactArgs(1, "MONITOR_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			m, err := c.Monitor(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printMonitor(g, cmd, m)
		},
	}
}

func newMonitorsDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete MONITOR_ID",
		Short: "Delete a monitor",
		Args:  exactArgs(1, "MONITOR_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteMonitor(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Monitor %s deleted.\n", args[0])
			return nil
		},
	}
}

func newMonitorsEnableCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "enable MONITOR_ID",
		Short: "Enable a DISABLED monitor again",
		Args:  exactArgs(1, "MONITOR_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			m, err := c.EnableMonitor(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Monitor %s is %s.\n", m.ID, m.Status)
			return nil
		},
	}
}

func newMonitorsRotateSecretCmd(g *globals) *cobra.Command {
	var overlap time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-secret MONITOR_ID [--overlap 24h]",
		Short: "Give an http monitor a new signing secret (the old one signs too during the overlap)",
		Args:  exactArgs(1, "MONITOR_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("overlap") && overlap == 0 {
				overlap = -1
			}
			sec, err := c.RotateMonitorSecret(cmd.Context(), args[0], overlap)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"secret": sec})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "New signing secret (shown only once):\n\n  %s\n", sec)
			return nil
		},
	}
	cmd.Flags().DurationVar(&overlap, "overlap", 0, "how long the old secret keeps signing (default: the hub's monitors.secret_overlap; 0s: not at all)")
	return cmd
}

func newMonitorsRotateTokenCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-token MONITOR_ID",
		Short: "Give a tcp monitor a new stream token",
		Args:  exactArgs(1, "MONITOR_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			tok, err := c.RotateMonitorToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"token": tok})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "New stream token (shown only once):\n\n  %s\n", tok)
			return nil
		},
	}
}

func newMonitorsListenCmd(g *globals) *cobra.Command {
	var addr, wsURL, token string
	var useTLS, insecure bool
	cmd := &cobra.Command{
		Use:   "listen MONITOR_ID --token T (--addr HOST:PORT | --ws URL)",
		Short: "Receive a tcp monitor's stream and print its events as JSON lines",
		Args:  exactArgs(1, "MONITOR_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				token = lookupEnv("DEVICEHUB_MONITOR_TOKEN")
			}
			if token == "" {
				return usage(cmd, errors.New("--token is required (or DEVICEHUB_MONITOR_TOKEN)"))
			}
			if (addr == "") == (wsURL == "") {
				return usage(cmd, errors.New("give one of --addr and --ws"))
			}
			opts := monitorclient.StreamOptions{Addr: addr, URL: wsURL, MonitorID: args[0], Token: token}
			if useTLS || strings.HasPrefix(wsURL, "wss:") {
				opts.TLS = &tls.Config{InsecureSkipVerify: insecure} //nolint:gosec // only when asked for with --insecure
			}
			w := cmd.OutOrStdout()
			enc := json.NewEncoder(w)
			opts.Callback = func(b *monitorclient.Batch) bool {
				for _, e := range b.Events {
					if enc.Encode(e) != nil {
						return false
					}
				}
				return true
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			return monitorclient.NewStream(opts).Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "", "the hub's monitor port (monitors.addr)")
	f.StringVar(&wsURL, "ws", "", "the WebSocket stream, ws://HOST/api/v1/monitors/stream")
	f.StringVar(&token, "token", "", "the monitor's stream token (env DEVICEHUB_MONITOR_TOKEN)")
	f.BoolVar(&useTLS, "tls", false, "the monitor port uses TLS")
	f.BoolVar(&insecure, "insecure", false, "do not verify the hub's TLS certificate")
	return cmd
}
