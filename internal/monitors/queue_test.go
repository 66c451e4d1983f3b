package monitors

import (
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/monitorclient"
)

// TestQueueFull: when a push must wait for room, by the queue's count or
// by its bytes; an event larger than the byte bound waits only for an
// empty queue.
func TestQueueFull(t *testing.T) {
	tests := []struct {
		name   string
		cap    int
		budget int64
		queued []int64 // the sizes of the events queued
		next   int64   // the size of the event pushed
		want   bool
	}{
		{"empty", 10, 1000, nil, 100, false},
		{"room for both", 10, 1000, []int64{400, 400}, 200, false},
		{"full by count", 2, 1000, []int64{100, 100}, 100, true},
		{"full by bytes", 10, 1000, []int64{400, 400}, 201, true},
		{"exactly the bound", 10, 1000, []int64{500}, 500, false},
		{"larger than the bound, empty queue", 10, 1000, nil, 5000, false},
		{"larger than the bound, one queued", 10, 1000, []int64{1}, 5000, true},
		{"one larger than the bound queued", 10, 1000, []int64{5000}, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(tt.cap, tt.budget, 100, 0)
			for i, size := range tt.queued {
				if !q.push(&events.Event{Seq: int64(i + 1)}, size, true, time.Now) {
					t.Fatal("push refused")
				}
			}
			if got := q.full(tt.next); got != tt.want {
				t.Fatalf("full(%d) = %v, want %v", tt.next, got, tt.want)
			}
		})
	}
}

// TestQueueFullBatchDue: a push waiting for room makes the batch due at
// once (nothing can join it before it is taken), however long the batch's
// time bound; the push goes on when the batch is taken, and the bytes
// follow.
func TestQueueFullBatchDue(t *testing.T) {
	q := newQueue(100, 1000, 10, 0)
	q.push(&events.Event{Seq: 1}, 600, true, time.Now)
	<-q.wake // the first event
	if batch, _, due := q.poll(nil, time.Hour, time.Now()); batch != nil || due <= 0 {
		t.Fatalf("a batch of %d due before its time bound, without a full queue", len(batch))
	}
	done := make(chan bool)
	go func() { done <- q.push(&events.Event{Seq: 2}, 600, true, time.Now) }()
	<-q.wake // the push waits for room
	batch, upto, _ := q.poll(nil, time.Hour, time.Now())
	if len(batch) != 1 || batch[0].Seq != 1 || upto != 1 {
		t.Fatalf("batch %v upto %d, want event 1 at once", batch, upto)
	}
	if !<-done {
		t.Fatal("push refused")
	}
	if n, bytes := q.stats(); n != 1 || bytes != 600 {
		t.Fatalf("queue of %d events, %d bytes, want 1 and 600", n, bytes)
	}
	if batch, _, due := q.poll(nil, time.Hour, time.Now()); batch != nil || due <= 0 {
		t.Fatal("a batch due at once once the push went on")
	}
	if n, upto := q.drop(); n != 1 || upto != 2 {
		t.Fatalf("drop: %d events upto %d", n, upto)
	}
	if n, bytes := q.stats(); n != 0 || bytes != 0 {
		t.Fatalf("queue of %d events, %d bytes after drop", n, bytes)
	}
}

func TestReadLimit(t *testing.T) {
	tests := []struct {
		name        string
		budget, avg int64
		want        int
	}{
		{"unknown size", 1 << 20, 0, 1024},
		{"small events", 8 << 20, 700, 1024},
		{"large events", 8 << 20, 64 << 10, 128},
		{"one larger than the budget", 8 << 20, 16 << 20, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readLimit(tt.budget, tt.avg, 1024); got != tt.want {
				t.Fatalf("readLimit(%d, %d) = %d, want %d", tt.budget, tt.avg, got, tt.want)
			}
		})
	}
}

// TestEncodeCacheByteBound: the cache drops its oldest encodings to stay
// within its bytes, keeps the newest however large, and encodes again an
// event it dropped.
func TestEncodeCacheByteBound(t *testing.T) {
	const budget = 4096
	c := newEncodeCache(budget)
	ev := func(seq int64, pad int) *events.Event {
		return dataEvent(seq, 4, pad)
	}
	var first []byte
	for seq := int64(1); seq <= 200; seq++ {
		b, err := c.get(ev(seq, 100), monitorclient.FormatJSON)
		if err != nil {
			t.Fatal(err)
		}
		if seq == 1 {
			first = b
		}
		if _, bytes := c.stats(); bytes > budget {
			t.Fatalf("after %d events the cache counts %d bytes, over its %d", seq, bytes, budget)
		}
	}
	n, bytes := c.stats()
	if n == 0 || n >= 200 || bytes < budget-2*int64(cap(first)) {
		t.Fatalf("the cache holds %d encodings, %d bytes: want most of %d bytes, fewer than 200", n, bytes, budget)
	}
	if c.slots[1].json != nil {
		t.Fatal("the oldest encoding is still held")
	}
	if c.slots[200].json == nil {
		t.Fatal("the newest encoding is not held")
	}
	if _, err := c.get(ev(1, 100), monitorclient.FormatJSON); err != nil {
		t.Fatal(err)
	}
	if c.slots[1].json == nil {
		t.Fatal("an event dropped was not cached again")
	}

	big, err := c.get(ev(201, 3*budget), monitorclient.FormatXML)
	if err != nil {
		t.Fatal(err)
	}
	if n, bytes := c.stats(); n != 1 || bytes != int64(cap(big)) || c.slots[201].xml == nil {
		t.Fatalf("after an encoding larger than the bound: %d encodings, %d bytes; want it alone, %d bytes", n, bytes, cap(big))
	}
}
