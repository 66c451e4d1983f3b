package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/cli"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/hub"
)

// The README's tour runs as written: TestREADMETour feeds its shell blocks,
// one after the other, to one bash (as a person types them into one
// terminal) in a fresh git repository holding what a clone holds, with the
// test binary as ./devicehub. The only change made to the commands is the
// ports: 1884 (MQTT) and 8080 (HTTP) become free random ports. Between two
// blocks the test waits, as a person would, for what the next block needs
// (the hub serving, the simulated devices asking to join), and checks what
// the commands printed. At the end `git status` must show a clean tree.
//
// Blocks fenced as "sh notest" are not run (the test suite itself, a
// PostgreSQL server); their devicehub command lines, and those quoted in
// the text, are parsed against the command tree instead.

// readmeBlock is a fenced code block of the README.
type readmeBlock struct {
	info string // the fence's info string: "sh", "sh notest", "go"
	text string
	line int // of the opening fence
}

func readmeBlocks(t *testing.T, readme string) []readmeBlock {
	t.Helper()
	var blocks []readmeBlock
	var cur *readmeBlock
	for i, l := range strings.Split(readme, "\n") {
		switch {
		case cur == nil && strings.HasPrefix(l, "```"):
			cur = &readmeBlock{info: strings.TrimSpace(strings.TrimPrefix(l, "```")), line: i + 1}
		case cur != nil && strings.TrimSpace(l) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += l + "\n"
		}
	}
	if cur != nil {
		t.Fatalf("README.md: the block at line %d is not closed", cur.line)
	}
	return blocks
}

// tourStep is what the test does around the README block that contains
// key: before it runs (wait for what it needs) and after (check what it
// printed; out is what the block printed, the hub's output included).
type tourStep struct {
	key    string
	before func(t *testing.T, tr *tour)
	after  func(t *testing.T, tr *tour, out string)
	used   bool
}

// tour is the terminal the README's commands run in.
type tour struct {
	dir        string
	mqtt, http string // ports
	bash       *exec.Cmd
	stdin      io.WriteCloser

	mu      sync.Mutex
	out     strings.Builder // everything printed so far
	changed chan struct{}   // signalled on output
	drained chan struct{}   // closed when nothing holds the output open
	exited  chan struct{}   // closed when the shell has exited
	waitErr error           // the shell's exit, once exited is closed
}

func TestREADMETour(t *testing.T) {
	if testing.Short() {
		t.Skip("README tour: skipped with -short")
	}
	var missing []string
	for _, tool := range []string{"bash", "curl", "jq", "mosquitto_pub", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Skipf("README tour skipped: %s not installed (Debian: apt-get install curl jq mosquitto-clients git)", strings.Join(missing, ", "))
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	tr := newTour(t)

	steps := []*tourStep{
		{key: "devicehub serve", after: func(t *testing.T, tr *tour, _ string) {
			tr.waitReady(t)
			tr.waitOutput(t, "the admin token printed", "Admin token (saved in devicehub-data/admin.token, shown only now)")
		}},
		{key: "provision dev1", after: func(t *testing.T, tr *tour, out string) {
			mustContain(t, out, `"device_id": "dev1"`, `"mqtt_password"`, `"api_key"`)
		}},
		{key: `"temperature": 21.5`, after: func(t *testing.T, tr *tour, out string) {
			mustNotContain(t, out, "Warning", "Error")
		}},
		{key: "readings dev1", after: func(t *testing.T, tr *tour, out string) {
			mustContain(t, out, "temperature=21.5", `"temperature":21.5`)
		}},
		{key: `"temperature": 500`, after: func(t *testing.T, tr *tour, out string) {
			mustContain(t, out, "Payload format invalid", "above the maximum 70")
			mustContain(t, out, "validation_failed  {\"temperature\": 500}") // the message log shows the refusal
		}},
		{key: "/api/v1/device/data", after: func(t *testing.T, tr *tour, out string) {
			mustContain(t, out, `"readings":1`)
		}},
		{key: "simulate --devices 3", after: func(t *testing.T, tr *tour, _ string) {
			tr.waitOutput(t, "the simulated devices' verification codes", "sim-0 waits for approval", "sim-1 waits for approval", "sim-2 waits for approval")
		}},
		{key: "provisioning reject", before: func(t *testing.T, tr *tour) {
			tr.waitPending(t, 3)
		}, after: func(t *testing.T, tr *tour, out string) {
			// The codes the simulator printed are the ones the operator sees.
			for _, m := range regexp.MustCompile(`verification code (\S+)`).FindAllStringSubmatch(tr.output(), -1) {
				mustContain(t, out, m[1])
			}
			mustContain(t, out, "rejected.", "approved: device sim-")
			tr.waitOutput(t, "the rejected device reported", "stopped, the others go on", "rejected")
		}},
		{key: "token create --role viewer", after: func(t *testing.T, tr *tour, out string) {
			mustContain(t, out, "role viewer) created", "POST", "/api/v1/provisioning/operations/")
		}},
		{key: "kill %2 %1", after: func(t *testing.T, tr *tour, _ string) {
			tr.waitOutput(t, "the hub stopped", "hub stopped")
		}},
	}

	var ran int
	for _, b := range readmeBlocks(t, string(readme)) {
		switch b.info {
		case "sh":
		case "sh notest":
			checkCommandLines(t, b)
			continue
		default:
			continue
		}
		text := b.text
		if ran == 0 {
			// The test binary is the devicehub binary this line builds.
			const build = "go build -o devicehub ./cmd/devicehub\n"
			if !strings.HasPrefix(text, build) {
				t.Fatalf("README.md line %d: the tour's first block must start with %q", b.line, build)
			}
			text = strings.TrimPrefix(text, build)
		}
		ran++
		var here []*tourStep
		for _, s := range steps {
			if !s.used && strings.Contains(text, s.key) {
				here = append(here, s)
			}
		}
		for _, s := range here {
			if s.before != nil {
				s.before(t, tr)
			}
		}
		out := tr.run(t, b, text)
		for _, s := range here {
			if s.after != nil {
				s.after(t, tr, out)
			}
			s.used = true
		}
	}
	for _, s := range steps {
		if !s.used {
			t.Errorf("README.md: no tour block contains %q any more; update the test's steps", s.key)
		}
	}
	tr.close(t)

	// What the tour left in the clone is ignored by git.
	st := exec.Command("git", "status", "--porcelain", "--untracked-files=all")
	st.Dir = tr.dir
	out, err := st.CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("git status after the tour: %v\n%s", err, out)
	}

	for _, l := range regexp.MustCompile("`(\\./devicehub [^`]*)`").FindAllStringSubmatch(string(readme), -1) {
		if err := checkCommandPath(l[1]); err != nil {
			t.Errorf("README.md: `%s`: %v", l[1], err)
		}
	}
}

func newTour(t *testing.T) *tour {
	t.Helper()
	dir := t.TempDir()
	// What a clone holds that the tour uses, committed in a repository
	// of its own, so that git status shows what the tour leaves behind.
	for _, f := range []string{"devicehub.example.yaml", ".gitignore"} {
		b, err := os.ReadFile(filepath.Join("../..", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"init", "-q"},
		{"add", "."},
		{"-c", "user.name=readme", "-c", "user.email=readme@example.com", "commit", "-q", "-m", "clone"},
	} {
		c := exec.Command("git", args...)
		c.Dir = dir
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(dir, "devicehub")); err != nil {
		t.Fatal(err)
	}

	tr := &tour{dir: dir, mqtt: freePort(t), http: freePort(t), changed: make(chan struct{}, 1), drained: make(chan struct{}), exited: make(chan struct{})}
	bash := exec.Command("bash", "--noprofile", "--norc")
	bash.Dir = dir
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DEVICEHUB_") {
			env = append(env, kv)
		}
	}
	bash.Env = append(env, "DEVICEHUB_TEST_CHILD=1",
		"DEVICEHUB_HTTP_ADDR=:"+tr.http, "DEVICEHUB_SERVER=http://127.0.0.1:"+tr.http)
	bash.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	tr.stdin, err = bash.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	bash.Stdout, bash.Stderr = pw, pw
	if err := bash.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	tr.bash = bash
	go func() {
		// The hub and the simulator hold the output open after the
		// shell has gone: a failed command is seen here.
		tr.waitErr = bash.Wait()
		close(tr.exited)
	}()
	go func() {
		defer close(tr.drained)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			tr.mu.Lock()
			tr.out.WriteString(sc.Text() + "\n")
			tr.mu.Unlock()
			select {
			case tr.changed <- struct{}{}:
			default:
			}
		}
		pr.Close()
	}()
	t.Cleanup(func() {
		// Whatever the tour left running (the hub, the simulator).
		syscall.Kill(-bash.Process.Pid, syscall.SIGKILL)
		<-tr.exited
		<-tr.drained
		if t.Failed() {
			t.Logf("the tour's terminal:\n%s", tr.output())
		}
	})
	if _, err := io.WriteString(tr.stdin, "set -eo pipefail\n"); err != nil {
		t.Fatal(err)
	}
	return tr
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

func (tr *tour) output() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.out.String()
}

// run types a block into the terminal and returns what was printed until
// it finished.
func (tr *tour) run(t *testing.T, b readmeBlock, text string) string {
	t.Helper()
	text = strings.ReplaceAll(text, "1884", tr.mqtt)
	text = strings.ReplaceAll(text, "8080", tr.http)
	start := len(tr.output())
	marker := fmt.Sprintf("__README_BLOCK_%d_DONE__", b.line)
	if _, err := io.WriteString(tr.stdin, text+"echo "+marker+"\n"); err != nil {
		t.Fatalf("README.md line %d: the shell is gone: %v", b.line, err)
	}
	deadline := time.After(90 * time.Second)
	for {
		out := tr.output()[start:]
		if i := strings.Index(out, marker+"\n"); i >= 0 {
			return out[:i]
		}
		select {
		case <-tr.changed:
		case <-tr.exited:
			// Let the last lines arrive.
			select {
			case <-tr.drained:
			case <-time.After(time.Second):
			}
			t.Fatalf("README.md line %d: a command failed (the shell exited, %v; set -e):\n%s\n--- printed:\n%s", b.line, tr.waitErr, b.text, tr.output()[start:])
		case <-deadline:
			t.Fatalf("README.md line %d: not done after 90s:\n%s\n--- printed:\n%s", b.line, b.text, tr.output()[start:])
		}
	}
}

// waitOutput waits until everything printed so far contains each of want.
func (tr *tour) waitOutput(t *testing.T, what string, want ...string) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		out := tr.output()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(out, w)
		}
		if ok {
			return
		}
		select {
		case <-tr.changed:
		case <-deadline:
			t.Fatalf("%s: %q not printed within 60s", what, want)
		}
	}
}

func (tr *tour) waitReady(t *testing.T) {
	t.Helper()
	eventually.True(t, 60*time.Second, "the hub serving", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + tr.http + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (tr *tour) admin(t *testing.T) *client.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(tr.dir, "devicehub-data", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return client.New("http://127.0.0.1:"+tr.http, strings.TrimSpace(string(tok)), nil)
}

func (tr *tour) waitPending(t *testing.T, n int) {
	t.Helper()
	c := tr.admin(t)
	eventually.True(t, 60*time.Second, fmt.Sprintf("%d pending provisioning operations", n), func() bool {
		ops, err := c.ListOperations(context.Background(), "pending")
		return err == nil && len(ops) == n
	})
}

// close ends the shell (the tour stopped what it started).
func (tr *tour) close(t *testing.T) {
	t.Helper()
	tr.stdin.Close()
	select {
	case <-tr.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the tour's shell did not exit")
	}
	if tr.waitErr != nil {
		t.Fatalf("the tour's shell: %v", tr.waitErr)
	}
	select {
	case <-tr.drained:
	case <-time.After(30 * time.Second):
		t.Fatal("something the tour started still runs after it stopped the hub and the simulator")
	}
}

func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("printed:\n%s\nwant it to contain %q", out, w)
		}
	}
}

func mustNotContain(t *testing.T, out string, bad ...string) {
	t.Helper()
	for _, w := range bad {
		if strings.Contains(out, w) {
			t.Errorf("printed:\n%s\nwant no %q", out, w)
		}
	}
}

// checkCommandLines parses the devicehub command lines of a block that is
// not run.
func checkCommandLines(t *testing.T, b readmeBlock) {
	t.Helper()
	// Join continued lines.
	text := strings.ReplaceAll(b.text, "\\\n", " ")
	for _, l := range strings.Split(text, "\n") {
		words := strings.Fields(l)
		for len(words) > 0 && strings.Contains(words[0], "=") {
			words = words[1:] // VAR=value before the command
		}
		if len(words) == 0 || words[0] != "./devicehub" {
			continue
		}
		if err := checkCommandPath(strings.Join(words, " ")); err != nil {
			t.Errorf("README.md line %d: %q: %v", b.line, l, err)
		}
	}
}

// checkCommandPath checks that a devicehub command line names a command
// and flags that exist (arguments are not checked: the text may name a
// command without them).
func checkCommandPath(line string) error {
	words := strings.Fields(strings.TrimPrefix(line, "./devicehub"))
	root := cli.NewRoot(hub.Serve)
	cmd, rest, err := root.Find(words)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return err
	}
	if args := cmd.Flags().Args(); len(args) > 0 && cmd.HasAvailableSubCommands() {
		return fmt.Errorf("no command %q under %q", args[0], cmd.CommandPath())
	}
	return nil
}
