package cli

import (
	"encoding/json"
	"errors"
	"fmt"
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
	cmd.AddCommand(newCommandSendCmd(g), newCommandListCmd(g), newCommandGetCmd(g), newCommandCancelCmd(g))
	return cmd
}

func newCommandSendCmd(g *globals) *cobra.Command {
	var payload string
	var expires, timeout time.Duration
	var wait bool
	cmd := &cobra.Command{
		Use:   "send DEVICE_ID COMMAND",
		Short: "Send a command to a device",
		Long: "Send a command the device's type declares (its payload must satisfy the command's declared\n" +
			"parameters). The hub hands it to the device now if it is connected, or when it connects,\n" +
			"until the device acknowledges it (delivered) or it expires. --wait holds the request on the\n" +
			"hub (?wait=) until the device's answer, and exits non-zero unless it succeeded.",
		Args:              exactArgs(2, "DEVICE_ID COMMAND"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := client.SendCommandRequest{Command: args[1], ExpiresIn: expires}
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
	f.DurationVar(&timeout, "timeout", time.Minute, "with --wait: how long to wait")
	return cmd
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
			return writeCommands(g, cmd, cs...)
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
		Short: "Show and set device twins (desired and reported properties)",
	}
	get := &cobra.Command{
		Use:               "get DEVICE_ID",
		Short:             "Show a device's desired (with version) and reported properties",
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
	set := &cobra.Command{
		Use:   "set DEVICE_ID VALUES_JSON",
		Short: "Replace a device's desired properties",
		Long: "Replace a device's desired properties with VALUES_JSON, a JSON object; the version grows\n" +
			"by one and the device receives them (retained) on devices/{id}/twin/desired.",
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
			tw, err := c.SetDesired(cmd.Context(), args[0], values)
			if err != nil {
				return err
			}
			return writeTwin(g, cmd, tw)
		},
	}
	cmd.AddCommand(get, set)
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
	return nil
}
