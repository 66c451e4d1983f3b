package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/sim"
	"github.com/devicehub/devicehub/sdk"
)

func newSimulateCmd(g *globals) *cobra.Command {
	var (
		o        sim.Options
		mqttURL  string
		credFile string
		duration time.Duration
		every    time.Duration
		compress string
		fwFail   string
		fwKey    string
		fwOn     bool
		fwVer    string
	)
	cmd := &cobra.Command{
		Use:   "simulate --devices N --rate R --type T",
		Short: "Run a fleet of simulated devices on the device SDK",
		Long: "simulate runs N devices, each with its own local database under --state-dir, sending readings\n" +
			"that fit the type's fields at --rate readings/s, answering commands and desired properties.\n" +
			"Devices without stored credentials get them from --credentials-file (JSON lines of\n" +
			"`devicehub provision --output json`), from --provisioning-token (an operator approves each),\n" +
			"or else through the admin API (--token). Faults: --drop-every, --pause-every/--pause-for and\n" +
			"--restart-every are mean intervals per device.",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Type == "" {
				return usage(cmd, errors.New("--type is required"))
			}
			server := g.server
			if !cmd.Flags().Changed("server") {
				if v := lookupEnv("DEVICEHUB_SERVER"); v != "" {
					server = v
				}
			}
			o.Server = server
			if mqttURL == "" {
				u, err := url.Parse(server)
				if err != nil || u.Hostname() == "" {
					return usage(cmd, fmt.Errorf("--server %q is not a URL; or pass --mqtt", server))
				}
				mqttURL = "mqtt://" + net.JoinHostPort(u.Hostname(), "1883")
			}
			o.MQTTServer = mqttURL
			switch compress {
			case "none", "":
			case "fastest":
				o.Compression = sdk.Fastest
			case "smallest":
				o.Compression = sdk.SmallestSize
			case "gzip":
				o.Compression = sdk.Gzip
			default:
				return usage(cmd, fmt.Errorf("--compression must be none, fastest, smallest or gzip, got %q", compress))
			}
			if credFile != "" {
				creds, err := readCredentialsFile(credFile)
				if err != nil {
					return err
				}
				o.Credentials = creds
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// The admin API: the type's fields, and provisioning when no
			// other way is given. Without a token, fields stay unknown.
			if c, err := g.client(cmd); err == nil {
				o.Provision = func(ctx context.Context, id, typ string) (*sdk.Credentials, error) {
					p, err := c.ProvisionDevice(ctx, client.ProvisionRequest{ID: id, Type: typ})
					if err != nil {
						return nil, err
					}
					cr := p.Credentials
					return &sdk.Credentials{DeviceID: cr.DeviceID, MQTTUsername: cr.MQTTUsername, MQTTPassword: cr.MQTTPassword, APIKey: cr.APIKey}, nil
				}
				fields, err := typeFields(ctx, c, o.Type)
				if err != nil {
					return err
				}
				o.Fields = fields
			} else if o.ProvisioningToken == "" && credFile == "" {
				return err
			}
			if fwOn || fwFail != "" || fwKey != "" {
				fw := &sim.Firmware{Version: fwVer}
				if fwFail != "" {
					v, err := percent(fwFail)
					if err != nil {
						return usage(cmd, fmt.Errorf("--firmware-failures: %w", err))
					}
					fw.FailureRate = v / 100
				}
				if fwKey == "" {
					// The hub's own key, from the API.
					c, err := g.client(cmd)
					if err != nil {
						return fmt.Errorf("--firmware-key not given and the hub's key not readable: %w", err)
					}
					if fwKey, err = c.FirmwareKey(ctx); err != nil {
						return fmt.Errorf("the hub's firmware key: %w", err)
					}
				}
				k, err := sdk.ParseFirmwarePublicKey(fwKey)
				if err != nil {
					return usage(cmd, fmt.Errorf("--firmware-key: %w", err))
				}
				fw.PublicKey = k
				o.Firmware = fw
			}
			w := &lockedWriter{w: cmd.OutOrStdout()}
			// The log's warnings repeat what OnFailed prints; keep errors.
			o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelError}))
			o.OnProvisioning = func(id string, op sdk.ProvisioningOperation) {
				w.printf("%s waits for approval: operation %s, verification code %s (expires %s)\n",
					id, op.ID, op.VerificationCode, op.ExpiresAt.Format(time.RFC3339))
			}
			o.OnFailed = func(id string, err error) {
				w.printf("%s stopped, the others go on: %v\n", id, err)
			}
			s, err := sim.New(o)
			if err != nil {
				return usage(cmd, err)
			}
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			start := time.Now()
			t := time.NewTicker(every)
			defer t.Stop()
			line := func() {
				sum := s.Summary()
				fw := ""
				if o.Firmware != nil {
					fw = fmt.Sprintf("  firmware %d  firmware-failed %d", sum.FirmwareUpdates, sum.FirmwareFailed)
				}
				w.printf("%6.0fs devices %d/%d  failed %d  enqueued %d  acked %d  pending %d  rejected %d  reconnects %d  drops %d  pauses %d  restarts %d  commands %d  desired %d  errors %d%s\n",
					time.Since(start).Seconds(), sum.Running, sum.Devices, sum.Failed, sum.Enqueued, sum.Acked, sum.Pending, sum.Rejected,
					sum.Reconnects, sum.Drops, sum.Pauses, sum.Restarts, sum.Commands, sum.DesiredUpdates, sum.Errors, fw)
			}
			for {
				select {
				case <-t.C:
					line()
				case err := <-done:
					line()
					return err
				}
			}
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Devices, "devices", 10, "number of simulated devices")
	f.Float64Var(&o.Rate, "rate", 1, "readings per second of each device")
	f.StringVar(&o.Type, "type", "", "device type of the simulated devices (required)")
	f.StringVar(&o.IDPrefix, "id-prefix", "sim-", "device ids are this prefix and a number")
	f.StringVar(&mqttURL, "mqtt", "", "MQTT URL of the hub (default: --server's host, port 1883)")
	f.StringVar(&o.ProvisioningToken, "provisioning-token", "", "provisioning token for devices without credentials")
	f.BoolVar(&fwOn, "firmware", false, "take firmware updates (also on with --firmware-failures or --firmware-key)")
	f.StringVar(&fwFail, "firmware-failures", "", "share of firmware installs that fail, e.g. 10%")
	f.StringVar(&fwKey, "firmware-key", "", "public key firmware is verified with (default: the hub's, from the API)")
	f.StringVar(&fwVer, "firmware-version", "1.0.0", "firmware version the devices run at first")
	f.StringVar(&credFile, "credentials-file", "", "JSON lines of device credentials (devicehub provision --output json)")
	f.StringVar(&o.StateDir, "state-dir", "sim-state", "directory of the devices' local databases")
	f.DurationVar(&duration, "duration", 0, "stop after this long (default: until interrupted)")
	f.DurationVar(&every, "summary-every", time.Second, "interval of the live summary")
	f.StringVar(&compress, "compression", "none", "compression of readings: none, fastest, smallest, gzip")
	f.DurationVar(&o.Faults.DropEvery, "drop-every", 0, "mean interval between dropped connections of a device (0: never)")
	f.DurationVar(&o.Faults.PauseEvery, "pause-every", 0, "mean interval between network pauses of a device (0: never)")
	f.DurationVar(&o.Faults.PauseFor, "pause-for", 10*time.Second, "length of a network pause")
	f.DurationVar(&o.Faults.RestartEvery, "restart-every", 0, "mean interval between restarts of a device (0: never)")
	return cmd
}

// readCredentialsFile reads JSON lines of credentials, keyed by device id.
func readCredentialsFile(path string) (map[string]*sdk.Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	out := map[string]*sdk.Credentials{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		c, err := sdk.ParseCredentials([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("credentials file %s line %d: %w", path, n, err)
		}
		out[c.DeviceID] = c
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	return out, nil
}

// typeFields returns the fields of a declared device type.
func typeFields(ctx context.Context, c *client.Client, name string) ([]sim.Field, error) {
	types, err := c.DeviceTypes(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range types {
		if t.Name != name {
			continue
		}
		var fs []sim.Field
		for fname, f := range t.Fields {
			fs = append(fs, sim.Field{Name: fname, Type: f.Type, Min: f.Min, Max: f.Max})
		}
		return fs, nil
	}
	return nil, fmt.Errorf("device type %q is not declared on the hub", name)
}

// lockedWriter serializes the lines of the simulator's callbacks (one
// goroutine per device) and of its summary.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
