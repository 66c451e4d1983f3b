// Package bench is `devicehub bench`: it measures devicehub side by side
// with reference systems (Mosquitto, and mochi-mqtt alone: the broker
// devicehub embeds without devicehub's work) and with the machine's
// limits, in the same run on the same machine, in alternating rounds, and
// reports ratios of medians, because absolute numbers on a shared machine
// drift from run to run.
//
// Every system under test and every load generator is a separate process:
// devicehub is the devicehub binary itself (`devicehub serve`), mochi
// alone and the load generator are hidden subcommands of the same binary
// (`devicehub bench mochi-server`, `devicehub bench load-generator`), and
// Mosquitto is Debian's mosquitto binary. The load generator speaks real
// MQTT over loopback (eclipse/paho.golang) and bounds every loop in count
// and time.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Names of the hidden subcommands the bench starts as child processes.
const (
	LoadCmd          = "load-generator"
	MochiCmd         = "mochi-server"
	ProfiledServeCmd = "profiled-serve"
)

// Scenario names accepted on the command line.
const (
	ScenarioIngest      = "ingest"
	ScenarioLimits      = "limits"
	ScenarioConnections = "connections"
	ScenarioPresence    = "presence"
	ScenarioQuery       = "query"
)

// AllScenarios are the implemented scenarios in the order they run.
var AllScenarios = []string{ScenarioIngest, ScenarioLimits, ScenarioConnections, ScenarioPresence, ScenarioQuery}

// ErrUnknownScenario is returned for a scenario name that does not exist.
var ErrUnknownScenario = errors.New("unknown scenario")

// Options configure a bench run. Zero values take the defaults noted.
type Options struct {
	Scenarios []string // default AllScenarios
	OutDir    string   // required
	// Exe is the devicehub binary (started as the hub, the load generator
	// and mochi alone); Env is added to the children's environment.
	Exe string
	Env []string
	// HubEnv is added to the environment of devicehub alone, after Env:
	// a runtime setting of the hub under test (GODEBUG=gctrace=1 to line
	// its GC cycles up with the slow messages, GOGC=off) that must not
	// reach the load generator or mochi.
	HubEnv []string
	// Mosquitto is the mosquitto binary ("" looks it up in PATH; "-"
	// disables Mosquitto).
	Mosquitto string

	Rounds      int           // rounds per scenario (default 3)
	Duration    time.Duration // publishing time of one ingest run (default 5s)
	MaxMessages int           // bound on messages per ingest run (default 2,000,000)
	Devices     []int         // ingest device counts (default 100)
	// Inflight is the QoS 1 publishes each ingest device keeps
	// outstanding, for every system alike (default 1; at most
	// MaxInflight, the receive maximum devicehub and mochi announce).
	Inflight int
	OpenLoop []float64 // open-loop fractions of the peak (default .25 .5 .75 1)
	// OpenLoopRate: absolute open-loop offered rates (messages per
	// second) by device count. A device count with a rate runs one
	// open-loop scenario at that rate, for every system, instead of the
	// fractions of OpenLoop: the same offered load for two devicehub
	// binaries whatever their peaks, so that their tails compare. Every
	// count must be one of Devices (ParseOpenLoopRates reads the flag).
	OpenLoopRate map[int]float64
	// Warmup: in the open-loop runs, every system gets the same schedule
	// for this long before the measured phase; its PUBACK latency is
	// reported apart (warmup_p99_ms). Zero: none.
	Warmup time.Duration
	// NoSignal leaves the signal measurement out of the open-loop runs:
	// by default the load generator also reads the hub's SSE stream of
	// every data event (publish → event latency), which costs both
	// processes CPU on the machine that measures the PUBACK latency.
	NoSignal    bool
	Connections []int         // connection counts (default 10,000; 0: the open-file limit, see fileLimitConns)
	Hold        time.Duration // idle hold of the connections scenario (default 15s)
	// ConnectionsIdle: the connections scenario's devices subscribe to
	// nothing (default: to their commands and desired properties, as the
	// Go SDK's devices do).
	ConnectionsIdle bool
	Presence        int           // devices of the presence scenario (default 10,000)
	Heartbeat       time.Duration // heartbeat interval of the presence scenario (default 10s)
	SQLiteBatch     int           // raw SQLite batch size (default: devicehub's mean batch, else 100)
	// QueryReadings and QueryDevices size the query scenario (default
	// 1,000,000 readings over 10,000 devices; the full size is
	// 10,000,000); Queries is the number of queries of each kind per
	// round (default 100).
	QueryReadings int
	QueryDevices  int
	Queries       int
	// QueryKeep, if set, is a directory where the query scenario keeps
	// its generated and compacted data directory, and from which later
	// runs of the same size reuse it instead of generating again.
	QueryKeep string
	// QueryBurst is how many consecutive readings of a device the query
	// scenario's generation stores one after another (default 100; 1:
	// time-major, every device's k-th reading before any device's
	// k+1-th).
	QueryBurst int
	// QueryProfile runs the hub of the query scenario under a CPU
	// profile (devicehub-query.cpu.pprof in OutDir).
	QueryProfile bool
	Profile      bool // one extra profiled devicehub ingest run
	// HubTrace runs devicehub's first open-loop ingest run of the first
	// device count (round 1 of the first open-loop scenario: the run
	// whose p99 a quick A/B reads, with one --open-loop fraction or an
	// --open-loop-rate) under `devicehub bench profiled-serve`
	// with an execution trace (OutDir/devicehub-open.trace) and a CPU
	// profile (OutDir/devicehub-open.cpu.pprof) over the hub's life: the
	// scheduling behind that run's tail, at the cost of the tracing.
	HubTrace    bool
	Short       bool // tiny sizes for smoke tests
	CommandLine []string
	Log         io.Writer // progress (default os.Stderr)
	WorkDir     string    // temporary files (default a new directory in os.TempDir)
}

func (o *Options) defaults() {
	if len(o.Scenarios) == 0 {
		o.Scenarios = AllScenarios
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.MaxMessages <= 0 {
		o.MaxMessages = 2_000_000
	}
	if len(o.Devices) == 0 {
		o.Devices = []int{100}
	}
	if o.Inflight == 0 {
		o.Inflight = 1
	}
	if o.OpenLoop == nil {
		o.OpenLoop = []float64{0.25, 0.5, 0.75, 1}
	}
	if len(o.Connections) == 0 {
		o.Connections = []int{10000}
	}
	if o.Hold <= 0 {
		o.Hold = 15 * time.Second
	}
	if o.Presence <= 0 {
		o.Presence = 10000
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 10 * time.Second
	}
	if o.QueryReadings <= 0 {
		o.QueryReadings = 1_000_000
	}
	if o.QueryDevices <= 0 {
		o.QueryDevices = 10000
	}
	if o.QueryBurst <= 0 {
		o.QueryBurst = 100
	}
	if o.Queries <= 0 {
		o.Queries = 100
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
}

type runner struct {
	o         Options
	work      string
	mosquitto string // "" when not available
	seeds     map[int]*seed
	res       *Results
	peak      map[int]float64 // devicehub's closed-loop readings/s by devices
	batch     float64         // devicehub's mean commit batch in the ingest scenario
	procs     int             // hub processes started, for their log files' names
	lastLog   string          // the log file of the hub started last, until a run is recorded
}

// procLog returns the path of the next hub process's log file in
// OutDir/logs (devicehub-N.log; N counts the hub processes of the run),
// or "" when that directory cannot be made.
func (r *runner) procLog(name string) string {
	dir := filepath.Join(r.o.OutDir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ""
	}
	r.procs++
	r.lastLog = filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, r.procs))
	return r.lastLog
}

// logTailLines is how many of a failed run's hub log lines (warnings and
// errors) its measurement keeps.
const logTailLines = 5

// record appends run to sc. A devicehub run that failed keeps the name of
// the log of the hub started for it (relative to OutDir) and that log's
// last warnings and errors, which the report prints with the error: a
// failed round is then diagnosed from the report alone.
func (r *runner) record(sc *Scenario, run Measurement) {
	if run.System == SysDevicehub && run.Error != "" && r.lastLog != "" {
		if rel, err := filepath.Rel(r.o.OutDir, r.lastLog); err == nil {
			run.Log = rel
		}
		run.LogTail = logTail(r.lastLog, logTailLines)
	}
	r.lastLog = ""
	sc.Runs = append(sc.Runs, run)
}

// logTail returns the last n lines of the log file path at level WARN or
// ERROR (slog's text or JSON form), or nil when it cannot be read.
func logTail(path string, n int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var tail []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") ||
			strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			tail = append(tail, line)
			if len(tail) > n {
				tail = tail[1:]
			}
		}
	}
	return tail
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.o.Log, "bench: "+format+"\n", args...)
}

// Run runs the scenarios and writes results.json into o.OutDir, then
// renders report.md and the charts from that file (Render). It returns
// the results even when a scenario failed (the failure is recorded in its
// runs).
func Run(ctx context.Context, o Options) (*Results, error) {
	o.defaults()
	for _, s := range o.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownScenario, s, strings.Join(AllScenarios, ", "))
		}
	}
	if o.OutDir == "" || o.Exe == "" {
		return nil, errors.New("bench: OutDir and Exe are required")
	}
	if err := checkOpenLoopRates(o.OpenLoopRate, o.Devices); err != nil {
		return nil, err
	}
	if o.Inflight < 1 || o.Inflight > MaxInflight {
		return nil, fmt.Errorf("bench: inflight %d: must be between 1 and %d (the receive maximum devicehub and mochi announce)", o.Inflight, MaxInflight)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: out dir: %w", err)
	}
	work := o.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "devicehub-bench-"); err != nil {
			return nil, fmt.Errorf("bench: work dir: %w", err)
		}
		defer os.RemoveAll(work)
	}
	for i, c := range o.Connections {
		if c <= 0 {
			o.Connections[i] = fileLimitConns()
		}
	}
	r := &runner{o: o, work: work, seeds: map[int]*seed{}, peak: map[int]float64{}}
	r.res = &Results{
		FormatVersion: ResultsFormat,
		Started:       time.Now(),
		Command:       o.CommandLine,
		Machine:       machine(),
		Versions:      map[string]string{},
		Settings: map[string]any{
			"rounds": o.Rounds, "duration": o.Duration.String(), "warmup": o.Warmup.String(), "devices": o.Devices, "inflight": o.Inflight, "open_loop": o.OpenLoop, "open_loop_rate": rateSettings(o.OpenLoopRate), "signal": !o.NoSignal,
			"connections": o.Connections, "hold": o.Hold.String(), "connections_idle": o.ConnectionsIdle, "presence_devices": o.Presence,
			"heartbeat": o.Heartbeat.String(), "short": o.Short, "max_messages": o.MaxMessages,
			"query_readings": o.QueryReadings, "query_devices": o.QueryDevices, "queries": o.Queries, "query_keep": o.QueryKeep, "query_burst": o.QueryBurst,
			"hub_env": o.HubEnv, "hub_trace": o.HubTrace,
		},
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		r.res.Versions["devicehub"] = bi.Main.Version
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/mochi-mqtt/server/v2", "github.com/eclipse/paho.golang", "modernc.org/sqlite":
				r.res.Versions[d.Path] = d.Version
			}
		}
	}
	switch o.Mosquitto {
	case "-":
		r.res.Notes = append(r.res.Notes, "Mosquitto disabled (--mosquitto -): no devicehub/Mosquitto ratios.")
	case "":
		if p, err := exec.LookPath("mosquitto"); err == nil {
			r.mosquitto = p
		} else if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
			r.mosquitto = "/usr/sbin/mosquitto"
		} else {
			r.res.Notes = append(r.res.Notes, "mosquitto is not installed (apt-get install mosquitto): no devicehub/Mosquitto ratios.")
		}
	default:
		r.mosquitto = o.Mosquitto
	}
	if r.mosquitto != "" {
		r.res.Versions["mosquitto"] = mosquittoVersion(r.mosquitto)
	}

	var firstErr error
	for _, s := range o.Scenarios {
		var err error
		switch s {
		case ScenarioIngest:
			err = r.ingest(ctx)
		case ScenarioLimits:
			err = r.limits(ctx)
		case ScenarioConnections:
			err = r.connections(ctx)
		case ScenarioPresence:
			err = r.presence(ctx)
		case ScenarioQuery:
			err = r.query(ctx)
		}
		if err != nil {
			r.logf("scenario %s: %v", s, err)
			r.res.Notes = append(r.res.Notes, fmt.Sprintf("scenario %s failed: %v", s, firstLine(err.Error())))
			if firstErr == nil {
				firstErr = fmt.Errorf("scenario %s: %w", s, err)
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	r.goals()
	r.res.Finished = time.Now()
	r.res.Machine.LoadAfter = loadavg()
	if err := writeAndRender(r.res, o.OutDir); err != nil {
		return r.res, errors.Join(firstErr, err)
	}
	return r.res, firstErr
}

// systems returns the systems to alternate in a scenario.
func (r *runner) systems() []string {
	s := []string{SysDevicehub}
	if r.mosquitto != "" {
		s = append(s, SysMosquitto)
	}
	return append(s, SysMochi)
}

func (r *runner) start(ctx context.Context, system string, sd *seed, heartbeat time.Duration, prof profiling) (*sut, error) {
	switch system {
	case SysDevicehub:
		return r.freshDevicehub(ctx, sd, heartbeat, prof)
	case SysMosquitto:
		return r.startMosquitto(ctx)
	default:
		return r.startMochi(ctx)
	}
}

// stop ends a system under test and removes its files; for devicehub it
// returns the number of readings in its store.
func (r *runner) stop(ctx context.Context, s *sut) (int64, error) {
	defer func() {
		if s.dir != "" {
			_ = os.RemoveAll(s.dir)
		}
	}()
	if s.system == SysDevicehub {
		return s.stopAndCount(ctx)
	}
	return 0, s.p.stop(30 * time.Second)
}

// MaxInflight bounds Options.Inflight: the receive maximum devicehub's
// broker and mochi alone announce (64). Above it the client would queue
// publishes itself and count that wait as latency.
const MaxInflight = 64

// inflightText says how many messages a device keeps in flight.
func inflightText(n int) string {
	if n <= 1 {
		return "one message in flight"
	}
	return fmt.Sprintf("up to %d messages in flight", n)
}

// signalNote says whether the open-loop runs measured the signal latency.
func signalNote(off bool) string {
	if off {
		return "signal: not measured (--signal=false): the load generator did not read the hub's SSE stream, so devicehub's PUBACK latency here is without that stream's cost."
	}
	return "signal: devicehub only, publish → the device_data_received event read from the hub's SSE stream /api/v1/events in the load generator, matched by msg_id; it includes the SSE encoding and delivery, and both processes pay for that stream on the same machine as the PUBACK latency (--signal=false leaves it out)."
}

// anonymous returns n device identities without credentials.
func anonymous(n int) []Device {
	d := make([]Device, n)
	for i := range d {
		d[i] = Device{ID: fmt.Sprintf("dev%05d", i)}
	}
	return d
}

func (r *runner) ingest(ctx context.Context) error {
	for _, n := range r.o.Devices {
		sd, err := r.seedDevicehub(ctx, n)
		if err != nil {
			return err
		}
		sc := &Scenario{
			Name:     fmt.Sprintf("ingest_closed_%d", n),
			Title:    fmt.Sprintf("Ingest, %d devices, QoS 1, %s, closed loop (peak)", n, inflightText(r.o.Inflight)),
			Headline: "rate",
			Figures:  []string{"rate", "puback_p50_ms", "puback_p99_ms", "puback_max_ms", "cpu_s_per_10k", "peak_rss_mb", "acked", "lost"},
			Notes: []string{
				"rate: devicehub: readings counted in its SQLite store after it stopped, per second of load (first publish to last PUBACK; a PUBACK means stored); Mosquitto: messages its QoS 1 wildcard subscriber (in the load generator) received per second; mochi alone: messages its inline subscriber received per second.",
				"A run that lost an acknowledged message reports no rate (a rate with losses is not a rate).",
				fmt.Sprintf("Each device publishes ~100-byte JSON readings at QoS 1 with %s, as fast as acknowledged (a new message whenever a PUBACK arrives), for %s per run; the same for every system. Latency: each message's publish → its PUBACK.", inflightText(r.o.Inflight), r.o.Duration),
			},
		}
		r.res.Scenarios = append(r.res.Scenarios, sc)
		for round := 1; round <= r.o.Rounds; round++ {
			for _, sys := range r.systems() {
				run := r.ingestRun(ctx, sys, sd, n, 0, false, profiling{})
				run.Round = round
				r.record(sc, run)
				r.logf("%s %s round %d: %v %s", sc.Name, sys, round, compact(run.Figures), run.Error)
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
		sc.Finish()
		peak := sc.Summary[SysDevicehub]["rate"].Median
		r.peak[n] = peak
		if peak <= 0 {
			return errors.New("devicehub measured no peak rate")
		}
		// The open-loop rates are fractions of this peak: one measured
		// while other processes took a core sets them far too low.
		other := sc.Summary[SysDevicehub]["other_cores"].Median
		if other > maxOtherCores {
			r.logf("%s: other processes used %.2f cores during devicehub's peak rounds: the open-loop loads are too low (or, at an absolute rate, their share of the peak too high)", sc.Name, other)
		}
		if r.o.Profile && r.o.Exe != "" && n == r.o.Devices[0] {
			r.profile(ctx, sd, n)
		}
		open := r.openScenarios(n, peak, other)
		if r.o.HubTrace && n == r.o.Devices[0] && len(open) == 0 {
			r.res.Notes = append(r.res.Notes, fmt.Sprintf("--hub-trace: no open-loop run of %d devices to trace (--open-loop is empty).", n))
		}
		for i, osc := range open {
			r.res.Scenarios = append(r.res.Scenarios, osc)
			for round := 1; round <= r.o.Rounds; round++ {
				for _, sys := range r.systems() {
					var prof profiling
					traced := r.o.HubTrace && n == r.o.Devices[0] && i == 0 && round == 1 && sys == SysDevicehub
					if traced {
						prof = r.hubTrace(osc)
					}
					run := r.ingestRun(ctx, sys, sd, n, osc.OfferedLoad, sys == SysDevicehub && !r.o.NoSignal, prof)
					run.Round = round
					if traced {
						r.hubTraced(run)
					}
					r.record(osc, run)
					r.logf("%s %s round %d: %v %s", osc.Name, sys, round, compact(run.Figures), run.Error)
					if ctx.Err() != nil {
						return ctx.Err()
					}
				}
			}
			osc.Finish()
		}
	}
	return nil
}

// ingestRun runs one system once; rate 0 is a closed loop. A devicehub
// run records prof.
func (r *runner) ingestRun(ctx context.Context, system string, sd *seed, n int, rate float64, signal bool, prof profiling) Measurement {
	run := Measurement{System: system, Started: time.Now(), Figures: map[string]float64{}}
	defer func() { run.Seconds = time.Since(run.Started).Seconds() }()
	s, err := r.start(ctx, system, sd, time.Minute, prof)
	if err != nil {
		run.Error = err.Error()
		return run
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = r.stop(ctx, s)
		}
	}()
	spec := LoadSpec{Mode: ModeIngest, Addr: s.mqtt, QoS: 1, Duration: r.o.Duration, MaxMessages: r.o.MaxMessages, Rate: rate, Inflight: r.o.Inflight}
	if rate > 0 {
		spec.Warmup = r.o.Warmup
	}
	switch system {
	case SysDevicehub:
		spec.Devices = sd.devs
		if signal {
			spec.EventsURL, spec.Token = "http://"+s.http+"/api/v1/events", s.token
		}
	case SysMosquitto:
		spec.Devices = anonymous(n)
		spec.Subscribe = true
	default:
		spec.Devices = anonymous(n)
	}
	lp, err := r.startLoad([]LoadSpec{spec})
	if err != nil {
		run.Error = err.Error()
		return run
	}
	var cpu0, cpu1 time.Duration
	var hwm int64
	var mochi MochiStats
	var batch float64
	var scrape0, scrape1 map[string]float64
	var cpuSamples []cpuSample
	// The machine's CPU and the generator's over the load, for the
	// contention figures (tails.go).
	var busy0, busy1, gen0, gen1 time.Duration
	var wall0, wall1 time.Time
	// The same every quarter second, for other processes' bursts.
	stopSampling := make(chan struct{})
	var samples chan []cpuSample
	defer func() {
		if samples != nil {
			close(stopSampling)
			<-samples
		}
	}()
	err = lp.step(ctx, "connected", 3*time.Minute, func() {
		wall0 = time.Now()
		busy0, _ = machineBusy()
		gen0, _ = cpuTime(lp.ps[0].pid())
		cpu0, _ = cpuTime(s.p.pid())
		samples = make(chan []cpuSample, 1)
		go sampleCPU(stopSampling, s.p.pid(), lp.ps[0].pid(), samples)
		if system == SysDevicehub {
			scrape0 = metrics(ctx, s.http)
		}
	})
	if err == nil {
		err = lp.step(ctx, "loaded", r.o.Duration+2*time.Minute, func() {
			cpu1, _ = cpuTime(s.p.pid())
			gen1, _ = cpuTime(lp.ps[0].pid())
			busy1, _ = machineBusy()
			wall1 = time.Now()
			if samples != nil {
				close(stopSampling)
				cpuSamples = <-samples
				samples = nil
			}
			_, hwm, _ = memory(s.p.pid())
			if system == SysMochi {
				mochi, _ = s.mochiStats(ctx)
			}
			if system == SysDevicehub {
				scrape1 = metrics(ctx, s.http)
				batch = meanBatch(scrape1)
			}
		})
	}
	if err != nil {
		lp.kill()
		run.Error = err.Error()
		return run
	}
	res, err := lp.results(time.Minute)
	if err != nil {
		run.Error = err.Error()
		return run
	}
	lr := res[0]
	if system == SysMochi {
		mochi.Received = r.mochiSettled(ctx, s, mochi.Received, lr.Acked+lr.WarmupAcked)
	}
	stopped = true
	stored, err := r.stop(ctx, s)
	if err != nil {
		run.Error = err.Error()
	}
	if batch > 0 {
		// The raw SQLite limit compares with the closed loop of the
		// first device count: only that sets the batch it uses.
		if rate == 0 && n == r.o.Devices[0] {
			r.batch = batch
		}
		run.Figures["mean_commit_batch"] = batch
	}
	var count float64
	secs := lr.Seconds
	switch system {
	case SysDevicehub:
		count = float64(stored)
		run.Figures["stored"] = count
	case SysMosquitto:
		count, secs = float64(lr.Received), lr.ReceivedSeconds
		run.Figures["received"] = count
	default:
		count = float64(mochi.Received)
		run.Figures["received"] = count
		run.Figures["mochi_dropped"] = float64(mochi.MessagesDropped + mochi.InflightDropped)
	}
	f := run.Figures
	f["published"], f["acked"], f["errors"] = float64(lr.Published), float64(lr.Acked), float64(lr.Errors)
	f["puback_p50_ms"], f["puback_p99_ms"], f["puback_max_ms"] = lr.PubAck.P50, lr.PubAck.P99, lr.PubAck.Max
	if lr.Signal.N > 0 {
		f["signal_p50_ms"], f["signal_p99_ms"] = lr.Signal.P50, lr.Signal.P99
	}
	if scrape1 != nil {
		hubTails(f, scrape0, scrape1)
	}
	if lr.Late.N > 0 {
		f["loadgen_late_p99_ms"] = lr.Late.P99
	}
	f["loadgen_sched_p99_ms"], f["loadgen_sched_max_ms"], f["loadgen_gc_cycles"] = lr.SchedP99, lr.SchedMax, float64(lr.GCCycles)
	if wall := wall1.Sub(wall0).Seconds(); wall > 0 && busy1 > 0 && busy0 > 0 {
		f["loadgen_cores"] = (gen1 - gen0).Seconds() / wall
		f["sut_cores"] = (cpu1 - cpu0).Seconds() / wall
		f["other_cores"] = max((busy1-busy0-(gen1-gen0)-(cpu1-cpu0)).Seconds()/wall, 0)
	}
	var otherBins []float64
	if bins := int(r.o.Duration / slowBin); bins > 0 && len(cpuSamples) > 1 && lr.Start > 0 {
		otherBins = otherByBin(cpuSamples, time.UnixMilli(lr.Start), slowBin, bins)
		f["other_cores_max"] = slices.Max(otherBins)
	}
	if len(lr.Slow) > 0 {
		r.logf("%s %d devices rate %.0f (load from %.1f): messages over %v by %v of their schedule: %v", system, n, rate, float64(lr.Start)/1000, slowThreshold, slowBin, lr.Slow)
		if otherBins != nil {
			r.logf("%s %d devices rate %.0f: cores other processes used by %v of the schedule: %s", system, n, rate, slowBin, fmtBins(otherBins))
		}
	}
	if hwm > 0 {
		f["peak_rss_mb"] = float64(hwm) / 1024
	}
	if count > 0 {
		f["cpu_s_per_10k"] = (cpu1 - cpu0).Seconds() / count * 10000
	}
	if lr.WarmupAcked > 0 {
		// The store and the consumers also got the warm-up's messages.
		count -= float64(lr.WarmupAcked)
		f["warmup_p99_ms"] = lr.Warmup.P99
	}
	lost := float64(lr.Acked) - count
	f["lost"] = max(lost, 0)
	if rate > 0 {
		f["offered_rate"] = rate
		if lr.Seconds > 0 {
			f["achieved_rate"] = float64(lr.Acked) / lr.Seconds
		}
	}
	switch {
	case lost > 0:
		run.Error = fmt.Sprintf("lost %.0f of %d acknowledged messages: no rate", lost, lr.Acked)
	case lr.Errors > 0:
		run.Error = fmt.Sprintf("%d publish errors: %s", lr.Errors, lr.FirstError)
	case secs > 0 && rate == 0:
		f["rate"] = count / secs
	}
	if lr.ConnectErrors > 0 && run.Error == "" {
		run.Error = fmt.Sprintf("%d devices failed to connect: %s", lr.ConnectErrors, lr.FirstError)
	}
	return run
}

// meanBatch reads devicehub's mean commit batch size from /metrics.
func meanBatch(m map[string]float64) float64 {
	if m["devicehub_commit_batch_size_count"] == 0 {
		return 0
	}
	return m["devicehub_commit_batch_size_sum"] / m["devicehub_commit_batch_size_count"]
}

// metrics reads devicehub's /metrics: the value of every series by its
// name, labels included as printed (`x_bucket{le="0.1"}`); none if it
// cannot be read.
func metrics(ctx context.Context, addr string) map[string]float64 {
	m := map[string]float64{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return m
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, l := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if x, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			m[name] = x
		}
	}
	return m
}

// compact formats a few headline figures for the progress log.
func compact(f map[string]float64) string {
	var parts []string
	for _, k := range []string{"rate", "achieved_rate", "puback_p99_ms", "connected", "connect_failed", "dial_unanswered", "dial_answered_late", "dial_retried", "hub_connect_timeouts", "hub_closed_before_connack", "hub_sched_max_ms", "kernel_listen_overflows", "kernel_syn_retrans", "connect_rate", "rss_per_conn_kb", "offline_delay_p99_ms", "rows_per_s", "publish_rate",
		"hub_handle_p99_ms", "hub_wait_p99_ms", "hub_commit_p99_ms", "hub_commit_max_ms", "hub_sched_p99_ms", "hub_gc_cycles", "hub_gc_percent", "loadgen_late_p99_ms", "loadgen_sched_p99_ms", "loadgen_sched_max_ms", "sut_cores", "loadgen_cores", "other_cores", "other_cores_max"} {
		if v, ok := f[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%s", k, fmtNum(v)))
		}
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// mochiSettled returns how many messages mochi's inline subscriber got,
// read again (for a few seconds at most) until every acknowledged one is
// in: mochi writes a PUBACK before it hands the message to its
// subscribers, so the last acknowledged messages can reach the subscriber
// after the stats were first read.
func (r *runner) mochiSettled(ctx context.Context, s *sut, received int64, acked int) int64 {
	for deadline := time.Now().Add(5 * time.Second); received < int64(acked) && time.Now().Before(deadline); {
		st, err := s.mochiStats(ctx)
		if err != nil {
			return received
		}
		if received = st.Received; received < int64(acked) {
			select {
			case <-ctx.Done():
				return received
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return received
}
