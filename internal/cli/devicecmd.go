package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

// errCommandFailed makes `command send --wait` exit non-zero when the
// device answered failed or did not answer in time.
var errCommandFailed = errors.New("command did not succeed")

func newCommandCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "command",
		Short: "Send commands to devices and list them",
	}
	cmd.AddCommand(newCommandSendCmd(g), newCommandListCmd(g), newCommandGetCmd(g), newCommandCancelCmd(g), newCommandJobCmd(g))
	return cmd
}

func newCommandSendCmd(g *globals) *cobra.Command {
	var payload string
	var expires, timeout time.Duration
	var wait bool
	var fleet client.FleetTarget
	cmd := &cobra.Command{
		Use:   "send [DEVICE_ID] COMMAND",
		Short: "Send a command to a device, or to many (--group, --type, --tag, --online, --devices)",
		Long: "Send a command the device's type declares (its payload must satisfy the command's declared\n" +
			"parameters). The hub hands it to the device now if it is connected, or when it connects,\n" +
			"until the device acknowledges it (delivered) or it expires. --wait holds the request on the\n" +
			"hub (?wait=) until the device's answer, and exits non-zero unless it succeeded.\n\n" +
			"With --group, --type, --tag, --online or --devices instead of DEVICE_ID, it starts a fleet job:\n" +
			"the hub answers at once with the job id and fans the command out in the background; follow\n" +
			"it with devicehub command job JOB_ID.",
		Args: func(cmd *cobra.Command, args []string) error {
			if fleetFlags(cmd) {
				return exactArgs(1, "COMMAND")(cmd, args)
			}
			return exactArgs(2, "DEVICE_ID COMMAND")(cmd, args)
		},
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := client.SendCommandRequest{Command: args[len(args)-1], ExpiresIn: expires}
			if payload != "" {
				if !json.Valid([]byte(payload)) {
					return usage(cmd, fmt.Errorf("--payload: not JSON: %s", payload))
				}
				req.Payload = json.RawMessage(payload)
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if fleetFlags(cmd) {
				if wait {
					return usage(cmd, errors.New("--wait: not with a fleet command (follow it with devicehub command job JOB_ID)"))
				}
				job, err := c.SendFleetCommand(cmd.Context(), fleet, req)
				if err != nil {
					return err
				}
				return writeJob(g, cmd, &client.FleetJobAnswer{Job: *job})
			}
			start := time.Now()
			if wait {
				req.Wait = timeout
			}
			sent, err := c.SendCommand(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if !wait {
				return writeCommands(g, cmd, *sent)
			}
			done := sent
			if left := timeout - time.Since(start); !done.Finished() && left > 0 {
				if done, err = c.AwaitCommand(cmd.Context(), sent.ID, left); err != nil {
					return err
				}
			}
			if err := writeCommands(g, cmd, *done); err != nil {
				return err
			}
			if done.Status != "succeeded" {
				return fmt.Errorf("command %s %s: %w", done.ID, done.Status, errCommandFailed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&payload, "payload", "", "the command's payload, JSON")
	f.DurationVar(&expires, "expires-in", 0, "how long the device has to answer (default the hub's, 1h)")
	f.BoolVar(&wait, "wait", false, "wait for the device's answer")
	f.DurationVar(&timeout, "timeout", time.Minute, "with --wait: how long to wait (the hub holds one request at most 50s; longer waits take several)")
	f.StringVar(&fleet.Group, "group", "", "fleet: the devices of this group")
	f.StringVar(&fleet.Type, "type", "", "fleet: the devices of this type")
	f.StringVar(&fleet.Tag, "tag", "", "fleet: the devices with this tag")
	f.BoolVar(&fleet.OnlineOnly, "online", false, "fleet: only the devices connected when the job reaches them")
	f.StringSliceVar(&fleet.DeviceIDs, "devices", nil, "fleet: these devices (comma-separated)")
	return cmd
}

// newSendCmd is "devicehub send": the same as "devicehub command send".
func newSendCmd(g *globals) *cobra.Command {
	cmd := newCommandSendCmd(g)
	cmd.Short = "Send a command to a device or a fleet (devicehub command send)"
	return cmd
}

// fleetFlags reports whether a fleet target flag was given.
func fleetFlags(cmd *cobra.Command) bool {
	for _, n := range []string{"group", "type", "tag", "online", "devices"} {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

func newCommandJobCmd(g *globals) *cobra.Command {
	var devices bool
	var status string
	cmd := &cobra.Command{
		Use:   "job JOB_ID",
		Short: "Show a fleet command: its summary, and with --devices each device's command",
		Args:  exactArgs(1, "JOB_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if !devices {
				j, err := c.GetFleetCommand(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return writeJob(g, cmd, j)
			}
			var all []client.Command
			for after := ""; ; {
				cs, next, err := c.ListFleetCommandDevices(cmd.Context(), args[0], status, after, 1000)
				if err != nil {
					return err
				}
				all = append(all, cs...)
				if next == "" {
					break
				}
				after = next
			}
			return writeCommandList(g, cmd, all)
		},
	}
	cmd.Flags().BoolVar(&devices, "devices", false, "list each device's command (all pages)")
	cmd.Flags().StringVar(&status, "status", "", "with --devices: only this status")
	return cmd
}

func writeJob(g *globals, cmd *cobra.Command, j *client.FleetJobAnswer) error {
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, j)
	}
	fmt.Fprintf(w, "job:      %s (%s)\n", j.Job.ID, j.Job.Status)
	fmt.Fprintf(w, "command:  %s %s\n", j.Job.Command, dash(string(j.Job.Payload)))
	fmt.Fprintf(w, "targets:  %d matched, %d refused\n", j.Job.Targets, j.Job.Refused)
	if j.Job.Refusal != "" {
		fmt.Fprintf(w, "refusal:  %s\n", j.Job.Refusal)
	}
	if n := j.Summary; n != nil {
		fmt.Fprintf(w, "commands: queued %d, sent %d, delivered %d, succeeded %d, failed %d, expired %d, canceled %d\n",
			n.Queued, n.Sent, n.Delivered, n.Succeeded, n.Failed, n.Expired, n.Canceled)
	}
	return nil
}

func newCommandListCmd(g *globals) *cobra.Command {
	var status string
	var limit int
	cmd := &cobra.Command{
		Use:               "list DEVICE_ID",
		Short:             "List a device's commands, newest first",
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			cs, err := c.ListCommands(cmd.Context(), args[0], status, limit)
			if err != nil {
				return err
			}
			return writeCommandList(g, cmd, cs)
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only this status: queued, sent, delivered, succeeded, failed, expired, canceled")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many (default 100)")
	return cmd
}

func newCommandGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get COMMAND_ID",
		Short: "Show a command with its status and result",
		Args:  exactArgs(1, "COMMAND_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			got, err := c.GetCommand(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return writeCommands(g, cmd, *got)
		},
	}
}

func newCommandCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel COMMAND_ID",
		Short: "Cancel a command that has not finished",
		Long: "Cancel a queued, sent or delivered command: the hub hands it to the device no more and\n" +
			"refuses the device's answer. A finished command is left as it is (exit 1).",
		Args: exactArgs(1, "COMMAND_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			got, err := c.CancelCommand(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return writeCommands(g, cmd, *got)
		},
	}
}

// writeCommandList writes a listing: with --output json always an array,
// whatever its length.
func writeCommandList(g *globals, cmd *cobra.Command, cs []client.Command) error {
	if g.json() {
		if cs == nil {
			cs = []client.Command{}
		}
		return writeJSON(cmd.OutOrStdout(), cs)
	}
	return writeCommands(g, cmd, cs...)
}

func writeCommands(g *globals, cmd *cobra.Command, cs ...client.Command) error {
	w := cmd.OutOrStdout()
	if g.json() {
		if len(cs) == 1 {
			return writeJSON(w, cs[0])
		}
		return writeJSON(w, cs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDEVICE\tCOMMAND\tSTATUS\tCREATED\tRESULT")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.DeviceID, c.Command, c.Status, c.CreatedAt.Format(time.RFC3339), dash(string(c.Result)))
	}
	return tw.Flush()
}

func newTwinCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "twin",
		Short: "Show and change device twins (desired and reported properties, delta)",
	}
	show := &cobra.Command{
		Use:               "show DEVICE_ID",
		Aliases:           []string{"get"},
		Short:             "Show a device's desired (with version) and reported properties, and the delta",
		Long:              "Show the desired properties with their version, the reported ones with when each key was\nlast reported, and the delta: the desired keys whose reported value differs or was never\nreported.",
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			tw, err := c.GetTwin(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return writeTwin(g, cmd, tw)
		},
	}
	var setVersion, patchVersion int64
	set := &cobra.Command{
		Use:   "set DEVICE_ID VALUES_JSON",
		Short: "Replace a device's desired properties",
		Long: "Replace a device's desired properties with VALUES_JSON, a JSON object; the version grows\n" +
			"by one and the device receives them (retained) on devices/{id}/twin/desired. With --version\n" +
			"the change applies only if the desired properties are still at that version; without, at the\n" +
			"version read just before. A change made in between is refused (version_conflict), never lost.",
		Args:              exactArgs(2, "DEVICE_ID VALUES_JSON"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var values map[string]any
			if err := json.Unmarshal([]byte(args[1]), &values); err != nil || values == nil {
				return usage(cmd, fmt.Errorf("VALUES_JSON must be a JSON object: %s", args[1]))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			var tw *client.Twin
			if cmd.Flags().Changed("version") {
				tw, err = c.SetDesiredIf(cmd.Context(), args[0], values, setVersion)
			} else {
				tw, err = c.SetDesired(cmd.Context(), args[0], values)
			}
			if err != nil {
				return err
			}
			return writeTwin(g, cmd, tw)
		},
	}
	set.Flags().Int64Var(&setVersion, "version", 0, "the desired version the change is based on")
	patch := &cobra.Command{
		Use:   "patch DEVICE_ID PATCH_JSON",
		Short: "Change a device's desired properties with a JSON merge patch",
		Long: "Apply PATCH_JSON, a JSON merge patch (RFC 7396: objects merge, null removes a key), to a\n" +
			"device's desired properties. With --version the change applies only if they are still at\n" +
			"that version; without, at the version read just before.",
		Args:              exactArgs(2, "DEVICE_ID PATCH_JSON"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var p map[string]any
			if err := json.Unmarshal([]byte(args[1]), &p); err != nil || p == nil {
				return usage(cmd, fmt.Errorf("PATCH_JSON must be a JSON object: %s", args[1]))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			v := int64(-1)
			if cmd.Flags().Changed("version") {
				v = patchVersion
			}
			tw, err := c.PatchDesired(cmd.Context(), args[0], p, v)
			if err != nil {
				return err
			}
			return writeTwin(g, cmd, tw)
		},
	}
	patch.Flags().Int64Var(&patchVersion, "version", 0, "the desired version the change is based on")
	cmd.AddCommand(show, set, patch)
	return cmd
}

func writeTwin(g *globals, cmd *cobra.Command, tw *client.Twin) error {
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, tw)
	}
	fmt.Fprintf(w, "device:   %s\n", tw.DeviceID)
	fmt.Fprintf(w, "desired:  version %d  %s\n", tw.Desired.Version, formatValues(tw.Desired.Values))
	fmt.Fprintf(w, "reported: %d patches  %s\n", tw.Reported.Version, formatValues(tw.Reported.Values))
	if len(tw.Reported.KeyTimes) > 0 {
		keys := make([]string, 0, len(tw.Reported.KeyTimes))
		for k := range tw.Reported.KeyTimes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "          %s reported %s\n", k, tw.Reported.KeyTimes[k].Format(time.RFC3339))
		}
	}
	if len(tw.Delta) == 0 {
		fmt.Fprintln(w, "delta:    none (in step)")
		return nil
	}
	keys := make([]string, 0, len(tw.Delta))
	for k := range tw.Delta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "delta:")
	for _, k := range keys {
		d := tw.Delta[k]
		rep := "never reported"
		if !d.NeverReported {
			rep = "reported " + compactJSON(d.Reported)
		}
		fmt.Fprintf(w, "          %s: desired %s, %s\n", k, compactJSON(d.Desired), rep)
	}
	return nil
}
