package cli

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

func newDevicesCmd(g *globals) *cobra.Command {
	var o client.ListOptions
	var connected, all bool
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
			var list *client.DeviceList
			if all {
				devs, err := c.ListAllDevices(cmd.Context(), o)
				if err != nil {
					return err
				}
				list = &client.DeviceList{Devices: devs}
			} else if list, err = c.ListDevices(cmd.Context(), o); err != nil {
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
	f.StringVar(&o.Tag, "tag", "", "only devices with this tag")
	f.StringVarP(&o.Query, "query", "q", "", "only devices whose id or name contains this (ignoring case)")
	f.StringVar(&o.Sort, "sort", "", "order: id (default) or last_seen (most recently seen first, across pages)")
	f.StringVar(&o.After, "after", "", "list devices after this cursor (the previous page's next)")
	f.BoolVar(&all, "all", false, "follow the pages to the end")
	f.IntVar(&o.Limit, "limit", 0, "page size (default 100, at most 1000)")
	_ = cmd.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions([]string{"id", "last_seen"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("connected", cobra.FixedCompletions([]string{"true", "false"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(newDeviceMessagesCmd(g))
	cmd.AddCommand(newDeviceManageCmds(g)...)
	cmd.AddCommand(&cobra.Command{
		Use:               "get DEVICE_ID",
		Short:             "Show one device",
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
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

func newDeviceMessagesCmd(g *globals) *cobra.Command {
	var q client.MessagesQuery
	cmd := &cobra.Command{
		Use:   "messages DEVICE_ID",
		Short: "Show a device's message log: every message it sent, accepted or rejected, newest first",
		Long: "Show a device's message log: every message it sent, accepted or rejected (with the code and\n" +
			"reason of the refusal), newest first. What operators did is the audit trail: devicehub audit.",
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q.DeviceID = args[0]
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			page, err := c.Messages(cmd.Context(), q)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, page)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID	RECEIVED	TRANSPORT	TOPIC	ACCEPTED	CODE	PAYLOAD")
			for _, m := range page.Messages {
				payload := m.Payload
				if payload == "" && len(m.PayloadBase64) > 0 {
					payload = fmt.Sprintf("(%d binary bytes)", len(m.PayloadBase64))
				}
				if len(payload) > 80 {
					payload = payload[:77] + "..."
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%v\t%s\t%s\n", m.ID, m.ReceivedAt.Format(time.RFC3339), m.Transport, m.Topic, m.Accepted, dash(m.Code), payload)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --before %s\n", page.Next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&q.Rejected, "rejected", false, "only rejected messages")
	f.StringVar(&q.Before, "before", "", "messages before this id (the previous page's next)")
	f.IntVar(&q.Limit, "limit", 0, "page size (default 100, at most 1000)")
	return cmd
}

// completeDeviceIDs completes a device id argument from the hub's devices.
func (g *globals) completeDeviceIDs(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := g.client(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	list, err := c.ListDevices(cmd.Context(), client.ListOptions{Query: prefix, Limit: 1000})
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var ids []string
	for _, d := range list.Devices {
		if strings.HasPrefix(d.ID, prefix) {
			ids = append(ids, d.ID)
		}
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}
