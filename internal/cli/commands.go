package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/config"
)

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

func newServeCmd(g *globals, serve ServeFunc) *cobra.Command {
	var configPath, mqttAddr, httpAddr string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub",
		Long: "Run the hub until SIGINT or SIGTERM. With no configuration it runs with embedded defaults:\n" +
			"an MQTT broker on :1883, the API on :8080, SQLite in ./devicehub-data.",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			var o config.Overrides
			if cmd.Flags().Changed("data-dir") {
				o.DataDir = &g.dataDir
			}
			if cmd.Flags().Changed("mqtt-addr") {
				o.MQTTAddr = &mqttAddr
			}
			if cmd.Flags().Changed("http-addr") {
				o.HTTPAddr = &httpAddr
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			return serve(ctx, configPath, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML configuration file")
	f.StringVar(&mqttAddr, "mqtt-addr", "", "MQTT listen address (env DEVICEHUB_MQTT_ADDR; default :1883)")
	f.StringVar(&httpAddr, "http-addr", "", "HTTP listen address (env DEVICEHUB_HTTP_ADDR; default :8080)")
	return cmd
}

func newProvisionCmd(g *globals) *cobra.Command {
	var req client.ProvisionRequest
	cmd := &cobra.Command{
		Use:   "provision DEVICE_ID --type T",
		Short: "Provision a device and print its credentials (shown only once)",
		Args:  exactArgs(1, "DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Type == "" {
				return usage(cmd, errors.New("--type is required"))
			}
			req.ID = args[0]
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			p, err := c.ProvisionDevice(cmd.Context(), req)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, p.Credentials)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "Device %s provisioned (type %s).\n", p.Credentials.DeviceID, p.Device.Type)
			fmt.Fprintf(tw, "Save these credentials now: they are shown only once.\n\n")
			fmt.Fprintf(tw, "  device id\t%s\n", p.Credentials.DeviceID)
			fmt.Fprintf(tw, "  mqtt username\t%s\n", p.Credentials.MQTTUsername)
			fmt.Fprintf(tw, "  mqtt password\t%s\n", p.Credentials.MQTTPassword)
			fmt.Fprintf(tw, "  api key\t%s\n", p.Credentials.APIKey)
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Type, "type", "", "device type (required)")
	f.StringVar(&req.Name, "name", "", "display name")
	f.StringVar(&req.Group, "group", "", "device group")
	f.StringSliceVar(&req.Tags, "tag", nil, "tag (repeatable)")
	f.BoolVar(&req.Replace, "replace", false, "re-provision an existing device: new credentials, the old ones stop working")
	return cmd
}

func newDevicesCmd(g *globals) *cobra.Command {
	var o client.ListOptions
	var connected bool
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "List devices (devices get ID shows one)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("connected") {
				o.Connected = &connected
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			list, err := c.ListDevices(cmd.Context(), o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, list)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tNAME\tGROUP\tSTATUS\tCONNECTED\tLAST SEEN")
			for _, d := range list.Devices {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\n", d.ID, d.Type, dash(d.Name), dash(d.Group), dash(d.Status), d.Connected, timeOrDash(d.LastSeen))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if list.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --after %s\n", list.Next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Type, "type", "", "only devices of this type")
	f.StringVar(&o.Group, "group", "", "only devices in this group")
	f.StringVar(&o.Status, "status", "", "only devices with this status")
	f.BoolVar(&connected, "connected", false, "only connected (true) or disconnected (false) devices")
	f.StringVar(&o.After, "after", "", "list devices after this id (the previous page's last)")
	f.IntVar(&o.Limit, "limit", 0, "page size (default 100, at most 1000)")
	cmd.AddCommand(&cobra.Command{
		Use:   "get DEVICE_ID",
		Short: "Show one device",
		Args:  exactArgs(1, "DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			d, err := c.GetDevice(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, d)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			rows := [][2]string{
				{"id", d.ID}, {"type", d.Type}, {"name", dash(d.Name)}, {"group", dash(d.Group)},
				{"tags", dash(strings.Join(d.Tags, ", "))}, {"status", dash(d.Status)},
				{"connected", strconv.FormatBool(d.Connected)}, {"last seen", timeOrDash(d.LastSeen)},
				{"disabled", strconv.FormatBool(d.Disabled)},
				{"created", d.CreatedAt.Format(time.RFC3339)}, {"updated", d.UpdatedAt.Format(time.RFC3339)},
			}
			if len(d.Metadata) > 0 {
				rows = append(rows, [2]string{"metadata", compactJSON(d.Metadata)})
			}
			if len(d.Metrics) > 0 {
				rows = append(rows, [2]string{"metrics", compactJSON(d.Metrics)})
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
			}
			return tw.Flush()
		},
	})
	return cmd
}

func newReadingsCmd(g *globals) *cobra.Command {
	var q client.ReadingsQuery
	var from, to string
	cmd := &cobra.Command{
		Use:   "readings DEVICE_ID",
		Short: "Show a device's readings, newest first",
		Long: "Show a device's readings, newest first. --from and --to take an RFC 3339 time,\n" +
			"Unix milliseconds, or a duration meaning that long ago (\"1h\").",
		Args: exactArgs(1, "DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			q.DeviceID = args[0]
			var err error
			now := time.Now()
			if q.From, err = parseWhen(from, now); err != nil {
				return usage(cmd, fmt.Errorf("--from: %w", err))
			}
			if q.To, err = parseWhen(to, now); err != nil {
				return usage(cmd, fmt.Errorf("--to: %w", err))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			page, err := c.Readings(cmd.Context(), q)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, page)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tSTREAM\tVALUES")
			for _, r := range page.Readings {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Time.Format(time.RFC3339Nano), dash(r.Stream), formatValues(r.Values))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --cursor %s\n", page.Next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "from this time (inclusive)")
	f.StringVar(&to, "to", "", "up to this time (exclusive)")
	f.StringVar(&q.Field, "field", "", "only this field")
	f.StringVar(&q.Stream, "stream", "", "only this stream")
	f.IntVar(&q.Limit, "limit", 0, "page size (default 100, at most 10000)")
	f.StringVar(&q.Cursor, "cursor", "", "the next page's cursor")
	return cmd
}

func newEventsCmd(g *globals) *cobra.Command {
	var o client.EventsOptions
	var types []string
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Tail the hub's events until interrupted",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, t := range types {
				o.Types = append(o.Types, events.Type(t))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			w := cmd.OutOrStdout()
			err = c.Events(ctx, o, func(e events.Event) error {
				if g.json() {
					b, err := json.Marshal(e)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(w, "%s\n", b)
					return err
				}
				return writeEventLine(w, e)
			})
			if errors.Is(err, io.EOF) {
				return nil // the hub ended the stream (it is shutting down)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&types, "type", nil, "only events of this type (repeatable)")
	f.StringSliceVar(&o.DeviceTypes, "device-type", nil, "only events of devices of this type (repeatable)")
	f.StringSliceVar(&o.DeviceIDs, "device-id", nil, "only events of this device (repeatable)")
	f.Int64Var(&o.From, "from", 0, "first replay the stored events after this sequence number")
	return cmd
}

func writeEventLine(w io.Writer, e events.Event) error {
	args, err := json.Marshal(e.Args)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339Nano), e.Type, dash(e.DeviceID), dash(e.DeviceType), args)
	return err
}

// parseWhen reads an RFC 3339 time, Unix milliseconds, or a duration that
// long before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(strings.TrimPrefix(s, "-")); err == nil {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("want an RFC 3339 time, Unix milliseconds or a duration ago, got %q", s)
}

func formatValues(v map[string]any) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		val := v[k]
		if _, ok := val.(string); ok {
			parts = append(parts, fmt.Sprintf("%s=%q", k, val))
			continue
		}
		if _, ok := val.(map[string]any); ok {
			parts = append(parts, k+"="+compactJSON(val))
			continue
		}
		if _, ok := val.([]any); ok {
			parts = append(parts, k+"="+compactJSON(val))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%v", k, val))
	}
	return strings.Join(parts, " ")
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}
