package broker

import (
	"bytes"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// TestWaitForInput: the connection loop waits for input by filling
// mochi's client reader, or, when the broker cannot reach it, by reading
// one byte (serve.go); either way every packet is read whole, however it
// is cut into writes, and packets that come together are all processed.
func TestWaitForInput(t *testing.T) {
	pub := func(id uint16) []byte { return publish311("devices/dev1/data", `{"t":1}`, id) }
	puback := func(id uint16) []byte { return []byte{0x40, 2, byte(id >> 8), byte(id)} }
	tests := []struct {
		name   string
		writes [][]byte // written one after the other, each once the previous one's answer was read
		want   [][]byte // the answer to each write
	}{
		{"a publish", [][]byte{pub(1)}, [][]byte{puback(1)}},
		{"two publishes in one write", [][]byte{slices.Concat(pub(1), pub(2))}, [][]byte{slices.Concat(puback(1), puback(2))}},
		{"a publish and half the next", [][]byte{slices.Concat(pub(1), pub(2)[:5]), pub(2)[5:]}, [][]byte{puback(1), puback(2)}},
		{"a PINGREQ, then a publish", [][]byte{{0xC0, 0}, pub(7)}, [][]byte{{0xD0, 0}, puback(7)}},
	}
	for _, mode := range []struct {
		name     string
		byteWait bool
	}{{"reader", false}, {"byte", true}} {
		t.Run(mode.name, func(t *testing.T) {
			h := startOpts(t, Options{byteWait: mode.byteWait}, &fakeHandler{errs: map[string]error{}})
			if (h.b.reader == nil) != mode.byteWait {
				t.Fatalf("the broker fills mochi's reader = %v", h.b.reader != nil)
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					conn, err := net.Dial("tcp", h.b.Addr())
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close()
					_ = conn.SetDeadline(time.Now().Add(5 * time.Second)) // a failure, not a synchronisation
					if _, err := conn.Write(connect311("dev1", "dev1", "pw1")); err != nil {
						t.Fatal(err)
					}
					connack := make([]byte, 4)
					if _, err := io.ReadFull(conn, connack); err != nil || connack[0] != 0x20 || connack[3] != 0 {
						t.Fatalf("CONNACK = %x, %v", connack, err)
					}
					for i, w := range tt.writes {
						if _, err := conn.Write(w); err != nil {
							t.Fatal(err)
						}
						if len(tt.want[i]) == 0 {
							continue
						}
						got := make([]byte, len(tt.want[i]))
						if _, err := io.ReadFull(conn, got); err != nil {
							t.Fatalf("write %d: read the answer: %v", i, err)
						}
						if !bytes.Equal(got, tt.want[i]) {
							t.Fatalf("write %d: got %x, want %x", i, got, tt.want[i])
						}
					}
				})
			}
		})
	}
}
