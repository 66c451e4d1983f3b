package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/hub"
)

const browserTypes = `
device_types:
  WeatherStation:
    heartbeat_interval: 60s
    fields:
      temperature: {type: float, unit: celsius, min: -60, max: 70}
      humidity:    {type: float, unit: percent, min: 0, max: 100}
    commands: [reboot, set_interval]
  Door:
    fields:
      open: {type: bool}
    commands:
      lock: {}
      unlock: {params: {after: {type: int, min: 0, max: 3600, required: true, unit: s}, note: {type: string}}}
`

// chromiumPath finds Debian's chromium (or another Chrome) for the browser
// tests; DEVICEHUB_CHROMIUM names one explicitly.
func chromiumPath() string {
	if p := os.Getenv("DEVICEHUB_CHROMIUM"); p != "" {
		return p
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// testHub is a real hub on random ports with a SQLite store in a temporary
// directory, and an admin API client.
type testHub struct {
	*hub.Hub
	base  string
	admin *client.Client
}

func startHub(t testing.TB) *testHub {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf("data_dir: %s\nmqtt:\n  addr: 127.0.0.1:0\nhttp:\n  addr: 127.0.0.1:0\n%s", dir, browserTypes)
	path := filepath.Join(dir, "devicehub.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) (string, bool) { return "", false }, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("DEVICEHUB_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	h, err := hub.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub run: %v", err)
		}
	})
	select {
	case <-h.Ready():
	case err := <-done:
		t.Fatalf("hub stopped before ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("hub not ready after 20s")
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + h.HTTPAddr()
	return &testHub{Hub: h, base: base, admin: client.New(base, strings.TrimSpace(string(tok)), nil)}
}

// device is a real MQTT device (paho) that answers every command with
// succeeded and the command's payload.
type device struct {
	*paho.Client
	id   string
	mu   sync.Mutex
	cmds []string
}

func connectDevice(t *testing.T, addr, id, user, pass string) *device {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := &device{id: id}
	d.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			topic := pr.Packet.Topic
			prefix := "devices/" + id + "/commands/"
			if strings.HasPrefix(topic, prefix) && !strings.HasSuffix(topic, "/result") {
				cid := strings.TrimPrefix(topic, prefix)
				d.mu.Lock()
				d.cmds = append(d.cmds, cid)
				d.mu.Unlock()
				var cmd struct {
					Command string          `json:"command"`
					Payload json.RawMessage `json:"payload"`
				}
				_ = json.Unmarshal(pr.Packet.Payload, &cmd)
				res, _ := json.Marshal(map[string]any{"status": "succeeded", "result": map[string]any{"done": cmd.Command}})
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_, _ = d.Publish(ctx, &paho.Publish{Topic: topic + "/result", QoS: 1, Payload: res})
				}()
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.Connect(ctx, &paho.Connect{
		ClientID: id, KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true,
	}); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	if _, err := d.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/commands/+", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe %s: %v", id, err)
	}
	t.Cleanup(func() { _ = d.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return d
}

func (d *device) publish(t *testing.T, topic, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// publishRefused publishes a message the hub must refuse.
func (d *device) publishRefused(t *testing.T, topic, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}); err == nil {
		t.Fatalf("publish %s %s: accepted, want refused", topic, payload)
	}
}

// browser is a headless chromium with a fresh profile.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // screenshot folder
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("browser tests skipped: no chromium found (apt-get install chromium, or set DEVICEHUB_CHROMIUM)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	// Confirmation dialogs are accepted; prompts get their default text.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true, PromptText: ev.DefaultPrompt})
		}
	}()
	shot := os.Getenv("DEVICEHUB_SCREENSHOTS")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "screenshots")
	}
	if err := os.MkdirAll(shot, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ctx: ctx, base: base, shot: shot}
}

// do runs steps with a deadline, failing the test with what was tried.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		b.t.Fatalf("%s: %v (at %s)", what, err, loc)
	}
}

// waitJS polls a JavaScript condition in the page until it is true.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		b.t.Fatalf("wait for %s: %v (at %s)", what, err, loc)
	}
}

// eval evaluates an expression in the page, awaiting a promise.
func eval[T any](b *browser, what, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// pageLimit is the bound on a page: its HTML, scripts and styles
// (not the data its scripts fetch from the API).
const pageLimit = 200_000

// pageBytes is what the current page loaded: the document and its
// scripts, styles and images, uncompressed.
func (b *browser) pageBytes() int {
	return eval[int](b, "page weight", `(() => {
		const nav = performance.getEntriesByType('navigation')[0]?.decodedBodySize ?? 0;
		const res = performance.getEntriesByType('resource').filter(e => ['script', 'link', 'css', 'img'].includes(e.initiatorType));
		return nav + res.reduce((n, e) => n + e.decodedBodySize, 0);
	})()`)
}

// screenshots checks the current page's weight and saves it at desktop
// and phone widths.
func (b *browser) screenshots(name string) {
	b.t.Helper()
	if n := b.pageBytes(); n > pageLimit {
		what := eval[string](b, "page entries", `JSON.stringify(performance.getEntriesByType('resource').map(e => [e.name, e.initiatorType, e.decodedBodySize]))`)
		b.t.Errorf("page %s: %d bytes, over the %d of the issue: %s", name, n, pageLimit, what)
	} else {
		b.t.Logf("page %s: %d bytes", name, n)
	}
	for _, v := range []struct {
		suffix string
		w, h   int64
		opts   []chromedp.EmulateViewportOption
	}{{"desktop", 1280, 900, nil}, {"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateMobile}}} {
		b.do("viewport for "+name, chromedp.EmulateViewport(v.w, v.h, v.opts...))
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			b.t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(b.shot, name+"-"+v.suffix+".png"), buf, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.do("restore viewport", chromedp.EmulateViewport(1280, 900))
}

// reloadAfter runs steps that end in the page reloading itself (the
// provisioning and bulk actions reload after their API calls answer) and
// waits for the new document: navigating elsewhere before that reload
// would race it, and the reload could win.
func (b *browser) reloadAfter(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.do("mark the page before "+what, chromedp.Evaluate[chromedp.Void](`window.devicehubOld = true`))
	b.do(what, steps...)
	// The reload interrupts an evaluation in flight: ask again until the
	// new document answers.
	eventually.CheckFor(b.t, 20*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		fresh, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.devicehubOld === undefined && document.readyState === 'complete' && !!document.querySelector('main')`))
		if err != nil {
			return err
		}
		if !fresh {
			return fmt.Errorf("the page has not reloaded after %s", what)
		}
		return nil
	})
}

func (b *browser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitReady(chromedp.CSS("main")))
}

func (b *browser) signIn(name, password string) {
	b.t.Helper()
	b.do("sign in as "+name,
		chromedp.Navigate(b.base+"/"),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("signout")),
	)
}

func addUser(t *testing.T, h *testHub, name, role string) string {
	t.Helper()
	pw := "pw-" + name + "-long-enough"
	if _, err := h.Accounts().AddUser(context.Background(), name, pw, access.Role(role)); err != nil {
		t.Fatal(err)
	}
	return pw
}
