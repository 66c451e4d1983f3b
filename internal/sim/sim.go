// Package sim runs a fleet of simulated devices, each a real device
// program on the public sdk package with its own local database: they
// provision themselves if needed, send readings that fit their type's
// fields at a steady rate, answer commands, apply desired properties and
// report them back. To test the hub and the SDK under trouble, the
// simulator can drop device connections at random, cut a device's network
// for a while (pause: the device keeps storing readings and catches up),
// and restart devices (close and start again on the same database).
//
// Each device reaches the hub's MQTT listener through its own TCP proxy,
// which is how connections are dropped and paused without help from the
// SDK.
package sim

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/sdk"
)

// ErrBadOptions is returned by New for unusable options.
var ErrBadOptions = errors.New("bad simulation options")

// ErrAllFailed is returned by Run when no device of the fleet could start.
var ErrAllFailed = errors.New("every simulated device failed")

// Field is a reading field of the simulated type.
type Field struct {
	Name     string
	Type     string   // float, int, bool, string (json fields are not sent)
	Min, Max *float64 // bounds of numbers
}

// Faults are the troubles injected into the fleet. Each interval is the
// mean time between two faults of one device (exponentially distributed);
// zero disables the fault.
type Faults struct {
	DropEvery    time.Duration // close the device's connection
	PauseEvery   time.Duration // cut its network for PauseFor
	PauseFor     time.Duration
	RestartEvery time.Duration // close the device and start it again
}

// Provisioner provisions a device through the hub's admin API and returns
// its credentials.
type Provisioner func(ctx context.Context, deviceID, deviceType string) (*sdk.Credentials, error)

// Options configure a simulation.
type Options struct {
	Devices  int
	Rate     float64 // readings per second of each device
	Type     string
	Fields   []Field
	IDPrefix string // device ids are IDPrefix + a number (default "sim-")

	MQTTServer string // mqtt://host:port of the hub (TLS is not proxied)
	Server     string // the hub's HTTP API, for provisioning operations

	// How devices without credentials in their database get some, in this
	// order: Credentials (from a file of `devicehub provision` outputs),
	// Provision (the admin API), ProvisioningToken (the provisioning
	// operation flow; an operator approves each device).
	Credentials       map[string]*sdk.Credentials
	Provision         Provisioner
	ProvisioningToken string

	StateDir    string // one database per device (default ./sim-state)
	Compression sdk.Compression
	Faults      Faults
	Logger      *slog.Logger

	// OnProvisioning is called when a device has asked to join with the
	// provisioning token and waits for an operator, with the verification
	// code the operator compares (`devicehub provisioning list`).
	OnProvisioning func(deviceID string, op sdk.ProvisioningOperation)
	// Firmware, when set, makes the devices take firmware updates (see
	// Firmware).
	Firmware *Firmware
	// OnFailed is called when a device cannot start (its provisioning
	// was rejected or expired, its credentials were refused): that device
	// stops, the rest of the fleet goes on.
	OnFailed func(deviceID string, err error)
}

// Firmware is how simulated devices take firmware updates: they verify
// it with PublicKey, fail the install with probability FailureRate, and
// otherwise restart into the new version (close and start again on the
// same database) and confirm it.
type Firmware struct {
	PublicKey   ed25519.PublicKey
	FailureRate float64 // 0 to 1
	Version     string  // the version devices run at first (default 1.0.0)
}

// Summary is the state of the fleet.
type Summary struct {
	Devices, Running                int
	Failed                          int // devices that could not start (see Options.OnFailed)
	Enqueued, Acked, Rejected, Sent int64
	Pending                         int64
	Reconnects                      int64
	Commands, DesiredUpdates        int64
	FirmwareUpdates, FirmwareFailed int64 // installs done (restarted into) and failed on purpose
	Drops, Pauses, Restarts         int64
	Errors                          int64
}

// Sim is a running (or runnable) simulation.
type Sim struct {
	opts   Options
	target string
	log    *slog.Logger

	mu      sync.Mutex
	devices []*device

	drops, pauses, restarts, commands, desired, errs atomic.Int64
	fwUpdates, fwFailed                              atomic.Int64
	failed                                           atomic.Int64
}

type device struct {
	id    string
	db    string
	proxy *proxy

	mu     sync.Mutex
	client *sdk.Client
	base   sdk.Stats // counters of earlier clients of this device (restarts)

	enqueued atomic.Int64

	fwVersion string      // the firmware the device runs (under mu)
	installed chan string // versions installed: restart into them
}

// New checks the options.
func New(opts Options) (*Sim, error) {
	switch {
	case opts.Devices < 1:
		return nil, fmt.Errorf("%w: devices must be at least 1", ErrBadOptions)
	case opts.Rate <= 0:
		return nil, fmt.Errorf("%w: rate must be above 0", ErrBadOptions)
	case opts.Type == "":
		return nil, fmt.Errorf("%w: a device type is required", ErrBadOptions)
	}
	u, err := url.Parse(opts.MQTTServer)
	if err != nil || (u.Scheme != "mqtt" && u.Scheme != "tcp") || u.Host == "" {
		return nil, fmt.Errorf("%w: MQTT server %q: want mqtt://host:port", ErrBadOptions, opts.MQTTServer)
	}
	if opts.IDPrefix == "" {
		opts.IDPrefix = "sim-"
	}
	if opts.StateDir == "" {
		opts.StateDir = "sim-state"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Faults.PauseEvery > 0 && opts.Faults.PauseFor <= 0 {
		opts.Faults.PauseFor = 10 * time.Second
	}
	return &Sim{opts: opts, target: u.Host, log: opts.Logger}, nil
}

// Run starts the devices and runs them until ctx is done, then closes
// them (what they did not send stays in their databases).
func (s *Sim) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.opts.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	width := len(fmt.Sprint(s.opts.Devices - 1))
	g, gctx := errgroup.WithContext(ctx)
	starting := make(chan struct{}, 16) // devices starting at once
	for i := range s.opts.Devices {
		id := fmt.Sprintf("%s%0*d", s.opts.IDPrefix, width, i)
		p, err := newProxy(s.target)
		if err != nil {
			return fmt.Errorf("proxy for %s: %w", id, err)
		}
		d := &device{id: id, db: filepath.Join(s.opts.StateDir, id+".db"), proxy: p, installed: make(chan string, 1), fwVersion: "1.0.0"}
		if fw := s.opts.Firmware; fw != nil && fw.Version != "" {
			d.fwVersion = fw.Version
		}
		s.mu.Lock()
		s.devices = append(s.devices, d)
		s.mu.Unlock()
		g.Go(func() error {
			p.run(gctx)
			return nil
		})
		g.Go(func() error { return s.runDevice(gctx, d, starting) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	if err == nil && ctx.Err() == nil && s.failed.Load() == int64(s.opts.Devices) {
		return fmt.Errorf("%w: none of the %d devices could start", ErrAllFailed, s.opts.Devices)
	}
	return err
}

// fail reports a device that could not start; the others go on.
func (s *Sim) fail(d *device, err error) {
	s.failed.Add(1)
	s.log.Warn("device stopped: it could not start", "device_id", d.id, "err", err)
	if s.opts.OnFailed != nil {
		s.opts.OnFailed(d.id, err)
	}
}

// runDevice runs one device: start, send at the rate, inject faults.
func (s *Sim) runDevice(ctx context.Context, d *device, starting chan struct{}) error {
	select {
	case starting <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	c, err := s.start(ctx, d)
	<-starting
	if err != nil {
		if ctx.Err() == nil {
			s.fail(d, err)
		}
		return nil
	}
	d.set(c)
	defer func() { d.close() }()

	period := time.Duration(float64(time.Second) / s.opts.Rate)
	// A random phase, so that the fleet does not send in lockstep.
	tick := time.NewTimer(time.Duration(rand.Int64N(int64(period) + 1)))
	defer tick.Stop()
	faults := s.opts.Faults
	drop, pause, restart := faultTimer(faults.DropEvery), faultTimer(faults.PauseEvery), faultTimer(faults.RestartEvery)
	defer drop.Stop()
	defer pause.Stop()
	defer restart.Stop()
	gen := newGenerator(s.opts.Fields)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			tick.Reset(period)
			c := d.get()
			if c == nil {
				continue
			}
			if _, err := c.StreamSender("", sdk.WithCompression(s.opts.Compression)).Enqueue(gen.next()); err != nil {
				s.errs.Add(1)
				s.log.Warn("enqueue", "device_id", d.id, "err", err)
				if sdk.KindOf(err) == sdk.KindCredentialsRevoked {
					return nil
				}
				continue
			}
			d.enqueued.Add(1)
		case <-drop.C:
			drop.Reset(nextFault(faults.DropEvery))
			s.drops.Add(1)
			d.proxy.drop()
		case <-pause.C:
			pause.Reset(nextFault(faults.PauseEvery))
			s.pauses.Add(1)
			d.proxy.pause(faults.PauseFor)
		case v := <-d.installed:
			// Restart into the installed firmware.
			s.fwUpdates.Add(1)
			d.close()
			d.mu.Lock()
			d.fwVersion = v
			d.mu.Unlock()
			c, err := s.start(ctx, d)
			if err != nil {
				if ctx.Err() == nil {
					s.fail(d, fmt.Errorf("restart after a firmware install: %w", err))
				}
				return nil
			}
			d.set(c)
		case <-restart.C:
			restart.Reset(nextFault(faults.RestartEvery))
			s.restarts.Add(1)
			d.close()
			c, err := s.start(ctx, d)
			if err != nil {
				if ctx.Err() == nil {
					s.fail(d, fmt.Errorf("restart: %w", err))
				}
				return nil
			}
			d.set(c)
		}
	}
}

// faultTimer returns a timer for a fault of mean interval every, one that
// never fires when every is 0.
func faultTimer(every time.Duration) *time.Timer {
	if every <= 0 {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	return time.NewTimer(nextFault(every))
}

// nextFault draws the wait until the next fault: exponential, mean every.
func nextFault(every time.Duration) time.Duration {
	return time.Duration(rand.ExpFloat64() * float64(every))
}

// start starts the device's client, provisioning it if its database has
// no credentials.
func (s *Sim) start(ctx context.Context, d *device) (*sdk.Client, error) {
	o := sdk.Options{
		DeviceID:   d.id,
		DB:         d.db,
		Server:     s.opts.Server,
		MQTTServer: "mqtt://" + d.proxy.addr(),
		Logger:     s.log.With("device_id", d.id),
		MinBackoff: 200 * time.Millisecond,
		MaxBackoff: 10 * time.Second,
		OnProvisioning: func(op sdk.ProvisioningOperation) {
			s.log.Info("device waits for approval", "device_id", d.id, "operation", op.ID, "verification_code", op.VerificationCode)
			if s.opts.OnProvisioning != nil {
				s.opts.OnProvisioning(d.id, op)
			}
		},
		OnCommand: func(cmd sdk.Command) sdk.Result {
			s.commands.Add(1)
			return sdk.Result{Status: "succeeded", Result: map[string]any{"command": cmd.Name, "simulated": true}}
		},
		OnError: func(err error) {
			s.errs.Add(1)
		},
	}
	o.OnDesiredProperties = func(p sdk.DesiredProperties) {
		s.desired.Add(1)
		// Apply, then report what was applied. The client may not be
		// set yet on the first call: report from the store's next start.
		if c := d.get(); c != nil {
			_ = c.UpdateReportedProperties(map[string]any{"applied_version": p.Version, "values": p.Values})
		}
	}
	if fw := s.opts.Firmware; fw != nil {
		d.mu.Lock()
		o.FirmwareVersion = d.fwVersion
		d.mu.Unlock()
		o.FirmwarePublicKey = fw.PublicKey
		o.OnFirmware = func(u sdk.Update) error {
			if rand.Float64() < fw.FailureRate {
				s.fwFailed.Add(1)
				return errors.New("simulated install failure")
			}
			select {
			case d.installed <- u.Version:
			default:
			}
			return nil
		}
	}
	if cr := s.opts.Credentials[d.id]; cr != nil {
		o.Credentials = cr
		return sdk.Start(ctx, o)
	}
	o.ProvisioningToken = s.opts.ProvisioningToken
	c, err := sdk.Start(ctx, o)
	if err == nil || sdk.KindOf(err) != sdk.KindInvalidOptions || s.opts.Provision == nil {
		return c, err
	}
	// No credentials stored and no provisioning token: the admin API.
	cr, perr := s.opts.Provision(ctx, d.id, s.opts.Type)
	if perr != nil {
		return nil, fmt.Errorf("provision: %w", perr)
	}
	o.Credentials = cr
	return sdk.Start(ctx, o)
}

func (d *device) get() *sdk.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

func (d *device) set(c *sdk.Client) {
	d.mu.Lock()
	d.client = c
	d.mu.Unlock()
}

// close closes the device's client, keeping its counters.
func (d *device) close() {
	d.mu.Lock()
	c := d.client
	d.client = nil
	if c != nil {
		st := c.Stats()
		d.base.Sent += st.Sent
		d.base.Acked += st.Acked
		d.base.Rejected += st.Rejected
		d.base.Reconnects += st.Reconnects + 1 // a restart reconnects too
	}
	d.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Summary returns the fleet's counters.
func (s *Sim) Summary() Summary {
	s.mu.Lock()
	devs := append([]*device(nil), s.devices...)
	s.mu.Unlock()
	sum := Summary{
		Devices: s.opts.Devices, Drops: s.drops.Load(), Pauses: s.pauses.Load(), Restarts: s.restarts.Load(),
		Commands: s.commands.Load(), DesiredUpdates: s.desired.Load(), Errors: s.errs.Load(),
		FirmwareUpdates: s.fwUpdates.Load(), FirmwareFailed: s.fwFailed.Load(),
		Failed: int(s.failed.Load()),
	}
	for _, d := range devs {
		d.mu.Lock()
		st := d.base
		if d.client != nil {
			cur := d.client.Stats()
			st.Sent += cur.Sent
			st.Acked += cur.Acked
			st.Rejected += cur.Rejected
			st.Reconnects += cur.Reconnects
			st.Pending = cur.Pending
			sum.Running++
		}
		d.mu.Unlock()
		sum.Enqueued += d.enqueued.Load()
		sum.Sent += st.Sent
		sum.Acked += st.Acked
		sum.Rejected += st.Rejected
		sum.Reconnects += st.Reconnects
		sum.Pending += st.Pending
	}
	return sum
}

// generator makes readings that fit the type's fields: numbers walk at
// random within their bounds.
type generator struct {
	fields []Field
	state  map[string]float64
}

func newGenerator(fields []Field) *generator {
	fs := append([]Field(nil), fields...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	g := &generator{fields: fs, state: map[string]float64{}}
	for _, f := range fs {
		lo, hi := bounds(f)
		g.state[f.Name] = lo + rand.Float64()*(hi-lo)
	}
	return g
}

func bounds(f Field) (float64, float64) {
	lo, hi := 0.0, 100.0
	if f.Min != nil {
		lo = *f.Min
	}
	if f.Max != nil {
		hi = *f.Max
	}
	if f.Min != nil && f.Max == nil {
		hi = lo + 100
	}
	if f.Max != nil && f.Min == nil {
		lo = hi - 100
	}
	return lo, hi
}

func (g *generator) next() []byte {
	b := []byte{'{'}
	n := 0
	for _, f := range g.fields {
		var v string
		lo, hi := bounds(f)
		x := g.state[f.Name] + (rand.Float64()-0.5)*(hi-lo)/20
		x = math.Max(lo, math.Min(hi, x))
		g.state[f.Name] = x
		switch f.Type {
		case "float":
			v = fmt.Sprintf("%.2f", x)
		case "int":
			v = fmt.Sprint(int64(math.Max(math.Ceil(lo), math.Min(math.Floor(hi), math.Round(x)))))
		case "bool":
			v = fmt.Sprint(rand.IntN(2) == 1)
		case "string":
			v = `"ok"`
		default:
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "%q:%s", f.Name, v)
		n++
	}
	if n == 0 {
		b = append(b, `"value":`...)
		b = fmt.Appendf(b, "%.2f", rand.Float64()*100)
	}
	return append(b, '}')
}
