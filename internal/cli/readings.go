package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

func newReadingsCmd(g *globals) *cobra.Command {
	var q client.ReadingsQuery
	var from, to string
	cmd := &cobra.Command{
		Use:   "readings DEVICE_ID",
		Short: "Show a device's readings, newest first",
		Long: "Show a device's readings, newest first. --from and --to take an RFC 3339 time,\n" +
			"Unix milliseconds, or a duration meaning that long ago (\"1h\").",
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
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
