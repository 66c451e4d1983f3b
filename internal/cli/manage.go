package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

// newDeviceManageCmds are the subcommands of `devices` that change a
// device: update, disable, enable, revoke, rotate, certificate, import.
func newDeviceManageCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newDeviceUpdateCmd(g),
		newDeviceStateCmd(g, "disable", "Disable a device: its connection is closed at once and it cannot reconnect until enabled", true),
		newDeviceStateCmd(g, "enable", "Enable a disabled device", false),
		newDeviceStateCmd(g, "revoke", "Revoke a device's credentials: they stop working at once", true),
		newDeviceRotateCmd(g),
		newDeviceCertCmd(g),
		newDeviceImportCmd(g),
	}
}

func newDeviceUpdateCmd(g *globals) *cobra.Command {
	var (
		name, group, locDesc, fw, hw, ip, meta string
		tags                                   []string
		lat, lon                               float64
		clearLoc                               bool
	)
	cmd := &cobra.Command{
		Use:               "update DEVICE_ID [--name N] [--group G] [--tag T]... [--lat X --lon Y] [--firmware V] ...",
		Short:             "Change a device's registry fields (only the flags given)",
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var req client.UpdateRequest
			fl := cmd.Flags()
			str := func(flag string, v *string) *string {
				if fl.Changed(flag) {
					return v
				}
				return nil
			}
			req.Name, req.Group = str("name", &name), str("group", &group)
			req.FirmwareVersion, req.HardwareVersion, req.ManagementIP = str("firmware", &fw), str("hardware", &hw), str("management-ip", &ip)
			if fl.Changed("tag") {
				req.Tags = &tags
			}
			switch {
			case clearLoc:
				req.Location = &client.Location{}
			case fl.Changed("lat") || fl.Changed("lon") || fl.Changed("location"):
				if !fl.Changed("lat") || !fl.Changed("lon") {
					return usage(cmd, errors.New("--lat and --lon go together"))
				}
				req.Location = &client.Location{Lat: lat, Lon: lon, Description: locDesc}
			}
			if fl.Changed("metadata") {
				req.Metadata = map[string]any{}
				if err := json.Unmarshal([]byte(meta), &req.Metadata); err != nil {
					return usage(cmd, fmt.Errorf("--metadata must be a JSON object: %v", err))
				}
			}
			if req.Name == nil && req.Group == nil && req.Tags == nil && req.Location == nil && req.Metadata == nil &&
				req.FirmwareVersion == nil && req.HardwareVersion == nil && req.ManagementIP == nil {
				return usage(cmd, errors.New("nothing to change: give at least one flag"))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			d, err := c.UpdateDevice(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			return g.printDevice(cmd, d, "updated")
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "display name")
	f.StringVar(&group, "group", "", `group id ("" takes the device out of its group)`)
	f.StringSliceVar(&tags, "tag", nil, "tag (repeatable; replaces the tags; --tag= clears them)")
	f.Float64Var(&lat, "lat", 0, "latitude")
	f.Float64Var(&lon, "lon", 0, "longitude")
	f.StringVar(&locDesc, "location", "", "location description (with --lat and --lon)")
	f.BoolVar(&clearLoc, "clear-location", false, "remove the location")
	f.StringVar(&fw, "firmware", "", "firmware version")
	f.StringVar(&hw, "hardware", "", "hardware version")
	f.StringVar(&ip, "management-ip", "", `management IP address ("" removes it)`)
	f.StringVar(&meta, "metadata", "", `metadata as a JSON object (replaces it; "{}" removes it)`)
	return cmd
}

// printDevice prints a device after a change: JSON, or one line.
func (g *globals) printDevice(cmd *cobra.Command, d *client.Device, what string) error {
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, d)
	}
	state := "enabled"
	if d.Disabled {
		state = "disabled"
	}
	_, err := fmt.Fprintf(w, "Device %s %s (type %s, group %s, %s).\n", d.ID, what, d.Type, dash(d.Group), state)
	return err
}

func newDeviceStateCmd(g *globals, action, short string, reasoned bool) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:               action + " DEVICE_ID",
		Short:             short,
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			var d *client.Device
			switch action {
			case "disable":
				d, err = c.DisableDevice(cmd.Context(), args[0], reason)
			case "enable":
				d, err = c.EnableDevice(cmd.Context(), args[0])
			default:
				d, err = c.RevokeDevice(cmd.Context(), args[0], reason)
			}
			if err != nil {
				return err
			}
			return g.printDevice(cmd, d, action+"d")
		},
	}
	if reasoned {
		cmd.Flags().StringVar(&reason, "reason", "", "why, for the event log")
	}
	return cmd
}

func newDeviceRotateCmd(g *globals) *cobra.Command {
	var overlap time.Duration
	cmd := &cobra.Command{
		Use:   "rotate DEVICE_ID [--overlap D]",
		Short: "Give a device new credentials (shown only once); the old ones work until the new are used or the overlap ends",
		Long: "Give a device new credentials. The old ones stay valid until the device first uses the new ones\n" +
			"or the overlap ends (default: the hub's provisioning.rotation_overlap; --overlap 0 ends them at once).",
		Args:              exactArgs(1, "DEVICE_ID"),
		ValidArgsFunction: g.completeDeviceIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ov *time.Duration
			if cmd.Flags().Changed("overlap") {
				if overlap < 0 {
					return usage(cmd, errors.New("--overlap must not be negative"))
				}
				ov = &overlap
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			r, err := c.RotateDevice(cmd.Context(), args[0], ov)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, r)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "Credentials of %s rotated. Save them now: they are shown only once.\n", args[0])
			if r.OldValidUntil != nil {
				fmt.Fprintf(tw, "The old ones work until the device uses the new ones, at the latest until %s.\n", r.OldValidUntil.Format(time.RFC3339))
			} else {
				fmt.Fprintf(tw, "The old ones stopped working.\n")
			}
			printCredentials(tw, r.Credentials)
			return tw.Flush()
		},
	}
	cmd.Flags().DurationVar(&overlap, "overlap", 0, "how long the old credentials stay valid at most (default: the hub's setting)")
	return cmd
}

func printCredentials(w io.Writer, c client.Credentials) {
	fmt.Fprintf(w, "\n  device id\t%s\n", c.DeviceID)
	fmt.Fprintf(w, "  mqtt username\t%s\n", c.MQTTUsername)
	fmt.Fprintf(w, "  mqtt password\t%s\n", c.MQTTPassword)
	fmt.Fprintf(w, "  api key\t%s\n", c.APIKey)
}

func newDeviceCertCmd(g *globals) *cobra.Command {
	var certFile string
	var remove bool
	cmd := &cobra.Command{
		Use:   "certificate DEVICE_ID (FINGERPRINT | --cert FILE | --remove)",
		Short: "Pin a client certificate to a device (mTLS on the MQTT TLS listener)",
		Long: "Pin a client certificate to a device: a client presenting it on the MQTT TLS listener authenticates\n" +
			"as the device without a password. Give the SHA-256 of its DER bytes in hex, or the PEM file.",
		Args: func(cmd *cobra.Command, args []string) error {
			want := 2
			if certFile != "" || remove {
				want = 1
			}
			if len(args) != want {
				return usage(cmd, fmt.Errorf("want DEVICE_ID and one of FINGERPRINT, --cert FILE or --remove"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			fp := ""
			switch {
			case remove:
			case certFile != "":
				var err error
				if fp, err = certFingerprint(certFile); err != nil {
					return usage(cmd, err)
				}
			default:
				fp = args[1]
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			got, err := c.PinCertificate(cmd.Context(), args[0], fp)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"device_id": args[0], "fingerprint": got})
			}
			if got == "" {
				fmt.Fprintf(cmd.OutOrStdout(), "Certificate pin of %s removed.\n", args[0])
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "Certificate %s pinned to %s.\n", got, args[0])
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&certFile, "cert", "", "PEM file of the client certificate")
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the pin")
	return cmd
}

// certFingerprint returns the SHA-256 of the first certificate in a PEM
// file, in hex.
func certFingerprint(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return "", fmt.Errorf("%s: no PEM certificate", path)
		}
		if blk.Type == "CERTIFICATE" {
			sum := sha256.Sum256(blk.Bytes)
			return hex.EncodeToString(sum[:]), nil
		}
	}
}

func newDeviceImportCmd(g *globals) *cobra.Command {
	var partial bool
	var format string
	cmd := &cobra.Command{
		Use:   "import FILE [--partial]",
		Short: "Import devices from a CSV or JSON file (- for stdin), reporting line by line",
		Long: "Import devices from CSV (a header row: id,type[,name,group,tags,firmware_version,hardware_version,\n" +
			"management_ip,lat,lon,location,metadata]) or JSON ({\"groups\": [...], \"devices\": [...]} or an array).\n" +
			"By default nothing is created if a line is refused; --partial creates the acceptable lines.\n" +
			"Created devices' credentials are in the report: shown only once.",
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b []byte
			var err error
			if args[0] == "-" {
				b, err = io.ReadAll(cmd.InOrStdin())
			} else {
				b, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			ct := "application/json"
			switch strings.ToLower(format) {
			case "csv":
				ct = "text/csv"
			case "json":
			case "":
				if strings.EqualFold(filepath.Ext(args[0]), ".csv") {
					ct = "text/csv"
				}
			default:
				return usage(cmd, fmt.Errorf("--format must be csv or json, got %q", format))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			rep, ierr := c.ImportDevices(cmd.Context(), b, ct, partial)
			if rep == nil {
				return ierr
			}
			w := cmd.OutOrStdout()
			if g.json() {
				if err := writeJSON(w, rep); err != nil {
					return err
				}
				return ierr
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LINE\tID\tSTATUS\tREASON\tMQTT PASSWORD\tAPI KEY")
			for _, l := range rep.Lines {
				pw, key := "-", "-"
				if l.Credentials != nil {
					pw, key = l.Credentials.MQTTPassword, l.Credentials.APIKey
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", l.Line, dash(l.ID), l.Status, dash(l.Reason), pw, key)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "%d created, %d refused.\n", rep.Created, rep.Refused)
			return ierr
		},
	}
	cmd.Flags().BoolVar(&partial, "partial", false, "create the acceptable lines even if others are refused")
	cmd.Flags().StringVar(&format, "format", "", "csv or json (default: by the file's extension, else json)")
	return cmd
}
