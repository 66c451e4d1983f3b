package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

// firmwareExamples are the Examples of the firmware and rollout commands,
// kept here beside them.
var firmwareExamples = map[string]string{
	"firmware": `devicehub firmware upload weather-1.4.2.bin --version 1.4.2 --type WeatherStation
devicehub firmware list`,
	"firmware upload": `devicehub firmware upload weather-1.4.2.bin --version 1.4.2 --type WeatherStation --hardware rev-b
# A file signed by the vendor's own ed25519 key (signature of the file's SHA-256, base64)
devicehub firmware upload weather-1.4.2.bin --version 1.4.2 --type WeatherStation --signature "$SIG" --public-key "$PUB"`,
	"firmware list":   `devicehub firmware list --output json`,
	"firmware delete": `devicehub firmware delete fw_0a1b2c3d4e5f6071`,
	"firmware key": `# The public key devices verify firmware with: build it into them
devicehub firmware key`,
	"rollout": `devicehub rollout start --artifact fw_0a1b2c3d4e5f6071 --group roof --max-per-minute 50 --abort-failures 20%
devicehub rollout status ro_1a2b3c4d5e6f7081 --watch`,
	"rollout start": `devicehub rollout start --artifact fw_0a1b2c3d4e5f6071 --group roof --max-per-minute 50 --abort-failures 20%
devicehub rollout start --artifact fw_0a1b2c3d4e5f6071 --type WeatherStation --phases 10,50,100 --abort-first-phase --window 22:00-04:00
devicehub rollout start --artifact fw_0a1b2c3d4e5f6071 --device dev1 --device dev2 --retries 2 --step-timeout 5m`,
	"rollout status": `devicehub rollout status ro_1a2b3c4d5e6f7081
devicehub rollout status ro_1a2b3c4d5e6f7081 --watch`,
	"rollout list":    `devicehub rollout list`,
	"rollout devices": `devicehub rollout devices ro_1a2b3c4d5e6f7081 --output json`,
	"rollout pause":   `devicehub rollout pause ro_1a2b3c4d5e6f7081`,
	"rollout resume":  `devicehub rollout resume ro_1a2b3c4d5e6f7081`,
	"rollout cancel":  `devicehub rollout cancel ro_1a2b3c4d5e6f7081`,
	"rollout history": `devicehub rollout history dev1
devicehub rollout history dev1 --rollout ro_1a2b3c4d5e6f7081`,
}

func withExamples(cmd *cobra.Command, path string) *cobra.Command {
	cmd.Example = indent(firmwareExamples[path])
	return cmd
}

func newFirmwareCmd(g *globals) *cobra.Command {
	cmd := withExamples(&cobra.Command{Use: "firmware", Short: "Firmware artifacts: upload, list, delete, the signing key", Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return g.listArtifacts(cmd) }}, "firmware")
	var u client.UploadArtifact
	up := withExamples(&cobra.Command{Use: "upload FILE --version V --type T", Short: "Upload a firmware file (signed by the hub unless a vendor signature is given)",
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if u.Version == "" || u.Type == "" {
				return usage(cmd, fmt.Errorf("--version and --type are required"))
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			u.Filename = filepath.Base(args[0])
			a, err := c.UploadArtifact(cmd.Context(), f, u)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), a)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Artifact %s: %s %s, %d bytes, sha256 %s, signed by the %s.\n", a.ID, a.Type, a.Version, a.Size, a.SHA256, a.SignedBy)
			return nil
		}}, "firmware upload")
	fl := up.Flags()
	fl.StringVar(&u.Version, "version", "", "the firmware's version (required)")
	fl.StringVar(&u.Type, "type", "", "the device type it is built for (required)")
	fl.StringVar(&u.Hardware, "hardware", "", "the only hardware version it runs on")
	fl.StringVar(&u.Signature, "signature", "", "a vendor's ed25519 signature of the file's SHA-256 (base64)")
	fl.StringVar(&u.PublicKey, "public-key", "", "the vendor's ed25519 public key (base64)")
	cmd.AddCommand(up,
		withExamples(&cobra.Command{Use: "list", Short: "List firmware artifacts", Args: exactArgs(0, ""),
			RunE: func(cmd *cobra.Command, args []string) error { return g.listArtifacts(cmd) }}, "firmware list"),
		withExamples(&cobra.Command{Use: "delete ARTIFACT_ID", Short: "Delete an artifact (refused while a rollout uses it)", Args: exactArgs(1, "ARTIFACT_ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client(cmd)
				if err != nil {
					return err
				}
				if err := c.DeleteArtifact(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Artifact %s deleted.\n", args[0])
				return nil
			}}, "firmware delete"),
		withExamples(&cobra.Command{Use: "key", Short: "Print the hub's public firmware signing key (base64 ed25519)", Args: exactArgs(0, ""),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client(cmd)
				if err != nil {
					return err
				}
				k, err := c.FirmwareKey(cmd.Context())
				if err != nil {
					return err
				}
				if g.json() {
					return writeJSON(cmd.OutOrStdout(), map[string]string{"public_key": k, "algorithm": "ed25519"})
				}
				fmt.Fprintln(cmd.OutOrStdout(), k)
				return nil
			}}, "firmware key"),
	)
	return cmd
}

func (g *globals) listArtifacts(cmd *cobra.Command) error {
	c, err := g.client(cmd)
	if err != nil {
		return err
	}
	as, err := c.ListArtifacts(cmd.Context())
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(cmd.OutOrStdout(), as)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tVERSION\tHARDWARE\tSIZE\tSIGNED BY\tCREATED")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", a.ID, a.Type, a.Version, a.Hardware, a.Size, a.SignedBy, a.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// percent reads "20%" or "20".
func percent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, fmt.Errorf("%q is not a percentage from 0 to 100", s)
	}
	return v, nil
}

func newRolloutCmd(g *globals) *cobra.Command {
	cmd := withExamples(&cobra.Command{Use: "rollout", Short: "Firmware rollouts: start, status, pause, resume, cancel", Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return g.listRollouts(cmd) }}, "rollout")
	cmd.AddCommand(newRolloutStartCmd(g), newRolloutStatusCmd(g),
		withExamples(&cobra.Command{Use: "list", Short: "List rollouts", Args: exactArgs(0, ""),
			RunE: func(cmd *cobra.Command, args []string) error { return g.listRollouts(cmd) }}, "rollout list"),
		withExamples(&cobra.Command{Use: "devices ROLLOUT_ID", Short: "List a rollout's devices and their states", Args: exactArgs(1, "ROLLOUT_ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client(cmd)
				if err != nil {
					return err
				}
				us, err := c.RolloutDevices(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if g.json() {
					return writeJSON(cmd.OutOrStdout(), us)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DEVICE\tPHASE\tSTATE\tATTEMPT\tSINCE\tMESSAGE")
				for _, u := range us {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\n", u.DeviceID, u.Phase, u.State, u.Attempt, u.StateSince.Format(time.RFC3339), u.Message)
				}
				return tw.Flush()
			}}, "rollout devices"),
		withExamples(newHistoryCmd(g), "rollout history"),
	)
	for _, a := range []struct{ name, short string }{
		{"pause", "Pause a rollout (no device is started; those started go on)"},
		{"resume", "Resume a paused or aborted rollout"},
		{"cancel", "Cancel a rollout (devices not finished are canceled)"},
	} {
		action := a.name
		cmd.AddCommand(withExamples(&cobra.Command{Use: action + " ROLLOUT_ID", Short: a.short, Args: exactArgs(1, "ROLLOUT_ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client(cmd)
				if err != nil {
					return err
				}
				r, err := c.RolloutAction(cmd.Context(), args[0], action)
				if err != nil {
					return err
				}
				if g.json() {
					return writeJSON(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Rollout %s is %s.\n", r.ID, r.Status)
				return nil
			}}, "rollout "+action))
	}
	return cmd
}

func newHistoryCmd(g *globals) *cobra.Command {
	var rollout string
	cmd := &cobra.Command{Use: "history DEVICE_ID", Short: "The states a device's firmware updates went through", Args: exactArgs(1, "DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			h, err := c.FirmwareHistory(cmd.Context(), args[0], rollout)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), h)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AT\tROLLOUT\tSTATE\tATTEMPT\tMESSAGE")
			for _, e := range h {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", e.At.Format(time.RFC3339Nano), e.RolloutID, e.State, e.Attempt, e.Message)
			}
			return tw.Flush()
		}}
	cmd.Flags().StringVar(&rollout, "rollout", "", "only this rollout")
	return cmd
}

func newRolloutStartCmd(g *globals) *cobra.Command {
	var req client.RolloutRequest
	var abort, phases, window string
	cmd := withExamples(&cobra.Command{Use: "start --artifact ID (--group G | --type T | --device ID...)", Short: "Start a rollout", Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.ArtifactID == "" {
				return usage(cmd, fmt.Errorf("--artifact is required"))
			}
			if abort != "" {
				v, err := percent(abort)
				if err != nil {
					return usage(cmd, fmt.Errorf("--abort-failures: %w", err))
				}
				req.AbortFailurePercent = v
			}
			for _, p := range strings.Split(phases, ",") {
				if p = strings.TrimSpace(p); p == "" {
					continue
				}
				v, err := percent(p)
				if err != nil {
					return usage(cmd, fmt.Errorf("--phases: %w", err))
				}
				req.Phases = append(req.Phases, int(v))
			}
			if window != "" {
				s, e, ok := strings.Cut(window, "-")
				if !ok {
					return usage(cmd, fmt.Errorf("--window must be HH:MM-HH:MM (UTC), got %q", window))
				}
				req.WindowStart, req.WindowEnd = s, e
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			r, err := c.StartRollout(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Rollout %s started: version %s to %d devices.\nWatch it: devicehub rollout status %s --watch\n", r.ID, r.Version, r.Total, r.ID)
			return nil
		}}, "rollout start")
	f := cmd.Flags()
	f.StringVar(&req.ArtifactID, "artifact", "", "the artifact to send (required)")
	f.StringVar(&req.Group, "group", "", "target: a device group")
	f.StringVar(&req.Type, "type", "", "target filter: device type (default the artifact's)")
	f.StringVar(&req.Hardware, "hardware", "", "target filter: hardware version")
	f.StringArrayVar(&req.DeviceIDs, "device", nil, "target: a device (repeat)")
	f.BoolVar(&req.IncludeLate, "include-late", false, "add devices that join the group or filter later (the rollout runs until canceled)")
	f.IntVar(&req.MaxPerMinute, "max-per-minute", 0, "devices started per minute at most (0: no bound)")
	f.IntVar(&req.RateIncreaseAfter, "increase-after", 0, "multiply the rate by --increase-factor every so many updated devices")
	f.Float64Var(&req.RateIncreaseFactor, "increase-factor", 0, "rate factor (above 1, at most 5)")
	f.StringVar(&phases, "phases", "", "cumulative percentages of the target, e.g. 10,50,100")
	f.StringVar(&window, "window", "", "maintenance window HH:MM-HH:MM (UTC)")
	f.StringVar(&req.StepTimeout, "step-timeout", "", "bound of each step (e.g. 5m)")
	f.StringVar(&req.TotalTimeout, "total-timeout", "", "bound of a device's whole update (e.g. 1h)")
	f.IntVar(&req.Retries, "retries", 0, "times a failed or timed-out device is tried again")
	f.StringArrayVar(&req.RetryOn, "retry-on", nil, "failed or timed_out (default both)")
	f.StringVar(&abort, "abort-failures", "", "abort when this share of finished devices failed, e.g. 20%")
	f.IntVar(&req.AbortMinDevices, "abort-min", 0, "devices finished before --abort-failures applies")
	f.BoolVar(&req.AbortFirstPhase, "abort-first-phase", false, "abort at any failure in the first phase")
	f.StringVar(&req.HealthWindow, "health-window", "", "time for a device to confirm the new version after its reboot")
	f.StringVar(&req.Settle, "settle", "", "time it must stay connected after confirming")
	return cmd
}

func (g *globals) listRollouts(cmd *cobra.Command) error {
	c, err := g.client(cmd)
	if err != nil {
		return err
	}
	rs, err := c.ListRollouts(cmd.Context())
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(cmd.OutOrStdout(), rs)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVERSION\tTYPE\tSTATUS\tUPDATED\tFAILED\tTOTAL\tCREATED")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.ID, r.Version, r.DeviceType, r.Status, r.Counts["updated"],
			r.Counts["failed"]+r.Counts["timed_out"], r.Total, r.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func newRolloutStatusCmd(g *globals) *cobra.Command {
	var watch bool
	var every time.Duration
	cmd := withExamples(&cobra.Command{Use: "status ROLLOUT_ID [--watch]", Short: "Show a rollout's progress (--watch: until it ends, with a progress bar)",
		Args: exactArgs(1, "ROLLOUT_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			last := ""
			for {
				r, err := c.GetRollout(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if g.json() {
					if err := writeJSON(cmd.OutOrStdout(), r); err != nil {
						return err
					}
				} else if line := progressLine(r); line != last {
					fmt.Fprintln(cmd.OutOrStdout(), line)
					last = line
				}
				if !watch || ended(r) {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(every):
				}
			}
		}}, "rollout status")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout until it ends")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "time between two looks with --watch")
	return cmd
}

// ended reports whether a rollout will change no more by itself.
func ended(r *client.Rollout) bool {
	switch r.Status {
	case "completed", "canceled":
		return true
	case "aborted", "paused":
		for _, s := range []string{"notified", "downloading", "downloaded", "verifying", "installing", "rebooting", "confirming"} {
			if r.Counts[s] > 0 {
				return false
			}
		}
		return true
	}
	return false
}

// progressLine draws a rollout as a bar and its counts.
func progressLine(r *client.Rollout) string {
	const width = 30
	done := r.Finished()
	fill := 0
	if r.Total > 0 {
		fill = done * width / r.Total
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%s%s] %d/%d %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, r.Total, r.Status)
	for _, s := range []string{"updated", "failed", "timed_out", "skipped", "canceled", "queued", "notified", "downloading", "downloaded",
		"verifying", "installing", "rebooting", "confirming"} {
		if n := r.Counts[s]; n > 0 {
			fmt.Fprintf(&b, " %s=%d", s, n)
		}
	}
	if r.Reason != "" && r.Status != "running" {
		fmt.Fprintf(&b, " (%s)", r.Reason)
	}
	return b.String()
}
