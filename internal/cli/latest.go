package cli

import (
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

func newLatestCmd(g *globals) *cobra.Command {
	var q client.LatestQuery
	cmd := &cobra.Command{
		Use:   "latest",
		Short: "Show the latest value of every field of every device",
		Long: "Show the newest value of every field (per stream) of every device that sent a reading,\n" +
			"by device id, in one request (a page holds up to --limit devices).",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			page, err := c.LatestValues(cmd.Context(), q)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, page)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tSTREAM\tFIELD\tVALUE\tTIME")
			for _, d := range page.Devices {
				for _, v := range d.Values {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.DeviceID, dash(v.Stream), v.Field, v.Value, v.Time.Format(time.RFC3339Nano))
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --after %s\n", page.Next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Type, "type", "", "only devices of this type")
	f.StringVar(&q.Stream, "stream", "", "only this stream")
	f.StringVar(&q.Field, "field", "", "only this field")
	f.StringVar(&q.After, "after", "", "only devices with an id after this (the next page)")
	f.IntVar(&q.Limit, "limit", 0, "devices per page (default 10000, at most 100000)")
	return cmd
}

func newAggregateCmd(g *globals) *cobra.Command {
	var q client.AggregateQuery
	var from, to string
	cmd := &cobra.Command{
		Use:   "aggregate DEVICE_ID --field FIELD",
		Short: "Sum a field of a device's readings up in time buckets",
		Long: "Split [--from, --to) into --buckets buckets of equal length and show count, min, max,\n" +
			"avg and last of the field's numeric values in each bucket that has one. --from and --to\n" +
			"take an RFC 3339 time, Unix milliseconds, or a duration meaning that long ago (\"1h\");\n" +
			"they default to 24h ago and now.",
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q.DeviceID = args[0]
			if q.Field == "" {
				return usage(cmd, errors.New("--field is required"))
			}
			now := time.Now()
			var err error
			if q.From, err = parseWhen(from, now); err != nil {
				return usage(cmd, fmt.Errorf("--from: %w", err))
			}
			if q.To, err = parseWhen(to, now); err != nil {
				return usage(cmd, fmt.Errorf("--to: %w", err))
			}
			if q.To.IsZero() {
				q.To = now.UTC()
			}
			if q.From.IsZero() {
				q.From = q.To.Add(-24 * time.Hour)
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			agg, err := c.AggregateReadings(cmd.Context(), q)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, agg)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "START\tCOUNT\tMIN\tMAX\tAVG\tLAST")
			for _, b := range agg.Buckets {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", b.Start.Format(time.RFC3339Nano), b.Count, num(b.Min), num(b.Max), num(b.Avg), num(b.Last))
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Field, "field", "", "the field (required)")
	f.StringVar(&q.Stream, "stream", "", "only this stream")
	f.StringVar(&from, "from", "", "from this time (inclusive; default 24h ago)")
	f.StringVar(&to, "to", "", "up to this time (exclusive; default now)")
	f.IntVar(&q.Buckets, "buckets", 0, "how many buckets (default 500, at most 10000)")
	f.StringVar(&q.Resolution, "resolution", "", "raw (default), or 1m / 1h: the rollups (retention.rollups), kept longer than readings")
	return cmd
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
