package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
)

func newEventsCmd(g *globals) *cobra.Command {
	var o client.EventsOptions
	var types []string
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Tail the hub's events until interrupted",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Replay = cmd.Flags().Changed("from")
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
	f.Int64Var(&o.From, "from", 0, "first replay the stored events after this sequence number (0: every stored event)")
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
