package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Finding 11: devices that open chunked messages and never finish them
// cannot starve the others: a newcomer takes the room of the oldest
// message of the device holding the most. And a device's chunks are freed
// when it goes away.
func TestChunkShare(t *testing.T) {
	now := time.Now()
	cs := newChunkSets(10_000, 5*time.Minute)
	chunk := bytes.Repeat([]byte("x"), 250)
	first := func(device, id string) error {
		_, err := cs.add(device, "", chunkTopic{base: "devices/" + device + "/data", id: id, index: 0, count: 3}, chunk, 1<<20, now)
		return err
	}
	// 40 hoarders fill the memory with first chunks, several each.
	for i := range 40 {
		for j := range 2 {
			err := first(fmt.Sprintf("hoard-%d", i), fmt.Sprint(j))
			if i*2+j < 40 && err != nil {
				t.Fatalf("hoarder %d/%d: %v", i, j, err)
			}
		}
	}
	if cs.held > cs.maxBytes {
		t.Fatalf("held %d over %d", cs.held, cs.maxBytes)
	}
	// Every other device still gets its whole message through, once the
	// hoarders' messages have been idle for stealIdle.
	now = now.Add(stealIdle)
	for i := range 20 {
		dev := fmt.Sprintf("fair-%d", i)
		for idx := range 3 {
			out, err := cs.add(dev, "", chunkTopic{base: "devices/" + dev + "/data", id: "m", index: idx, count: 3}, chunk, 1<<20, now)
			if err != nil {
				t.Fatalf("device %s chunk %d: %v", dev, idx, err)
			}
			if idx == 2 && len(out) != 3*len(chunk) {
				t.Fatalf("device %s: message of %d bytes", dev, len(out))
			}
		}
	}
	if cs.held > cs.maxBytes {
		t.Fatalf("held %d over %d", cs.held, cs.maxBytes)
	}
	// A device holding its fair share is not evicted for one holding as
	// much: when nobody holds more than the newcomer would, it waits.
	full := newChunkSets(1000, time.Minute)
	for i := range 4 {
		if _, err := full.add(fmt.Sprint("d", i), "", chunkTopic{base: "b", id: "m", index: 0, count: 2}, chunk, 1<<20, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := full.add("d0", "", chunkTopic{base: "b", id: "n", index: 0, count: 2}, chunk, 1<<20, now); !errors.Is(err, ErrChunkMemory) {
		t.Fatalf("device over its share: %v, want ErrChunkMemory", err)
	}

	// Forgetting a device frees what it held.
	before := cs.held
	cs.forget("fair-0")
	cs.forget("hoard-39")
	if cs.held > before || cs.bytesOf["hoard-39"] != 0 || cs.perDevice["hoard-39"] != 0 {
		t.Fatalf("after forget: held %d (before %d), hoard-39 %d bytes", cs.held, before, cs.bytesOf["hoard-39"])
	}
	total := 0
	for _, n := range cs.bytesOf {
		total += n
	}
	if total != cs.held {
		t.Fatalf("per-device bytes sum to %d, held %d", total, cs.held)
	}
}
