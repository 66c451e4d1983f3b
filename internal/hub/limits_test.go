package hub_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/eventually"
)

// closedWithin reports whether the server closes c (a read returns EOF or
// a reset, after whatever it still sends) within d.
func closedWithin(c net.Conn, d time.Duration) (bool, string) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	got, err := io.ReadAll(c)
	if err == nil || errors.Is(err, syscall.ECONNRESET) {
		return true, string(got)
	}
	return false, string(got) + " / " + err.Error()
}

// Finding 5: a body sent at a byte a second and an idle keep-alive
// connection are both closed by the server's own timeouts.
func TestHTTPTimeouts(t *testing.T) {
	th := startHubHTTP(t, "  read_timeout: 1s\n  idle_timeout: 1s\n", "")
	addr := strings.TrimPrefix(th.base, "http://")

	t.Run("slow body", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "POST /api/v1/device/data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
		// The rest of the body never comes (as slow as can be).
		if ok, got := closedWithin(c, 10*time.Second); !ok {
			t.Fatalf("connection with a stalled body still open: %q", got)
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatal("server closed after the response: the test needs a keep-alive connection")
		}
		if ok, got := closedWithin(c, 10*time.Second); !ok {
			t.Fatalf("idle keep-alive connection still open: %q", got)
		}
	})
}

// Finding 1 and 5: HTTP has its own connection cap; beyond it a client
// gets a 503 at once, and once connections close it is served again.
func TestHTTPConnectionCap(t *testing.T) {
	th := startHubHTTP(t, "  max_connections: 3\n", "")
	addr := strings.TrimPrefix(th.base, "http://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The three are accepted (and held) before the fourth is: each
	// answers a request.
	for _, c := range held {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ok, got := closedWithin(c, 10*time.Second)
	if !ok || !strings.HasPrefix(got, "HTTP/1.1 503") {
		t.Fatalf("connection beyond the cap: closed %v, got %q; want a 503 and close", ok, got)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	eventually.True(t, 10*time.Second, "served again", func() bool {
		resp, err := http.Get(th.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// Finding 9: "." and ".." are refused at the API, where a path could not
// reach them afterwards.
func TestDotIDsRefused(t *testing.T) {
	th := startHub(t, "")
	for _, id := range []string{".", ".."} {
		var out map[string]any
		if code := th.do(t, "POST", "/api/v1/devices", map[string]any{"id": id, "type": "WeatherStation"}, &out); code != http.StatusBadRequest {
			t.Errorf("provision %q: status %d %v, want 400", id, code, out)
		}
		if code := th.do(t, "POST", "/api/v1/groups", map[string]any{"id": id, "name": "x"}, nil); code != http.StatusBadRequest && code != http.StatusUnprocessableEntity {
			t.Errorf("create group %q: status %d, want 400", id, code)
		}
	}
}
