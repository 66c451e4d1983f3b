// Package mosquittotest runs a private Mosquitto (Debian's
// /usr/sbin/mosquitto, 2.0) for tests of the external-broker mode: its
// own configuration, password file and ACL file in a temporary
// directory, on a random loopback port. The machine's shared Mosquitto
// is never touched.
//
// Debian's Mosquitto 2.0 has no HTTP authentication plugin (the
// mosquitto-go-auth plugin that would call the hub's /broker/auth is not
// packaged), so devices are authenticated with a password file written
// with mosquitto_passwd when they are provisioned (the only moment their
// password is in plain text) and an ACL pattern that keeps every user to
// devices/<username>/#: the rule of the embedded broker, whose devices'
// username is their id.
package mosquittotest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/childproc"
	"github.com/devicehub/devicehub/internal/eventually"
)

// Binary is where Debian installs Mosquitto.
const Binary = "/usr/sbin/mosquitto"

// Hub is the user the hub's nodes connect as.
const (
	HubUser     = "devicehub"
	HubPassword = "hub-secret-for-tests"
)

// Broker is a running private Mosquitto.
type Broker struct {
	Addr string // host:port
	URL  string // mqtt://host:port

	dir, passwd, passwdTool string
	cmd                     *exec.Cmd
	done                    chan struct{}
	mu                      sync.Mutex
	log                     bytes.Buffer
}

// Skip skips the test, saying why, when Mosquitto or mosquitto_passwd is
// not installed.
func Skip(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Skipf("%s is not installed (Debian package mosquitto): skipping the external-broker test", Binary)
	}
	if _, err := exec.LookPath("mosquitto_passwd"); err != nil {
		t.Skip("mosquitto_passwd is not installed (Debian package mosquitto): skipping the external-broker test")
	}
}

// Start runs Mosquitto with the hub's user; devices are added with
// AddDevice. It is stopped when the test ends. extraConf is appended to
// the configuration file.
func Start(t testing.TB, extraConf string) *Broker {
	t.Helper()
	Skip(t)
	tool, _ := exec.LookPath("mosquitto_passwd")
	dir := t.TempDir()
	b := &Broker{dir: dir, passwd: filepath.Join(dir, "passwd"), passwdTool: tool, done: make(chan struct{})}
	run(t, tool, "-c", "-b", b.passwd, HubUser, HubPassword)
	acl := filepath.Join(dir, "acl")
	// The hub's nodes read every device topic (through their shared
	// subscription) and write to devices; a device reads and writes only
	// under its own prefix.
	aclText := "user " + HubUser + "\ntopic readwrite devices/#\ntopic read $share/+/devices/#\n\npattern readwrite devices/%u/#\n"
	if err := os.WriteFile(acl, []byte(aclText), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.Addr = ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(b.Addr)
	b.URL = "mqtt://" + b.Addr
	if os.Getuid() == 0 {
		// Run as root, Mosquitto changes to the user mosquitto, which
		// cannot read the test's private directory.
		extraConf = "user root\n" + extraConf
	}
	conf := fmt.Sprintf(`listener %s 127.0.0.1
allow_anonymous false
password_file %s
acl_file %s
persistence false
max_queued_messages 1000000
log_dest stderr
log_type error
log_type warning
log_type notice
%s
`, port, b.passwd, acl, extraConf)
	cpath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(cpath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(Binary, "-c", cpath)
	childproc.DieWithParent(b.cmd)
	b.cmd.Stdout = &lockedWriter{b}
	b.cmd.Stderr = &lockedWriter{b}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	go func() { b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.done
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.Log())
		}
	})
	eventually.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-b.done:
			t.Fatalf("mosquitto exited: %s", b.Log())
		default:
		}
		c, err := net.Dial("tcp", b.Addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return b
}

type lockedWriter struct{ b *Broker }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	return w.b.log.Write(p)
}

// Log is what Mosquitto logged so far.
func (b *Broker) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// AddDevices adds users (username → password) to the password file and
// makes Mosquitto read it again (SIGHUP). Mosquitto reloads
// asynchronously: a caller that needs the users at once waits for a
// CONNECT to succeed.
func (b *Broker) AddDevices(t testing.TB, users map[string]string) {
	t.Helper()
	for u, p := range users {
		run(t, b.passwdTool, "-b", b.passwd, u, p)
	}
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

// CPU is the CPU time (user and system) Mosquitto used so far, from
// /proc (0 where /proc is not there).
func (b *Broker) CPU() time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces) start
	// after the last ')'; utime and stime are fields 14 and 15.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100
