package sdk_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/sdk"
)

// fwHub is a hub whose rollout scheduler works in tens of milliseconds.
func fwHub(t *testing.T, dir, mqttAddr, httpAddr string) *testHub {
	return startHubWith(t, dir, mqttAddr, func(c *config.Config) {
		c.Firmware.Tick = 20 * time.Millisecond
		c.Firmware.ConnectDelay = 50 * time.Millisecond
		c.Firmware.NoticeResend = 500 * time.Millisecond
		if httpAddr != "" {
			c.HTTP.Addr = httpAddr
		}
	})
}

// fwDevice is an SDK device that installs firmware and "restarts" into it
// (Close, then Start on the same database) unless told otherwise.
type fwDevice struct {
	t       *testing.T
	th      *testHub
	creds   *sdk.Credentials
	db      string
	key     ed25519.PublicKey
	version string
	// failInstall makes OnFirmware fail; noRestart never restarts after
	// an install (a device that does not come back); confirm, if set, is
	// the confirmation after the restart; transport, if set, carries the
	// downloads.
	failInstall bool
	noRestart   bool
	confirm     func(ctx context.Context, u sdk.Update) error
	window      time.Duration
	transport   http.RoundTripper
	rolledBack  atomic.Bool

	mu        sync.Mutex
	c         *sdk.Client
	installed chan sdk.Update
	done      chan struct{}
}

func newFWDevice(t *testing.T, th *testHub, id string, key ed25519.PublicKey) *fwDevice {
	return &fwDevice{t: t, th: th, creds: provision(t, th.api, id), db: filepath.Join(t.TempDir(), id+".db"), key: key, version: "1.0.0",
		installed: make(chan sdk.Update, 1), done: make(chan struct{})}
}

func (d *fwDevice) start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := sdk.Options{DB: d.db, Credentials: d.creds, Server: "http://" + d.th.HTTPAddr(), MQTTServer: "mqtt://" + d.th.MQTTAddr(),
		FirmwarePublicKey: d.key, FirmwareVersion: d.version, FirmwareConfirmWindow: d.window,
		OnFirmware: func(u sdk.Update) error {
			if d.failInstall {
				return errors.New("flash write failed")
			}
			if _, err := os.Stat(u.Path); err != nil {
				return err
			}
			d.installed <- u
			return nil
		},
		OnFirmwareConfirm:  d.confirm,
		OnFirmwareRollback: func(sdk.Update, error) { d.rolledBack.Store(true) },
	}
	if d.transport != nil {
		o.HTTPClient = &http.Client{Transport: d.transport}
	}
	d.c = startClient(d.t, o)
}

// run starts the device and restarts it after each install.
func (d *fwDevice) run() {
	d.start()
	go func() {
		defer close(d.done)
		for u := range d.installed {
			if d.noRestart {
				// It reports rebooting, then never comes back.
				wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				d.c.WaitSent(wctx)
				cancel()
				d.mu.Lock()
				d.c.Close()
				d.mu.Unlock()
				continue
			}
			d.mu.Lock()
			d.c.Close()
			d.version = u.Version
			d.mu.Unlock()
			d.start()
		}
	}()
	d.t.Cleanup(func() {
		close(d.installed)
		<-d.done
		d.mu.Lock()
		d.c.Close()
		d.mu.Unlock()
	})
}

// hubKey returns the hub's public firmware key.
func hubKey(t *testing.T, api *client.Client) ed25519.PublicKey {
	t.Helper()
	s, err := api.FirmwareKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	k, err := sdk.ParseFirmwarePublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func uploadFW(t *testing.T, api *client.Client, size int, version string) *client.Artifact {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	a, err := api.UploadArtifact(context.Background(), bytes.NewReader(b), client.UploadArtifact{Version: version, Type: "Meter", Filename: "meter.bin"})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if a.Size != int64(size) || a.SHA256 != fmt.Sprintf("%x", sum) || a.SignedBy != "hub" {
		t.Fatalf("artifact %+v", a)
	}
	return a
}

func waitRollout(t *testing.T, api *client.Client, id string, d time.Duration, cond func(*client.Rollout) bool) *client.Rollout {
	t.Helper()
	var last *client.Rollout
	eventually.CheckFor(t, d, 20*time.Millisecond, func() error {
		r, err := api.GetRollout(context.Background(), id)
		if err != nil {
			return err
		}
		last = r
		if !cond(r) {
			return fmt.Errorf("rollout %s is %s with %v", id, r.Status, r.Counts)
		}
		return nil
	})
	return last
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i)
	}
	return out
}

// A rollout to 50 devices in three phases completes; each phase starts
// only when the previous one finished; every device ends on the new
// version, with its states in the history.
func TestFirmwareRolloutPhases(t *testing.T) {
	th := fwHub(t, "", "", "")
	key := hubKey(t, th.api)
	art := uploadFW(t, th.api, 64<<10, "2.0.0")
	devs := ids("ph", 50)
	for _, id := range devs {
		newFWDevice(t, th, id, key).run()
	}
	ctx := context.Background()
	r, err := th.api.StartRollout(ctx, client.RolloutRequest{ArtifactID: art.ID, DeviceIDs: devs, Phases: []int{10, 50, 100},
		StepTimeout: "30s", TotalTimeout: "60s", HealthWindow: "30s", Settle: "100ms"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Total != 50 || r.Status != "running" {
		t.Fatalf("started %+v", r)
	}
	r = waitRollout(t, th.api, r.ID, 120*time.Second, func(r *client.Rollout) bool { return r.Status != "running" })
	if r.Status != "completed" || r.Counts["updated"] != 50 {
		t.Fatalf("rollout ended %s (%s) with %v", r.Status, r.Reason, r.Counts)
	}
	us, err := th.api.RolloutDevices(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Phases: every device of a phase started after every device of the
	// phases before it finished.
	lastDone := map[int]time.Time{}
	for _, u := range us {
		if u.StateSince.After(lastDone[u.Phase]) {
			lastDone[u.Phase] = u.StateSince
		}
	}
	counts := map[int]int{}
	for _, u := range us {
		counts[u.Phase]++
		for p := 0; p < u.Phase; p++ {
			if u.StartedAt == nil || u.StartedAt.Before(lastDone[p]) {
				t.Fatalf("%s of phase %d started at %v, before phase %d ended at %v", u.DeviceID, u.Phase, u.StartedAt, p, lastDone[p])
			}
		}
	}
	if counts[0] != 5 || counts[1] != 20 || counts[2] != 25 {
		t.Fatalf("phase sizes %v, want 5, 20, 25", counts)
	}
	d, err := th.api.GetDevice(ctx, "ph07")
	if err != nil || d.FirmwareVersion != "2.0.0" {
		t.Fatalf("device record: %+v, %v", d, err)
	}
	h, err := th.api.FirmwareHistory(ctx, "ph07", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, e := range h {
		if len(states) == 0 || states[len(states)-1] != e.State {
			states = append(states, e.State)
		}
	}
	want := "notified downloading downloaded verifying installing rebooting confirming updated"
	if strings.Join(states, " ") != want {
		t.Fatalf("history states %v, want %s", states, want)
	}
	// The artifact is free again once the rollout completed.
	if err := th.api.DeleteArtifact(ctx, art.ID); err != nil {
		t.Fatalf("delete after completion: %v", err)
	}
}

// With 30% of the devices failing, the abort rule stops the rollout after
// its minimum: the second phase is never started.
func TestFirmwareRolloutAborts(t *testing.T) {
	th := fwHub(t, "", "", "")
	key := hubKey(t, th.api)
	art := uploadFW(t, th.api, 8<<10, "2.0.0")
	devs := ids("ab", 20)
	for i, id := range devs {
		d := newFWDevice(t, th, id, key)
		d.failInstall = i%10 < 3
		d.run()
	}
	ctx := context.Background()
	r, err := th.api.StartRollout(ctx, client.RolloutRequest{ArtifactID: art.ID, DeviceIDs: devs, Phases: []int{25, 100},
		AbortFailurePercent: 20, AbortMinDevices: 5, Settle: "50ms"})
	if err != nil {
		t.Fatal(err)
	}
	if err := th.api.DeleteArtifact(ctx, art.ID); !isCode(err, "artifact_in_use") {
		t.Fatalf("delete of an artifact in use: %v", err)
	}
	r = waitRollout(t, th.api, r.ID, 60*time.Second, func(r *client.Rollout) bool { return r.Status != "running" && r.Finished() >= 5 })
	if r.Status != "aborted" || r.Counts["failed"] != 3 || r.Counts["updated"] != 2 || r.Counts["queued"] != 15 {
		t.Fatalf("rollout %s (%s) with %v; want aborted with 3 failed, 2 updated, 15 queued", r.Status, r.Reason, r.Counts)
	}
	h, err := th.api.FirmwareHistory(ctx, "ab00", r.ID)
	if err != nil || len(h) == 0 || h[len(h)-1].State != "failed" || !strings.Contains(h[len(h)-1].Message, "flash write failed") {
		t.Fatalf("history of a failing device: %+v, %v", h, err)
	}
	r, err = th.api.RolloutAction(ctx, r.ID, "cancel")
	if err != nil || r.Status != "canceled" || r.Counts["canceled"] != 15 {
		t.Fatalf("cancel: %+v, %v", r, err)
	}
	if _, err := th.api.RolloutAction(ctx, r.ID, "resume"); !isCode(err, "conflict") {
		t.Fatalf("resume of a canceled rollout: %v", err)
	}
}

func isCode(err error, code string) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Code == code
}

// cutTransport stops every download after limit bytes until its request
// ends (the device is killed mid-download), and records Range headers.
type cutTransport struct {
	limit  int64
	cut    chan struct{}
	once   sync.Once
	ranges chan string
}

func (c *cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.ranges != nil {
		select {
		case c.ranges <- req.Header.Get("Range"):
		default:
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || c.limit == 0 {
		return resp, err
	}
	resp.Body = &cutBody{ReadCloser: resp.Body, left: c.limit, ctx: req.Context(), t: c}
	return resp, nil
}

type cutBody struct {
	io.ReadCloser
	left int64
	ctx  context.Context
	t    *cutTransport
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.t.once.Do(func() { close(b.t.cut) })
		<-b.ctx.Done()
		return 0, b.ctx.Err()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// A device killed in the middle of a download resumes it with a Range
// request after its restart, and completes the update.
func TestFirmwareDownloadResumes(t *testing.T) {
	th := fwHub(t, "", "", "")
	key := hubKey(t, th.api)
	art := uploadFW(t, th.api, 2<<20, "2.0.0")
	d := newFWDevice(t, th, "res1", key)
	cut := &cutTransport{limit: 700 << 10, cut: make(chan struct{})}
	d.transport = cut
	d.run()
	ctx := context.Background()
	r, err := th.api.StartRollout(ctx, client.RolloutRequest{ArtifactID: art.ID, DeviceIDs: []string{"res1"}, Settle: "50ms"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-cut.cut:
	case <-time.After(30 * time.Second):
		t.Fatal("download never reached the cut")
	}
	// Kill the device and start it again on its database.
	rec := &cutTransport{ranges: make(chan string, 4)}
	d.mu.Lock()
	d.c.Close()
	d.transport = rec
	d.mu.Unlock()
	d.start()
	select {
	case rg := <-rec.ranges:
		if rg != fmt.Sprintf("bytes=%d-", 700<<10) {
			t.Fatalf("resumed with Range %q, want bytes=%d-", rg, 700<<10)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no download after the restart")
	}
	r = waitRollout(t, th.api, r.ID, 60*time.Second, func(r *client.Rollout) bool { return r.Status != "running" })
	if r.Status != "completed" || r.Counts["updated"] != 1 {
		t.Fatalf("rollout %s (%s) %v", r.Status, r.Reason, r.Counts)
	}
}

// A device that never reports times out; a device whose key does not
// verify the signature refuses the firmware and reports it; a device that
// installs and never comes back, and one that comes back and never
// confirms, fail the health gate (the second also rolls back).
func TestFirmwareFailures(t *testing.T) {
	th := fwHub(t, "", "", "")
	key := hubKey(t, th.api)
	art := uploadFW(t, th.api, 16<<10, "2.0.0")
	provision(t, th.api, "silent") // never connects
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	newFWDevice(t, th, "badkey", otherPub).run()
	gone := newFWDevice(t, th, "gone", key)
	gone.noRestart = true
	gone.run()
	stuck := newFWDevice(t, th, "stuck", key)
	stuck.window = 300 * time.Millisecond
	stuck.confirm = func(ctx context.Context, _ sdk.Update) error { <-ctx.Done(); return ctx.Err() }
	stuck.run()

	ctx := context.Background()
	r, err := th.api.StartRollout(ctx, client.RolloutRequest{ArtifactID: art.ID, DeviceIDs: []string{"silent", "badkey", "gone", "stuck"},
		StepTimeout: "1s", TotalTimeout: "30s", HealthWindow: "2s", Settle: "50ms"})
	if err != nil {
		t.Fatal(err)
	}
	r = waitRollout(t, th.api, r.ID, 60*time.Second, func(r *client.Rollout) bool { return r.Status != "running" })
	if r.Status != "completed" {
		t.Fatalf("rollout %s (%s) %v", r.Status, r.Reason, r.Counts)
	}
	us, err := th.api.RolloutDevices(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ state, msg string }{
		"silent": {"timed_out", "step timeout"},
		"badkey": {"failed", "bad signature"},
		"gone":   {"failed", "health gate"},
		"stuck":  {"failed", "not confirmed"},
	}
	for _, u := range us {
		w := want[u.DeviceID]
		if u.State != w.state || !strings.Contains(u.Message, w.msg) {
			t.Errorf("%s: %s %q; want %s with %q", u.DeviceID, u.State, u.Message, w.state, w.msg)
		}
	}
	if !stuck.rolledBack.Load() {
		t.Error("the unconfirmed device was not told to roll back")
	}

	// A vendor signature that does not verify is refused at upload.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sig := ed25519.Sign(priv, make([]byte, 32))
	_, err = th.api.UploadArtifact(ctx, strings.NewReader("firmware"), client.UploadArtifact{Version: "3", Type: "Meter",
		Signature: base64.StdEncoding.EncodeToString(sig), PublicKey: base64.StdEncoding.EncodeToString(pub)})
	if !isCode(err, "bad_signature") {
		t.Fatalf("upload with a bad vendor signature: %v", err)
	}
	sum := sha256.Sum256([]byte("firmware"))
	a, err := th.api.UploadArtifact(ctx, strings.NewReader("firmware"), client.UploadArtifact{Version: "3", Type: "Meter",
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(priv, sum[:])), PublicKey: base64.StdEncoding.EncodeToString(pub)})
	if err != nil || a.SignedBy != "vendor" {
		t.Fatalf("upload with a vendor signature: %+v, %v", a, err)
	}
}

// A hub restarted in the middle of a rollout continues it from the
// database; the devices reconnect and finish.
func TestFirmwareHubRestart(t *testing.T) {
	dir := t.TempDir()
	mqttAddr, httpAddr := freePort(t), freePort(t)
	th := fwHub(t, dir, mqttAddr, httpAddr)
	key := hubKey(t, th.api)
	art := uploadFW(t, th.api, 32<<10, "2.0.0")
	devs := ids("rs", 6)
	var ds []*fwDevice
	for _, id := range devs {
		d := newFWDevice(t, th, id, key)
		d.run()
		ds = append(ds, d)
	}
	ctx := context.Background()
	r, err := th.api.StartRollout(ctx, client.RolloutRequest{ArtifactID: art.ID, DeviceIDs: devs, Phases: []int{17, 100},
		Settle: "300ms", HealthWindow: "30s", StepTimeout: "30s"})
	if err != nil {
		t.Fatal(err)
	}
	waitRollout(t, th.api, r.ID, 60*time.Second, func(r *client.Rollout) bool { return r.Counts["confirming"]+r.Counts["updated"] >= 1 })
	th.stop()

	th2 := fwHub(t, dir, mqttAddr, httpAddr)
	for _, d := range ds {
		d.th = th2
	}
	r = waitRollout(t, th2.api, r.ID, 90*time.Second, func(r *client.Rollout) bool { return r.Status != "running" })
	if r.Status != "completed" || r.Counts["updated"] != 6 {
		t.Fatalf("after the restart the rollout ended %s (%s) %v", r.Status, r.Reason, r.Counts)
	}
}
