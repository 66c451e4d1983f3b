package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
			p, err := c.ProvisionDeviceByID(cmd.Context(), req.ID, req)
			if codeOf(err) == "already_exists" && !req.Replace {
				return &hintError{err: err, hint: "To re-provision it (new credentials; the old ones stop working at once), add --replace."}
			}
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
