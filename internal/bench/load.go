package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sync/errgroup"
)

// Load generator modes.
const (
	ModeIngest   = "ingest"   // QoS 1 (or 0) readings, closed or open loop
	ModeConnect  = "connect"  // hold idle connections
	ModePresence = "presence" // heartbeats; some devices go silent
)

// Device is one device the load generator connects as. Empty credentials
// connect anonymously.
type Device struct {
	ID   string `json:"id"`
	User string `json:"user,omitempty"`
	Pass string `json:"pass,omitempty"`
}

// LoadSpec tells a load generator process what to do. Every loop is
// bounded in count (MaxMessages) and time (Duration, Hold).
type LoadSpec struct {
	Mode     string   `json:"mode"`
	Addr     string   `json:"addr"`      // MQTT address host:port
	SourceIP string   `json:"source_ip"` // local address to dial from ("" any)
	Devices  []Device `json:"devices"`
	QoS      byte     `json:"qos"`
	// Duration bounds the publishing phase; MaxMessages bounds the count.
	Duration    time.Duration `json:"duration"`
	MaxMessages int           `json:"max_messages"`
	// Rate is the total offered rate in messages/s (open loop); 0 is a
	// closed loop (each device publishes as soon as one was acked).
	Rate float64 `json:"rate"`
	// Inflight is how many QoS 1 publishes each device keeps outstanding
	// in ingest mode (0 or 1: one at a time). In a closed loop a device
	// sends its next message whenever one of its PUBACKs arrives; in an
	// open loop a device whose window is full falls behind its schedule,
	// which its latencies then show.
	Inflight int `json:"inflight"`
	// Warmup runs the same schedule for this long before the measured
	// phase (before the "connected" step), its latencies reported apart.
	Warmup time.Duration `json:"warmup"`
	// Subscribe adds a wildcard QoS 1 subscriber on devices/# (the
	// consumer of a plain broker) and waits for it to receive every
	// acknowledged message.
	Subscribe bool `json:"subscribe"`
	// EventsURL and Token: follow the hub's SSE event stream and match
	// events to publishes by msg_id (publish→signal latency), or, in
	// presence mode, device_disconnected events to silent devices.
	EventsURL string `json:"events_url"`
	Token     string `json:"token"`
	// KeepAlive in seconds (connect and presence modes).
	KeepAlive uint16 `json:"keepalive"`
	// Hold is how long connect mode holds the connections idle.
	Hold time.Duration `json:"hold"`
	// SubscribeOwn: in connect mode each device, once connected,
	// subscribes at QoS 1 to its commands and desired properties
	// (devices/{id}/commands/+ and devices/{id}/twin/desired), as a device
	// of the Go SDK does; a failed subscription counts as a failed
	// connection.
	SubscribeOwn bool `json:"subscribe_own"`
	// Presence mode: heartbeat period, how many devices go silent (the
	// first Silent devices) and the type's heartbeat timeout.
	Heartbeat time.Duration `json:"heartbeat"`
	Silent    int           `json:"silent"`
	Timeout   time.Duration `json:"timeout"`
	// Steps makes the generator stop at each phase boundary, print
	// "bench-step NAME" on stderr and wait for a line on stdin, so that
	// the runner can sample the system under test between phases.
	Steps bool `json:"steps"`
}

// LoadResult is what a load generator prints on stdout.
type LoadResult struct {
	Connected      int     `json:"connected"`
	ConnectErrors  int     `json:"connect_errors"`
	ConnectSeconds float64 `json:"connect_seconds"`
	FirstError     string  `json:"first_error,omitempty"`
	// DialFailures: failed TCP dials, those made again included, by the
	// kernel's state of the socket when the dial gave up (dialprobe.go):
	// SYN_SENT means the system under test never answered the SYN nor
	// its retransmissions; ESTABLISHED or CLOSE_WAIT with no SYN sent
	// again means the handshake was done in the kernel and the generator
	// did not see it in time (dialFailure.late). FirstDialFailure is the
	// first one's error with what the probe saw.
	DialFailures     map[string]int `json:"dial_failures,omitempty"`
	FirstDialFailure string         `json:"first_dial_failure,omitempty"`
	// DialRetries: dials made again because the one before failed only
	// by the generator's own delay (dialFailure.late); the same rule for
	// every system. A device is among ConnectErrors only if its last
	// dial failed.
	DialRetries int `json:"dial_retries"`
	// ConnectSchedP99 and ConnectSchedMax: the generator's own scheduler
	// latency (ms, bucket upper bounds) over the connect phase.
	ConnectSchedP99 float64 `json:"connect_sched_p99_ms"`
	ConnectSchedMax float64 `json:"connect_sched_max_ms"`

	Published int     `json:"published"`
	Acked     int     `json:"acked"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"` // first publish to last ack
	PubAck    Latency `json:"puback"`

	Received        int     `json:"received"`
	ReceivedSeconds float64 `json:"received_seconds"` // first publish to last message received
	Signal          Latency `json:"signal"`

	OfflineDelay Latency `json:"offline_delay"` // presence: deadline → device_disconnected
	Offline      int     `json:"offline"`

	// Where slow acknowledgements came from (tails.go), over the
	// publishing phase of ingest mode. Late: how late paced (open-loop)
	// publishes woke against their schedule when they were not waiting
	// for a PUBACK, i.e. the generator's own delay. Sched: the
	// generator's Go scheduler latency (p99 and largest, bucket upper
	// bounds); GCCycles its GCs. Slow: messages over slowThreshold by
	// slowBin of their scheduled time from the start.
	Late     Latency `json:"late"`
	SchedP99 float64 `json:"sched_p99_ms"`
	SchedMax float64 `json:"sched_max_ms"`
	GCCycles uint64  `json:"gc_cycles"`
	Slow     []int   `json:"slow,omitempty"`
	Start    int64   `json:"start_unix_ms"` // the publishing phase's start

	// Warmup: the PUBACK latency of the warm-up (LoadSpec.Warmup) and
	// the messages it had acknowledged, not in Acked.
	Warmup      Latency `json:"warmup"`
	WarmupAcked int     `json:"warmup_acked"`
}

// RunLoad runs the load generator described by spec, reading step
// confirmations from in, writing progress to log and returning the result.
func RunLoad(ctx context.Context, spec LoadSpec, in io.Reader, log io.Writer) (*LoadResult, error) {
	g := &loadGen{spec: spec, in: bufio.NewReader(in), log: log, res: &LoadResult{}}
	return g.run(ctx)
}

type loadGen struct {
	spec LoadSpec
	in   *bufio.Reader
	log  io.Writer
	res  *LoadResult

	mu      sync.Mutex
	sent    map[string]time.Time // msg_id → publish time, for signal latency
	signals []time.Duration

	received atomic.Int64
	lastRecv atomic.Int64 // unix nanos
}

// step announces a phase boundary and waits for the runner (bounded).
func (g *loadGen) step(name string) {
	if !g.spec.Steps {
		return
	}
	fmt.Fprintf(g.log, "bench-step %s\n", name)
	done := make(chan struct{})
	go func() {
		_, _ = g.in.ReadString('\n')
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
	}
}

type conn struct {
	dev Device
	cl  *paho.Client
	nc  net.Conn
}

func (g *loadGen) dial(ctx context.Context, d Device, keepAlive uint16, onPub func(paho.PublishReceived) (bool, error)) (*conn, error) {
	dialer := &net.Dialer{Timeout: dialTimeout}
	if g.spec.SourceIP != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(g.spec.SourceIP)}
	}
	nc, err := dialProbed(ctx, dialer, g.spec.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", g.spec.Addr, err)
	}
	cfg := paho.ClientConfig{ClientID: d.ID, Conn: nc}
	if onPub != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPub}
	}
	cl := paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: d.ID, KeepAlive: keepAlive, CleanStart: true}
	if onPub == nil {
		// A device of the load generator is sent no PUBLISH. paho sizes
		// its queue of incoming PUBLISHes by the client's Receive Maximum
		// (65,535 when the CONNECT has none): a channel of pointers, 512
		// KiB a client, that every GC of the generator scans. With a
		// thousand devices that was 500 MiB, and the one GC a 20 s run
		// reached held the generator for ~0.75 s, the largest burst of
		// late messages in every system's open-loop runs
		// (docs/BENCHMARKS.md, "The load generator's own GC").
		rm := uint16(deviceReceiveMaximum)
		cp.Properties = &paho.ConnectProperties{ReceiveMaximum: &rm}
	}
	if d.User != "" {
		cp.Username, cp.UsernameFlag = d.User, true
		cp.Password, cp.PasswordFlag = []byte(d.Pass), true
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ca, err := cl.Connect(cctx, cp)
	if err != nil {
		note := socketNote(nc)
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w (%s)", d.ID, err, note)
	}
	if ca.ReasonCode != 0 {
		nc.Close()
		return nil, fmt.Errorf("connect %s: reason code %d", d.ID, ca.ReasonCode)
	}
	return &conn{dev: d, cl: cl, nc: nc}, nil
}

// connectAll connects every device, 64 at a time; failures are counted.
//
// onConnect, when set, runs in the connecting goroutine right after device
// i connected, so that a device can start its work while others are still
// connecting.
func (g *loadGen) connectAll(ctx context.Context, keepAlive uint16, onConnect func(i int, c *conn)) []*conn {
	conns := make([]*conn, len(g.spec.Devices))
	start := time.Now()
	sched0 := readSched()
	var errs, retries atomic.Int64
	var first sync.Once
	var dmu sync.Mutex
	var eg errgroup.Group
	eg.SetLimit(64)
	for i, d := range g.spec.Devices {
		eg.Go(func() error {
			// Every failed dial is counted by the kernel's state of its
			// socket, the ones made again included.
			countDial := func(err error) {
				if de := (*dialError)(nil); errors.As(err, &de) {
					dmu.Lock()
					if g.res.DialFailures == nil {
						g.res.DialFailures = map[string]int{}
					}
					g.res.DialFailures[de.f.state]++
					if g.res.FirstDialFailure == "" {
						g.res.FirstDialFailure = err.Error()
					}
					dmu.Unlock()
					fmt.Fprintf(g.log, "bench: %s: %v\n", d.ID, err)
				}
			}
			c, err := g.dial(ctx, d, keepAlive, nil)
			for try := 0; err != nil && try < maxDialRetries && lateDial(err); try++ {
				countDial(err)
				retries.Add(1)
				c, err = g.dial(ctx, d, keepAlive, nil)
			}
			if err != nil {
				countDial(err)
				errs.Add(1)
				first.Do(func() { g.res.FirstError = err.Error() })
				return nil
			}
			conns[i] = c
			if onConnect != nil {
				onConnect(i, c)
			}
			return nil
		})
	}
	_ = eg.Wait()
	g.res.ConnectSeconds = time.Since(start).Seconds()
	g.res.ConnectSchedP99, g.res.ConnectSchedMax, _ = schedSince(sched0, readSched())
	g.res.ConnectErrors = int(errs.Load())
	g.res.DialRetries = int(retries.Load())
	var out []*conn
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	g.res.Connected = len(out)
	fmt.Fprintf(g.log, "bench: connected %d of %d in %.1fs\n", len(out), len(conns), g.res.ConnectSeconds)
	return out
}

func disconnectAll(conns []*conn) {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
			_ = c.nc.Close()
		}()
	}
	wg.Wait()
}

func (g *loadGen) run(ctx context.Context) (*LoadResult, error) {
	if g.spec.Addr == "" || len(g.spec.Devices) == 0 {
		return nil, errors.New("load spec: no address or no devices")
	}
	if g.spec.Duration <= 0 {
		g.spec.Duration = 5 * time.Second
	}
	switch g.spec.Mode {
	case ModeIngest:
		return g.ingest(ctx)
	case ModeConnect:
		return g.connect(ctx)
	case ModePresence:
		return g.presence(ctx)
	}
	return nil, fmt.Errorf("load spec: unknown mode %q", g.spec.Mode)
}

// loadHeapHeadroom is how much the load generator's memory may grow past
// what it holds once its devices are connected before it collects
// garbage while it publishes (its GC is otherwise off then). It was a
// fixed 2 GiB: a run then ran on fresh memory to the end, and faulting it
// in cost the generator ~0.05 cores more, taken from the system under test
// (docs/BENCHMARKS.md, "The load generator's own GC").
const loadHeapHeadroom = 256 << 20

// deviceReceiveMaximum is the Receive Maximum of the load generator's
// devices (not of the subscriber that counts every message): they are
// sent no PUBLISH, and paho allocates a queue of that many (dial).
const deviceReceiveMaximum = 16

// dialTimeout bounds one TCP dial of the load generator;
// maxDialRetries bounds the dials of one device made again because the
// generator was late (lateDial).
const (
	dialTimeout    = 10 * time.Second
	maxDialRetries = 2
)

// lateDial reports whether err is a TCP dial that failed only by the
// generator's own delay (dialFailure.late).
func lateDial(err error) bool {
	var de *dialError
	return errors.As(err, &de) && isTimeout(err) && de.f.late()
}

// payload is a reading of about 100 bytes fitting the bench device type.
func payload(buf []byte, k int, msgID string) []byte {
	return fmt.Appendf(buf[:0], `{"temperature":%d.%02d,"humidity":%d.5,"pressure":1013.%d,"battery":%d,"msg_id":"%s"}`,
		k%40, k%100, 30+k%50, k%10, 100-k%100, msgID)
}

func (g *loadGen) ingest(ctx context.Context) (*LoadResult, error) {
	conns := g.connectAll(ctx, 60, nil)
	defer disconnectAll(conns)
	if len(conns) == 0 {
		return g.res, fmt.Errorf("no device connected: %s", g.res.FirstError)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bg sync.WaitGroup
	defer bg.Wait()
	defer cancel()
	var sub *conn
	if g.spec.Subscribe {
		var err error
		sub, err = g.dial(ctx, Device{ID: "bench-consumer"}, 60, func(pr paho.PublishReceived) (bool, error) {
			g.received.Add(1)
			g.lastRecv.Store(time.Now().UnixNano())
			return true, nil
		})
		if err != nil {
			return g.res, fmt.Errorf("subscriber: %w", err)
		}
		defer func() { _ = sub.cl.Disconnect(&paho.Disconnect{}); sub.nc.Close() }()
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = sub.cl.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/#", QoS: 1}}})
		scancel()
		if err != nil {
			return g.res, fmt.Errorf("subscribe: %w", err)
		}
	}
	if g.spec.EventsURL != "" {
		g.sent = make(map[string]time.Time, 1<<16)
		ready := make(chan error, 1)
		bg.Add(1)
		go func() {
			defer bg.Done()
			g.followEvents(ctx, "device_data_received", ready, g.onDataEvent)
		}()
		if err := <-ready; err != nil {
			return g.res, fmt.Errorf("events: %w", err)
		}
	}
	perDevice := g.spec.MaxMessages / len(conns)
	if perDevice <= 0 {
		perDevice = 1 << 30
	}
	var interval time.Duration
	if g.spec.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(len(conns)) / g.spec.Rate)
	}
	inflight := max(g.spec.Inflight, 1)
	// Each device's message sequence and stop flag, over both phases.
	next := make([]atomic.Int64, len(conns))
	stops := make([]atomic.Bool, len(conns))
	var published, acked, failed atomic.Int64
	var first sync.Once
	// phase publishes for dur from now (open or closed loop) and returns
	// every acknowledged message's latency, the paced publishes'
	// lateness, the scheduled times of the slow ones (since start), and
	// the start and the last PUBACK.
	phase := func(dur time.Duration) (lats, lates, slows [][]time.Duration, start time.Time, lastAck int64) {
		start = time.Now()
		deadline := start.Add(dur)
		lats = make([][]time.Duration, len(conns)*inflight)
		lates = make([][]time.Duration, len(conns)*inflight)
		slows = make([][]time.Duration, len(conns)*inflight)
		k0 := make([]int64, len(conns)) // each device's first k of the phase
		for i := range conns {
			k0[i] = next[i].Load()
		}
		var last atomic.Int64
		var wg sync.WaitGroup
		for i, c := range conns {
			// inflight workers share the device's client and its message
			// sequence: each takes the next k, publishes it and waits for
			// its PUBACK, so the device has up to inflight messages
			// outstanding and sends a new one as soon as one is acked.
			topic := "devices/" + c.dev.ID + "/data"
			offset := time.Duration(0)
			if interval > 0 {
				offset = interval * time.Duration(i) / time.Duration(len(conns))
			}
			for w := range inflight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var buf []byte
					ls := make([]time.Duration, 0, 1024)
					var late, slow []time.Duration
					defer func() { lats[i*inflight+w], lates[i*inflight+w], slows[i*inflight+w] = ls, late, slow }()
					for !stops[i].Load() {
						k := int(next[i].Add(1) - 1)
						if k >= perDevice {
							return
						}
						t0 := time.Now()
						if interval > 0 {
							// Open loop: latency counts from the scheduled time, so
							// that a slow ack delays the measure, not the schedule.
							t0 = start.Add(offset + time.Duration(int64(k)-k0[i])*interval)
							if d := time.Until(t0); d > 0 {
								time.Sleep(d) // pacing the offered load
								late = append(late, time.Since(t0))
							}
						}
						if !time.Now().Before(deadline) || ctx.Err() != nil {
							return // k is skipped: msg_ids stay unique
						}
						msgID := fmt.Sprintf("%s-%d", c.dev.ID, k)
						buf = payload(buf, k, msgID)
						if g.sent != nil {
							g.mu.Lock()
							g.sent[msgID] = t0
							g.mu.Unlock()
						}
						published.Add(1)
						pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
						resp, err := c.cl.Publish(pctx, &paho.Publish{Topic: topic, QoS: g.spec.QoS, Payload: buf})
						pcancel()
						if err == nil && resp != nil && resp.ReasonCode >= 0x80 {
							err = fmt.Errorf("reason code %#x", resp.ReasonCode)
						}
						if err != nil {
							failed.Add(1)
							first.Do(func() { g.res.FirstError = fmt.Sprintf("publish %s: %v", c.dev.ID, err) })
							stops[i].Store(true)
							return
						}
						now := time.Now()
						ls = append(ls, now.Sub(t0))
						if now.Sub(t0) > slowThreshold {
							slow = append(slow, t0.Sub(start))
						}
						acked.Add(1)
						last.Store(now.UnixNano())
					}
				}()
			}
		}
		wg.Wait()
		return lats, lates, slows, start, last.Load()
	}
	// The generator's own GC would stop its publishers and its PUBACK
	// readers: that pause is not the system under test's, so the
	// publishing phases run with the GC held off, up to a bound of what
	// it holds now and loadHeapHeadroom. Such a GC is cheap since the
	// devices' paho queues are small (a thousand of them made each cost
	// ~0.75 s on 2 cores until their Receive Maximum was set: see dial).
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(ms.Sys-ms.HeapReleased) + loadHeapHeadroom))
	if g.spec.Warmup > 0 {
		// The same schedule for a while before the measured phase: the
		// first messages of a thousand fresh connections (goroutine
		// stacks, buffers, caches on both sides) are a start-up cost,
		// reported apart (Warmup) and not in the steady state's figures.
		lats, _, _, _, _ := phase(g.spec.Warmup)
		var all []time.Duration
		for _, l := range lats {
			all = append(all, l...)
		}
		g.res.Warmup = LatencyOf(all)
		g.res.WarmupAcked = int(acked.Load())
		published.Store(0)
		acked.Store(0)
		if g.sent != nil {
			g.mu.Lock()
			clear(g.sent) // a warm-up event arriving late is not matched
			g.signals = g.signals[:0]
			g.mu.Unlock()
		}
	}
	g.step("connected")
	sched0 := readSched()
	lats, lates, slows, start, lastAck := phase(g.spec.Duration)
	g.res.Start = start.UnixMilli()
	g.res.SchedP99, g.res.SchedMax, g.res.GCCycles = schedSince(sched0, readSched())
	var allLate []time.Duration
	for _, l := range lates {
		allLate = append(allLate, l...)
	}
	g.res.Late = LatencyOf(allLate)
	for _, l := range slows {
		for _, at := range l {
			b := max(int(at/slowBin), 0)
			for len(g.res.Slow) <= b {
				g.res.Slow = append(g.res.Slow, 0)
			}
			g.res.Slow[b]++
		}
	}
	g.res.Published, g.res.Acked, g.res.Errors = int(published.Load()), int(acked.Load()), int(failed.Load())
	if lastAck > 0 {
		g.res.Seconds = time.Unix(0, lastAck).Sub(start).Seconds()
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	g.res.PubAck = LatencyOf(all)
	if sub != nil {
		// Drain: the consumer must get every acknowledged message.
		until := time.Now().Add(10 * time.Second)
		for g.received.Load() < acked.Load()+int64(g.res.WarmupAcked) && time.Now().Before(until) {
			time.Sleep(5 * time.Millisecond) // polling the consumer's count
		}
		g.res.Received = int(g.received.Load())
		if lr := g.lastRecv.Load(); lr > 0 {
			g.res.ReceivedSeconds = time.Unix(0, lr).Sub(start).Seconds()
		}
	}
	fmt.Fprintf(g.log, "bench: published %d acked %d errors %d in %.1fs\n", g.res.Published, g.res.Acked, g.res.Errors, g.res.Seconds)
	g.step("loaded")
	if g.sent != nil {
		until := time.Now().Add(5 * time.Second)
		for time.Now().Before(until) {
			g.mu.Lock()
			n := len(g.signals)
			g.mu.Unlock()
			if n >= g.res.Acked {
				break
			}
			time.Sleep(10 * time.Millisecond) // polling the event stream's count
		}
		cancel()
		bg.Wait()
		g.mu.Lock()
		g.res.Signal = LatencyOf(g.signals)
		g.mu.Unlock()
	}
	return g.res, nil
}

func (g *loadGen) onDataEvent(data []byte, at time.Time) {
	var e struct {
		Args struct {
			MsgID string `json:"msg_id"`
		} `json:"args"`
	}
	if json.Unmarshal(data, &e) != nil || e.Args.MsgID == "" {
		return
	}
	g.mu.Lock()
	if t0, ok := g.sent[e.Args.MsgID]; ok {
		g.signals = append(g.signals, at.Sub(t0))
		delete(g.sent, e.Args.MsgID)
	}
	g.mu.Unlock()
}

// followEvents reads the hub's SSE stream of events of type typ until ctx
// ends, calling fn with each event's JSON and its arrival time. It reports
// on ready once the stream is open (or failed).
func (g *loadGen) followEvents(ctx context.Context, typ string, ready chan<- error, fn func([]byte, time.Time)) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.spec.EventsURL+"?type="+typ, nil)
	if err != nil {
		ready <- err
		return
	}
	req.Header.Set("Authorization", "Bearer "+g.spec.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ready <- err
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		ready <- fmt.Errorf("status %d", resp.StatusCode)
		return
	}
	ready <- nil
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if data, ok := strings.CutPrefix(string(line), "data: "); ok {
			fn([]byte(data), time.Now())
		}
	}
}

func (g *loadGen) connect(ctx context.Context) (*LoadResult, error) {
	ka := g.spec.KeepAlive
	if ka == 0 {
		ka = 10
	}
	var onConnect func(int, *conn)
	var subErrs atomic.Int64
	var firstSub sync.Once
	if g.spec.SubscribeOwn {
		onConnect = func(_ int, c *conn) {
			if err := subscribeOwn(ctx, c); err != nil {
				subErrs.Add(1)
				firstSub.Do(func() {
					if g.res.FirstError == "" {
						g.res.FirstError = err.Error()
					}
				})
			}
		}
	}
	conns := g.connectAll(ctx, ka, onConnect)
	defer disconnectAll(conns)
	if n := int(subErrs.Load()); n > 0 {
		g.res.ConnectErrors += n
		g.res.Connected -= n
	}
	g.step("connected")
	hold := g.spec.Hold
	if hold <= 0 {
		hold = 10 * time.Second
	}
	select {
	case <-time.After(hold): // the idle period being measured
	case <-ctx.Done():
	}
	g.step("held")
	return g.res, nil
}

// subscribeOwn subscribes c's device to its own command and desired
// properties topics, as the Go SDK does after every connect.
func subscribeOwn(ctx context.Context, c *conn) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	prefix := "devices/" + c.dev.ID + "/"
	sa, err := c.cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: prefix + "commands/+", QoS: 1},
		{Topic: prefix + "twin/desired", QoS: 1},
	}})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w (%s)", c.dev.ID, err, socketNote(c.nc))
	}
	for i, rc := range sa.Reasons {
		if rc >= 0x80 {
			return fmt.Errorf("subscribe %s: filter %d refused with reason code %#x", c.dev.ID, i, rc)
		}
	}
	return nil
}

func (g *loadGen) presence(ctx context.Context) (*LoadResult, error) {
	ka := g.spec.KeepAlive
	if ka == 0 {
		ka = 600 // silent devices keep their connection; only heartbeats stop
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bg sync.WaitGroup
	defer bg.Wait()
	defer cancel()

	deadlines := map[string]time.Time{}
	var delays []time.Duration
	var mu sync.Mutex
	if g.spec.EventsURL != "" {
		ready := make(chan error, 1)
		bg.Add(1)
		go func() {
			defer bg.Done()
			g.followEvents(ctx, "device_disconnected", ready, func(data []byte, at time.Time) {
				var e struct {
					DeviceID string `json:"device_id"`
				}
				if json.Unmarshal(data, &e) != nil {
					return
				}
				mu.Lock()
				if d, ok := deadlines[e.DeviceID]; ok {
					delays = append(delays, at.Sub(d))
					delete(deadlines, e.DeviceID)
				}
				mu.Unlock()
			})
		}()
		if err := <-ready; err != nil {
			return g.res, fmt.Errorf("events: %w", err)
		}
	}
	hb := g.spec.Heartbeat
	if hb <= 0 {
		hb = 10 * time.Second
	}
	// Every device starts its heartbeats as soon as it is connected, as a
	// real device does: the hub's deadline runs from the connect, and a
	// connect phase longer than the timeout (10,000 devices on a loaded
	// machine) must not time out devices that never had their turn. The
	// first heartbeat comes within one period of the connect (spread over
	// the period by device), then one every period. Silent devices send
	// that first one only; the others go on until Duration after the last
	// device connected.
	var end atomic.Int64 // unix nanoseconds; 0 until every device connected
	var published, failed atomic.Int64
	var wg sync.WaitGroup
	n := len(g.spec.Devices)
	beat := func(i int, c *conn) {
		silent := i < g.spec.Silent
		connected := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			offset := hb * time.Duration(i) / time.Duration(n)
			topic := "devices/" + c.dev.ID + "/heartbeat"
			for k := 0; ; k++ {
				at := connected.Add(offset + time.Duration(k)*hb)
				if silent && k > 0 {
					return
				}
				if e := end.Load(); e != 0 && at.UnixNano() >= e {
					return
				}
				select {
				case <-time.After(time.Until(at)): // heartbeat schedule
				case <-ctx.Done():
					return
				}
				sent := time.Now()
				pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.cl.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"battery":80}`)})
				pcancel()
				if err != nil {
					failed.Add(1)
					return
				}
				published.Add(1)
				if silent {
					mu.Lock()
					deadlines[c.dev.ID] = sent.Add(g.spec.Timeout)
					mu.Unlock()
				}
			}
		}()
	}
	conns := g.connectAll(ctx, ka, beat)
	defer disconnectAll(conns)
	end.Store(time.Now().Add(g.spec.Duration).UnixNano())
	g.step("connected")
	wg.Wait()
	// Wait (bounded) for the last silent device's deadline and its event.
	until := time.Now().Add(g.spec.Timeout + 5*time.Second)
	for time.Now().Before(until) {
		mu.Lock()
		n := len(delays)
		mu.Unlock()
		if n >= g.spec.Silent {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling the event count
	}
	g.step("loaded")
	g.res.Published, g.res.Errors = int(published.Load()), int(failed.Load())
	mu.Lock()
	g.res.Offline = len(delays)
	g.res.OfflineDelay = LatencyOf(delays)
	mu.Unlock()
	return g.res, nil
}

// RunLoadMain is the load generator process: the spec is read from the
// file at specPath, the result printed as JSON on stdout.
func RunLoadMain(ctx context.Context, specPath string) error {
	b, err := os.ReadFile(specPath)
	if err != nil {
		return fmt.Errorf("read load spec: %w", err)
	}
	var spec LoadSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("decode load spec: %w", err)
	}
	res, err := RunLoad(ctx, spec, os.Stdin, os.Stderr)
	if res != nil {
		enc := json.NewEncoder(os.Stdout)
		if eerr := enc.Encode(res); eerr != nil && err == nil {
			err = eerr
		}
	}
	return err
}
