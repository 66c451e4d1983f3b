package broker

import (
	"bufio"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
)

// subscribe311 is a 3.1.1 SUBSCRIBE of filter at QoS 1.
func subscribe311(filter string, id uint16) []byte {
	body := []byte{byte(id >> 8), byte(id), byte(len(filter) >> 8), byte(len(filter))}
	body = append(body, filter...)
	body = append(body, 1)
	return append([]byte{0x82, byte(len(body))}, body...)
}

// readPacket311 reads one packet: its type byte and body.
func readPacket311(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
		shift += 7
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}

// TestWriteQueueHoldsInflightBurst: the hub hands a device as many QoS 1
// messages at once as the inflight cap allows (its queued commands, when
// it connects) while the device reads nothing; with the default write
// queue none is dropped, and they arrive in order. A 3.1.1 client
// announces no receive maximum, so every one of them goes through the
// write queue.
func TestWriteQueueHoldsInflightBurst(t *testing.T) {
	h := start(t)
	conn, r, code := dial311(t, h.b.Addr(), "dev1", "dev1", "pw1")
	if code != 0 {
		t.Fatalf("return code %#x", code)
	}
	if _, err := conn.Write(subscribe311("devices/dev1/commands/+", 1)); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := readPacket311(r); err != nil || typ != 0x90 {
		t.Fatalf("SUBACK: %#x %v", typ, err)
	}
	n := h.b.opts.MaxInflight
	if h.b.opts.WriteQueue < n {
		t.Fatalf("default write queue %d is below the inflight cap %d", h.b.opts.WriteQueue, n)
	}
	var published atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if err := h.b.Publish(fmt.Sprintf("devices/dev1/commands/%04d", i), []byte(`{"command":"reboot"}`), false, 1); err != nil {
				done <- err
				return
			}
			published.Add(1)
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range n {
		typ, body, err := readPacket311(r)
		if err != nil {
			t.Fatalf("publish %d of %d: %v (mochi dropped %d)", i, n, err, h.b.server.Info.MessagesDropped)
		}
		if typ&0xf0 != 0x30 {
			t.Fatalf("packet %d: type %#x, want PUBLISH", i, typ)
		}
		tl := int(body[0])<<8 | int(body[1])
		if got, want := string(body[2:2+tl]), fmt.Sprintf("devices/dev1/commands/%04d", i); got != want {
			t.Fatalf("publish %d: topic %s, want %s (mochi dropped %d)", i, got, want, h.b.server.Info.MessagesDropped)
		}
	}
	if d := h.b.server.Info.MessagesDropped; d != 0 {
		t.Fatalf("mochi dropped %d messages", d)
	}
}
