package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/internal/bench"
	"github.com/devicehub/devicehub/internal/config"
)

// newBenchCmd is `devicehub bench`: devicehub side by side with Mosquitto,
// mochi alone and the machine's limits. Its hidden subcommands are the
// child processes the bench starts (load generator, mochi alone, a
// profiled hub).
func newBenchCmd(serve ServeFunc) *cobra.Command {
	o := bench.Options{}
	signal := true
	cmd := &cobra.Command{
		Use:   "bench [scenario...] --out DIR",
		Short: "Benchmark devicehub against Mosquitto, mochi alone and the machine's limits",
		Long: "Run the scenarios (" + strings.Join(bench.AllScenarios, ", ") + "; default all) for devicehub\n" +
			"(a real `devicehub serve` process on random ports with a fresh data directory) and the\n" +
			"reference systems, in alternating rounds, and write DIR/results.json, DIR/report.md and\n" +
			"DIR/" + bench.ChartFile + " (bench-ingest-N.png for the other --devices counts). Ratios above 1\n" +
			"mean devicehub did better. The query scenario stores --query-readings readings first (1,000,000\n" +
			"by default, ~1 min; the issue's 10,000,000 take ~15 min on 2 cores).\n\n" +
			"The report and the charts are rendered from DIR/results.json once it is written: `devicehub bench\n" +
			"report --from DIR/results.json` renders them again, byte for byte, without running anything.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.OutDir == "" {
				return usage(cmd, errors.New("--out is required"))
			}
			if o.Inflight < 1 || o.Inflight > bench.MaxInflight {
				return usage(cmd, fmt.Errorf("--inflight %d: must be between 1 and %d (the receive maximum devicehub and mochi announce)", o.Inflight, bench.MaxInflight))
			}
			for _, kv := range o.HubEnv {
				if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
					return usage(cmd, fmt.Errorf("--hub-env %q: must be KEY=VALUE", kv))
				}
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: find the devicehub binary: %w", err)
			}
			o.Exe = exe
			o.NoSignal = !signal
			o.Scenarios = args
			o.CommandLine = append([]string{"devicehub"}, os.Args[1:]...)
			o.Log = cmd.ErrOrStderr()
			if o.Short {
				shortOptions(cmd, &o)
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			res, err := bench.Run(ctx, o)
			if res != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n", filepath.Join(o.OutDir, bench.ResultsFile), filepath.Join(o.OutDir, bench.ReportFile))
			}
			if errors.Is(err, bench.ErrUnknownScenario) || errors.Is(err, bench.ErrBadOptions) {
				return usage(cmd, err)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.OutDir, "out", "", "output directory (required)")
	f.IntVar(&o.Rounds, "rounds", 3, "rounds per scenario (each system once per round, in alternation)")
	f.DurationVar(&o.Duration, "duration", 0, "publishing time of one ingest run (default 5s)")
	f.IntVar(&o.MaxMessages, "max-messages", 0, "bound on the messages of one ingest run (default 2,000,000)")
	f.IntSliceVar(&o.Devices, "devices", nil, "ingest device counts (default 100)")
	f.IntVar(&o.Inflight, "inflight", 1, fmt.Sprintf("QoS 1 publishes each ingest device keeps outstanding, for every system (1-%d; a new one whenever a PUBACK arrives).\n"+
		"Default 1: what a device that waits for each PUBACK does, as the Go SDK does today; >1 shows devicehub's pipelined PUBACKs", bench.MaxInflight))
	f.Float64SliceVar(&o.OpenLoop, "open-loop", nil, "open-loop loads as fractions of devicehub's peak (default 0.25,0.5,0.75,1; a device count given in --open-loop-rate runs at that rate instead)")
	f.Var(openLoopRates{&o.OpenLoopRate}, "open-loop-rate", "absolute open-loop offered rates by device count: DEVICES=RATE pairs separated by commas, RATE in msgs/s for all devices\n"+
		"together, from 1 to 100000000 (e.g. 100=10000,1000=14000; repeatable). Each DEVICES (one of --devices) runs one open-loop scenario,\n"+
		"ingest_open_DEVICES_rate_RATE, at RATE for every system instead of the --open-loop fractions of devicehub's peak: two devicehub\n"+
		"binaries in an A/B get the same load whatever their peaks. A count without a rate keeps the fractions; the closed-loop peak runs either way")
	f.DurationVar(&o.Warmup, "warmup", time.Second, "in the open-loop runs, publish on the same schedule for this long before the measured phase, for every system;\n"+
		"its PUBACK latency is reported apart as warmup_p99_ms (the first messages of fresh connections are a start-up cost; 0: none)")
	f.BoolVar(&signal, "signal", true, "in the open-loop runs, also read devicehub's SSE event stream in the load generator and report publish → event latency\n"+
		"(false: PUBACK latency without that stream's CPU on the same machine)")
	f.IntSliceVar(&o.Connections, "connections", nil, "connection counts (default 10000; 0: as many as the open-file limit allows, the hard limit less 500)")
	f.DurationVar(&o.Hold, "hold", 0, "idle hold of the connections scenario (default 15s)")
	f.BoolVar(&o.ConnectionsIdle, "connections-idle", false, "the connections scenario's devices subscribe to nothing (default: each subscribes to its commands and desired properties, as the Go SDK does)")
	f.IntVar(&o.Presence, "presence-devices", 0, "devices of the presence scenario (default 10000)")
	f.DurationVar(&o.Heartbeat, "heartbeat", 0, "heartbeat interval of the presence scenario (default 10s)")
	f.IntVar(&o.QueryReadings, "query-readings", 0, "stored readings of the query scenario (default 1,000,000; the issue's full size is 10,000,000)")
	f.IntVar(&o.QueryDevices, "query-devices", 0, "devices of the query scenario (default 10000)")
	f.StringVar(&o.QueryKeep, "query-keep", "", "keep the query scenario's generated and compacted data directory in DIR, or reuse the one kept there if it is of the same size\n"+
		"(the queries then run on a copy; the generation figures are those of the run that kept it)")
	f.IntVar(&o.QueryBurst, "query-burst", 0, "the query scenario's generation stores each device's readings in bursts of N consecutive readings, 2,000 readings a commit (default 100;\n"+
		"1: time-major, every device's k-th reading before any device's k+1-th, as devices reporting live one at a time; slower: see docs/BENCHMARKS.md)")
	f.BoolVar(&o.QueryProfile, "query-profile", false, "run the query scenario's hub under a CPU profile (devicehub-query.cpu.pprof in the output directory)")
	f.IntVar(&o.Queries, "queries", 0, "queries of each kind per round in the query scenario (default 100)")
	f.IntVar(&o.SQLiteBatch, "sqlite-batch", 0, "rows per transaction of the raw SQLite append (default devicehub's mean commit batch)")
	f.StringArrayVar(&o.HubEnv, "hub-env", nil, "KEY=VALUE added to devicehub's environment alone, not the load generator's nor mochi's (repeatable;\n"+
		"e.g. GODEBUG=gctrace=1 to have its GC cycles in its log, OUT/logs)")
	f.StringVar(&o.Mosquitto, "mosquitto", "", "the mosquitto binary (default: from PATH; - to leave Mosquitto out)")
	f.BoolVar(&o.Profile, "profile", true, "profile devicehub in one extra ingest run and report its top functions")
	f.BoolVar(&o.HubTrace, "hub-trace", false, "run devicehub's first open-loop run of the first --devices count (its round 1 of the first open-loop scenario) under an execution trace\n"+
		"and a CPU profile over the hub's life, DIR/"+bench.HubTraceFile+" and DIR/"+bench.HubTraceCPUFile+" (go tool trace, go tool pprof); that run's figures include their cost")
	f.BoolVar(&o.Short, "short", false, "tiny sizes: a smoke run of every scenario")

	cmd.AddCommand(newBenchReportCmd(), newBenchLoadCmd(), newBenchMochiCmd(), newProfiledServeCmd(serve))
	return cmd
}

// newBenchReportCmd is `devicehub bench report`: a run's report.md and
// charts rendered again from its results.json, by the code the run
// rendered them with (bench.Render).
func newBenchReportCmd() *cobra.Command {
	var from, out string
	cmd := &cobra.Command{
		Use:   "report --from DIR/" + bench.ResultsFile + " [--out DIR2]",
		Short: "Render a bench run's report.md and charts again from its " + bench.ResultsFile,
		Long: "Read the " + bench.ResultsFile + " of a `devicehub bench` run and write " + bench.ReportFile + " and the PNG charts\n" +
			"into --out (default: the directory of --from, replacing the run's), exactly as the run wrote them:\n" +
			"the run itself renders its report from the " + bench.ResultsFile + " it has just written. Nothing is\n" +
			"measured. The hub logs and the CPU profile the report names stay in the run's directory.\n" +
			"A file of another format_version (or not a results file at all) is refused, naming the file.",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return usage(cmd, errors.New("--from is required"))
			}
			if fi, err := os.Stat(from); err == nil && fi.IsDir() {
				from = filepath.Join(from, bench.ResultsFile)
			}
			if out == "" {
				out = filepath.Dir(from)
			}
			res, err := bench.ReadResults(from)
			if err != nil {
				return fmt.Errorf("bench report: %w", err)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("bench report: out dir: %w", err)
			}
			if err := bench.Render(res, out); err != nil {
				return fmt.Errorf("bench report: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", filepath.Join(out, bench.ReportFile))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the run's "+bench.ResultsFile+" (or the directory holding it; required)")
	cmd.Flags().StringVar(&out, "out", "", "output directory (default: the directory of --from)")
	return cmd
}

// shortOptions sets tiny sizes for the flags the user did not set.
func shortOptions(cmd *cobra.Command, o *bench.Options) {
	set := func(name string, fn func()) {
		if !cmd.Flags().Changed(name) {
			fn()
		}
	}
	set("rounds", func() { o.Rounds = 1 })
	set("duration", func() { o.Duration = 500e6 })
	set("devices", func() { o.Devices = []int{5} })
	set("open-loop", func() { o.OpenLoop = []float64{0.5} })
	set("connections", func() { o.Connections = []int{20} })
	set("hold", func() { o.Hold = 500e6 })
	set("presence-devices", func() { o.Presence = 10 })
	set("heartbeat", func() { o.Heartbeat = 1e9 })
	set("query-readings", func() { o.QueryReadings = 2000 })
	set("query-devices", func() { o.QueryDevices = 20 })
	set("queries", func() { o.Queries = 10 })
	set("profile", func() { o.Profile = false })
}

// openLoopRates is the value of --open-loop-rate (bench.ParseOpenLoopRates);
// a repeated flag adds its pairs.
type openLoopRates struct{ m *map[int]float64 }

func (v openLoopRates) String() string {
	if v.m == nil {
		return ""
	}
	return bench.FormatOpenLoopRates(*v.m)
}

func (v openLoopRates) Set(s string) error {
	rates, err := bench.ParseOpenLoopRates(s)
	if err != nil {
		return err
	}
	if *v.m == nil {
		*v.m = map[int]float64{}
	}
	for n, rate := range rates {
		if _, dup := (*v.m)[n]; dup {
			return fmt.Errorf("a second rate for %d devices (one rate per device count)", n)
		}
		(*v.m)[n] = rate
	}
	return nil
}

func (v openLoopRates) Type() string { return "DEVICES=RATE,..." }

func newBenchLoadCmd() *cobra.Command {
	var spec string
	cmd := &cobra.Command{
		Use:    bench.LoadCmd + " --spec FILE",
		Short:  "The bench's load generator (started by devicehub bench)",
		Hidden: true,
		Args:   exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd)
			defer stop()
			return bench.RunLoadMain(ctx, spec)
		},
	}
	cmd.Flags().StringVar(&spec, "spec", "", "load spec (JSON file)")
	return cmd
}

func newBenchMochiCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:    bench.MochiCmd + " --addr ADDR",
		Short:  "mochi-mqtt alone, the bench's reference (started by devicehub bench)",
		Hidden: true,
		Args:   exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd)
			defer stop()
			return bench.RunMochi(ctx, addr, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:0", "MQTT listen address")
	return cmd
}

func newProfiledServeCmd(serve ServeFunc) *cobra.Command {
	var configPath, profile, allocs, tracePath string
	cmd := &cobra.Command{
		Use:    bench.ProfiledServeCmd + " --cpuprofile FILE [--allocprofile FILE] [--trace FILE] --config FILE",
		Short:  "devicehub serve with a CPU profile (started by devicehub bench)",
		Hidden: true,
		Args:   exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Create(profile)
			if err != nil {
				return fmt.Errorf("cpu profile: %w", err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				return fmt.Errorf("cpu profile: %w", err)
			}
			var tf *os.File
			if tracePath != "" {
				if tf, err = startTrace(tracePath); err != nil {
					pprof.StopCPUProfile()
					f.Close()
					return err
				}
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			err = serve(ctx, configPath, config.Overrides{})
			pprof.StopCPUProfile()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if tf != nil {
				trace.Stop()
				if cerr := tf.Close(); err == nil && cerr != nil {
					err = fmt.Errorf("trace: %w", cerr)
				}
			}
			if allocs != "" {
				if aerr := writeAllocsProfile(allocs); err == nil {
					err = aerr
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file")
	cmd.Flags().StringVar(&profile, "cpuprofile", "", "CPU profile output file")
	cmd.Flags().StringVar(&allocs, "allocprofile", "", "allocation profile written when the hub stops (every allocation since it started, sampled)")
	cmd.Flags().StringVar(&tracePath, "trace", "", "execution trace (runtime/trace) of the hub's whole life, started with the CPU profile (go tool trace FILE)")
	return cmd
}

// startTrace starts the process's execution trace into a new file at
// path and returns the file, to close after trace.Stop.
func startTrace(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("trace: %w", err)
	}
	return f, nil
}

// writeAllocsProfile writes the process's allocation profile to path.
func writeAllocsProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("allocation profile: %w", err)
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("allocation profile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("allocation profile: %w", err)
	}
	return nil
}
