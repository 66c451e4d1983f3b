package childproc_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/childproc"
	"github.com/devicehub/devicehub/internal/eventually"
)

const envRole = "CHILDPROC_TEST_ROLE"

// TestMain lets the test binary play the parent (which starts a
// grandchild with DieWithParent and prints its pid) or the grandchild
// (which waits to be killed).
func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "parent":
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), envRole+"=grandchild")
		childproc.DieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(cmd.Process.Pid)
		waitToBeKilled()
	case "grandchild":
		waitToBeKilled()
	}
	os.Exit(m.Run())
}

// waitToBeKilled blocks until the process is killed. A bare select{}
// would not: the runtime ends a process whose goroutines all block
// forever ("all goroutines are asleep"), which would make the test pass
// without DieWithParent.
func waitToBeKilled() {
	for {
		time.Sleep(time.Hour)
	}
}

// TestChildDiesWithKilledParent kills a parent with SIGKILL, so it runs no
// cleanup, and expects the child it started to be gone.
func TestChildDiesWithKilledParent(t *testing.T) {
	parent := exec.Command(os.Args[0])
	parent.Env = append(os.Environ(), envRole+"=parent")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		parent.Process.Kill()
		t.Fatalf("reading the grandchild's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		parent.Process.Kill()
		t.Fatalf("grandchild pid %q: %v", line, err)
	}
	// Should the test fail, the grandchild is not left running.
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if !alive(pid) {
		t.Fatalf("grandchild %d not running before its parent was killed", pid)
	}
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	eventually.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if alive(pid) {
			return fmt.Errorf("grandchild %d still running after its parent was killed", pid)
		}
		return nil
	})
}

// alive reports whether pid runs: it exists and is not a zombie (a killed
// orphan stays one until whoever adopted it reaps it).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name's closing parenthesis.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
