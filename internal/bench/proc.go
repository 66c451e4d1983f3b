package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/devicehub/devicehub/internal/childproc"
)

// proc is a child process whose stderr lines are kept (bounded) so that
// the runner can wait for a line, and whose stdout is collected.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   bytes.Buffer // stdout
	done  chan struct{}

	mu     sync.Mutex
	lines  []string
	notify chan struct{} // closed and replaced on every new line
	err    error         // Wait's result, once done
}

const maxKeptLines = 20000

// startProc starts exe with args and env added to the environment. With
// logPath set, every stderr line is also written to that file (kept after
// the run, for a failed round's post-mortem).
func startProc(name, exe string, args, env []string, logPath string) (*proc, error) {
	var logf *os.File
	if logPath != "" {
		var err error
		if logf, err = os.Create(logPath); err != nil {
			return nil, fmt.Errorf("%s: log: %w", name, err)
		}
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	childproc.DieWithParent(cmd)
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), notify: make(chan struct{})}
	cmd.Stdout = &p.out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		var lw *bufio.Writer
		if logf != nil {
			defer logf.Close()
			lw = bufio.NewWriter(logf)
			defer lw.Flush()
		}
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if lw != nil {
				_, _ = lw.Write(sc.Bytes())
				_ = lw.WriteByte('\n')
			}
			p.mu.Lock()
			if len(p.lines) >= maxKeptLines {
				p.lines = append(p.lines[:100:100], p.lines[len(p.lines)-maxKeptLines/2:]...)
			}
			p.lines = append(p.lines, sc.Text())
			close(p.notify)
			p.notify = make(chan struct{})
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// waitFor waits until a stderr line matches re and returns its submatches.
func (p *proc) waitFor(ctx context.Context, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if m := re.FindStringSubmatch(l); m != nil {
				p.mu.Unlock()
				return m, nil
			}
		}
		notify := p.notify
		p.mu.Unlock()
		select {
		case <-notify:
		case <-p.done:
			// Lines may have arrived just before the end.
			p.mu.Lock()
			for _, l := range p.lines {
				if m := re.FindStringSubmatch(l); m != nil {
					p.mu.Unlock()
					return m, nil
				}
			}
			p.mu.Unlock()
			return nil, fmt.Errorf("%s exited (%v) before %q:\n%s", p.name, p.exitErr(), re, p.tail(15))
		case <-deadline.C:
			return nil, fmt.Errorf("%s: no %q after %v:\n%s", p.name, re, timeout, p.tail(15))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// tail returns the last n stderr lines.
func (p *proc) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(0, len(p.lines)-n):], "\n")
}

// proceed writes a line on the child's stdin (a step confirmation).
func (p *proc) proceed() { _, _ = io.WriteString(p.stdin, "go\n") }

// wait waits for the process to end, at most timeout, then kills it.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s: killed after %v", p.name, timeout)
	}
	return p.exitErr()
}

// stop sends SIGTERM and waits (then SIGKILL after timeout).
func (p *proc) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	err := p.wait(timeout)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
		return nil // ended by our SIGTERM
	}
	return err
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime returns the CPU time (user + system) the process used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	// Fields after the command name (which may contain spaces).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("read stat: malformed")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("read stat: malformed")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // utime, field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("read stat: malformed times")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// memory returns the resident set size and its peak (VmHWM) in KiB.
func memory(pid int) (rssKB, hwmKB int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read status: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rssKB = n
		case "VmHWM":
			hwmKB = n
		}
	}
	return rssKB, hwmKB, nil
}

// fileHeadroom is the file descriptors a system under test keeps for
// other files than its connections (database, WAL, listeners, logs).
const fileHeadroom = 500

// fileLimitConns raises this process's soft open-file limit to the hard
// one and returns the connections a system under test can hold within it.
// Setrlimit is called even when Go already raised the soft limit at
// start: only an explicit call makes the children (Mosquitto too)
// inherit the raised limit instead of the original one.
func fileLimitConns() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 10000
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	n := int(min(lim.Max, 1<<20)) - fileHeadroom
	return max(n, 100)
}

// machineBusy returns the CPU time the whole machine spent busy (every
// core, every process and the kernel: /proc/stat less idle and iowait).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, errors.New("read /proc/stat: malformed")
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errors.New("read /proc/stat: malformed")
		}
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is counted in user already
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}
