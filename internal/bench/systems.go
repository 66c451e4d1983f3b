package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/internal/store/sqlite"
)

// Systems compared.
const (
	SysDevicehub = "devicehub"
	SysMosquitto = "mosquitto"
	SysMochi     = "mochi"
	SysMachine   = "machine" // the limits scenario
)

// sut is a running system under test.
type sut struct {
	system string
	p      *proc
	mqtt   string
	http   string // devicehub's API
	stats  string // mochi's stats endpoint
	dir    string // devicehub's data directory
	token  string
}

var (
	servingRE = regexp.MustCompile(`devicehub serving.*mqtt=(\S+) http=(\S+)`)
	mochiRE   = regexp.MustCompile(`mochi serving mqtt=(\S+) stats=(\S+)`)
)

// benchType is the declared type of the bench's devices; the payload of
// the load generator fits it.
func benchType(heartbeat time.Duration) string {
	return fmt.Sprintf(`device_types:
  BenchSensor:
    heartbeat_interval: %s
    fields:
      temperature: {type: float}
      humidity: {type: float}
      pressure: {type: float}
      battery: {type: int}
`, heartbeat)
}

// writeDevicehubConfig writes the configuration of a bench hub in dir.
// Its MQTT connection cap is what the open-file limit lets the load
// generators open (fileLimitConns), not the hub's default of three
// quarters of that limit, which would refuse a quarter of the connections
// scenario's devices at the limit and measure memory over the rest.
func writeDevicehubConfig(dir string, heartbeat time.Duration) (string, error) {
	cfg := fmt.Sprintf(`data_dir: %s
mqtt: {addr: "127.0.0.1:0", max_connections: %d}
http: {addr: "127.0.0.1:0"}
ingest: {rate_limit: {rate: 0, burst: 0}}
%s`, dir, fileLimitConns(), benchType(heartbeat))
	path := filepath.Join(dir, "devicehub.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return path, nil
}

// allocsPath is where a hub run with the CPU profile cpu writes its
// allocation profile: beside it, .allocs.pprof for .cpu.pprof.
func allocsPath(cpu string) string {
	return strings.TrimSuffix(cpu, ".cpu.pprof") + ".allocs.pprof"
}

// profiling is what a bench's devicehub process records of itself, from
// its start to its stop: nothing (the zero value: `devicehub serve`), or,
// under `devicehub bench profiled-serve`, a CPU profile at cpu, its
// allocation profile beside it (allocsPath) and, with trace set, an
// execution trace (runtime/trace) there.
type profiling struct {
	cpu   string
	trace string // only with cpu
}

// startDevicehub runs `devicehub serve` on dir (which holds a config made
// by writeDevicehubConfig), or `devicehub bench profiled-serve` with the
// profiles of prof.
func (r *runner) startDevicehub(ctx context.Context, dir string, prof profiling) (*sut, error) {
	args := []string{"serve", "--config", filepath.Join(dir, "devicehub.yaml")}
	if prof.cpu != "" {
		args = []string{"bench", ProfiledServeCmd, "--cpuprofile", prof.cpu, "--allocprofile", allocsPath(prof.cpu), "--config", filepath.Join(dir, "devicehub.yaml")}
		if prof.trace != "" {
			args = append(args, "--trace", prof.trace)
		}
	}
	p, err := startProc("devicehub", r.o.Exe, args, append(slices.Clip(r.o.Env), r.o.HubEnv...), r.procLog("devicehub"))
	if err != nil {
		return nil, err
	}
	m, err := p.waitFor(ctx, servingRE, 60*time.Second)
	if err != nil {
		_ = p.stop(5 * time.Second)
		return nil, err
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		_ = p.stop(5 * time.Second)
		return nil, fmt.Errorf("admin token: %w", err)
	}
	return &sut{system: SysDevicehub, p: p, mqtt: m[1], http: m[2], dir: dir, token: strings.TrimSpace(string(tok))}, nil
}

// provision creates n devices BenchSensor over the REST API.
func (s *sut) provision(ctx context.Context, prefix string, n int) ([]Device, error) {
	devs := make([]Device, n)
	var eg errgroup.Group
	eg.SetLimit(16)
	for i := range n {
		eg.Go(func() error {
			id := fmt.Sprintf("%s%05d", prefix, i)
			body := fmt.Sprintf(`{"id":%q,"type":"BenchSensor"}`, id)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.http+"/api/v1/devices", strings.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+s.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("provision %s: %w", id, err)
			}
			defer resp.Body.Close()
			var out struct {
				Credentials struct {
					MQTTUsername string `json:"mqtt_username"`
					MQTTPassword string `json:"mqtt_password"`
				} `json:"credentials"`
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusCreated {
				return fmt.Errorf("provision %s: status %d: %s", id, resp.StatusCode, b)
			}
			if err := json.Unmarshal(b, &out); err != nil {
				return fmt.Errorf("provision %s: %w", id, err)
			}
			devs[i] = Device{ID: id, User: out.Credentials.MQTTUsername, Pass: out.Credentials.MQTTPassword}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	return devs, nil
}

// stopAndCount stops the hub and counts the readings in its store.
func (s *sut) stopAndCount(ctx context.Context) (int64, error) {
	if err := s.p.stop(60 * time.Second); err != nil {
		return 0, fmt.Errorf("stop devicehub: %w", err)
	}
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(s.dir, "devicehub.db")})
	if err != nil {
		return 0, fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	n, err := st.CountReadings(ctx, "")
	if err != nil {
		return 0, fmt.Errorf("count readings: %w", err)
	}
	return n, nil
}

// seed is a provisioned data directory copied for every devicehub run,
// so that every run starts from a fresh data directory without paying
// for provisioning again.
type seed struct {
	dir  string
	devs []Device
}

// seedDevicehub provisions n devices in a new data directory.
func (r *runner) seedDevicehub(ctx context.Context, n int) (*seed, error) {
	if s, ok := r.seeds[n]; ok {
		return s, nil
	}
	dir, err := os.MkdirTemp(r.work, "seed-")
	if err != nil {
		return nil, err
	}
	if _, err := writeDevicehubConfig(dir, time.Minute); err != nil {
		return nil, err
	}
	s, err := r.startDevicehub(ctx, dir, profiling{})
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	devs, err := s.provision(ctx, "dev", n)
	if err != nil {
		_ = s.p.stop(10 * time.Second)
		return nil, err
	}
	r.logf("provisioned %d devices in %.1fs", n, time.Since(t0).Seconds())
	if err := s.p.stop(60 * time.Second); err != nil {
		return nil, fmt.Errorf("stop seed hub: %w", err)
	}
	sd := &seed{dir: dir, devs: devs}
	r.seeds[n] = sd
	return sd, nil
}

// freshDevicehub copies the seed into a new data directory and starts a hub.
func (r *runner) freshDevicehub(ctx context.Context, sd *seed, heartbeat time.Duration, prof profiling) (*sut, error) {
	dir, err := os.MkdirTemp(r.work, "run-")
	if err != nil {
		return nil, err
	}
	if err := copyFiles(sd.dir, dir, dataFiles); err != nil {
		return nil, fmt.Errorf("copy seed: %w", err)
	}
	if _, err := writeDevicehubConfig(dir, heartbeat); err != nil {
		return nil, err
	}
	return r.startDevicehub(ctx, dir, prof)
}

// freePort returns a TCP port free on 127.0.0.1 right now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// mosquittoConfig is the reference's configuration: no persistence, no
// limit on queued messages (so it never drops one silently), a large
// inflight window and no connection limit.
func mosquittoConfig(port int) string {
	return fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
max_connections -1
memory_limit 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
`, port)
}

// startMosquitto runs the mosquitto binary on a random port.
func (r *runner) startMosquitto(ctx context.Context) (*sut, error) {
	dir, err := os.MkdirTemp(r.work, "mosquitto-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(mosquittoConfig(port)), 0o600); err != nil {
		return nil, err
	}
	p, err := startProc("mosquitto", r.mosquitto, []string{"-c", conf}, nil, "")
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("mosquitto exited: %v:\n%s", p.exitErr(), p.tail(10))
		default:
		}
		if time.Now().After(deadline) {
			_ = p.stop(5 * time.Second)
			return nil, fmt.Errorf("mosquitto not listening on %s after 10s", addr)
		}
		time.Sleep(20 * time.Millisecond) // polling the listener
	}
	return &sut{system: SysMosquitto, p: p, mqtt: addr, dir: dir}, nil
}

// startMochi runs the mochi-alone reference as a child process.
func (r *runner) startMochi(ctx context.Context) (*sut, error) {
	p, err := startProc("mochi", r.o.Exe, []string{"bench", MochiCmd, "--addr", "127.0.0.1:0"}, r.o.Env, "")
	if err != nil {
		return nil, err
	}
	m, err := p.waitFor(ctx, mochiRE, 30*time.Second)
	if err != nil {
		_ = p.stop(5 * time.Second)
		return nil, err
	}
	return &sut{system: SysMochi, p: p, mqtt: m[1], stats: m[2]}, nil
}

// mochiStats reads the mochi-alone reference's counters.
func (s *sut) mochiStats(ctx context.Context) (MochiStats, error) {
	var st MochiStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.stats+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("mochi stats: %w", err)
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// loadProcs is a set of load generator processes run together.
type loadProcs struct {
	ps []*proc
}

// startLoad starts one load generator process per spec.
func (r *runner) startLoad(specs []LoadSpec) (*loadProcs, error) {
	lp := &loadProcs{}
	for i, spec := range specs {
		spec.Steps = true
		b, err := json.Marshal(spec)
		if err != nil {
			return nil, err
		}
		f, err := os.CreateTemp(r.work, "load-*.json")
		if err != nil {
			return nil, err
		}
		_, werr := f.Write(b)
		if err := f.Close(); werr != nil || err != nil {
			return nil, fmt.Errorf("write load spec: %v %v", werr, err)
		}
		p, err := startProc(fmt.Sprintf("load-generator-%d", i), r.o.Exe, []string{"bench", LoadCmd, "--spec", f.Name()}, r.o.Env, "")
		if err != nil {
			lp.kill()
			return nil, err
		}
		lp.ps = append(lp.ps, p)
	}
	return lp, nil
}

// step waits until every generator reached step name, calls before (if
// not nil), then lets them go.
func (lp *loadProcs) step(ctx context.Context, name string, timeout time.Duration, before func()) error {
	re := regexp.MustCompile(`^bench-step ` + regexp.QuoteMeta(name) + `$`)
	var eg errgroup.Group
	for _, p := range lp.ps {
		eg.Go(func() error {
			_, err := p.waitFor(ctx, re, timeout)
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	if before != nil {
		before()
	}
	for _, p := range lp.ps {
		p.proceed()
	}
	return nil
}

// results waits for every generator and decodes their results.
func (lp *loadProcs) results(timeout time.Duration) ([]*LoadResult, error) {
	out := make([]*LoadResult, len(lp.ps))
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for i, p := range lp.ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.wait(timeout)
			var res LoadResult
			if derr := json.NewDecoder(bytes.NewReader(p.out.Bytes())).Decode(&res); derr == nil {
				out[i] = &res
			} else if err == nil {
				err = fmt.Errorf("%s: decode result: %w", p.name, derr)
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w\n%s", p.name, err, p.tail(10))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, r := range out {
		if r == nil && firstErr == nil {
			firstErr = fmt.Errorf("a load generator printed no result")
		}
	}
	return out, firstErr
}

func (lp *loadProcs) kill() {
	for _, p := range lp.ps {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// mosquittoVersion returns the first line of `mosquitto -h`.
func mosquittoVersion(path string) string {
	out, _ := exec.Command(path, "-h").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
