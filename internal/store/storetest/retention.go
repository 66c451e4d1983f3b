package storetest

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/retention"
)

// timed is a data change whose message was received, and whose event
// happened, at the reading's time.
func timed(t *testing.T, device string, sec int) *commit.Change {
	ch := data{device: device, times: []int{sec}, values: map[string]any{"t": float64(sec)}}.change(t)
	msg(ch).ReceivedAt = at(sec)
	ch.Events[0].Time = at(sec)
	return ch
}

func deviceReadingSecs(t *testing.T, b Backend, device string) []int {
	t.Helper()
	page, err := b.QueryReadings(context.Background(), readings.Query{DeviceID: device})
	if err != nil {
		t.Fatal(err)
	}
	out := []int{}
	for _, r := range page.Readings {
		out = append(out, int(r.Time.Sub(base)/time.Second))
	}
	return out
}

func testRetention(t *testing.T, b Backend) {
	ctx := context.Background()
	mustCommit(t, b, newDevice(t, "d1", "sensor", false), newDevice(t, "x1", "other", false))
	for s := 1; s <= 10; s++ {
		batch := []*commit.Change{timed(t, "d1", s)}
		if s <= 5 {
			batch = append(batch, timed(t, "x1", s))
		}
		mustCommit(t, b, batch...)
	}
	now := at(100)
	keep := func(cut int) time.Duration { return now.Sub(at(cut)) }
	e := retention.New(b, retention.Options{
		Readings:        keep(6),
		ReadingsByType:  map[string]time.Duration{"other": 0},
		MessagePayloads: keep(8),
		Messages:        keep(3),
		Events:          keep(4),
		Batch:           2, // several batches of each kind
		Now:             func() time.Time { return now },
	}, slog.New(slog.DiscardHandler), nil)
	check := func(t *testing.T) {
		t.Helper()
		if got, want := deviceReadingSecs(t, b, "d1"), []int{10, 9, 8, 7, 6}; !slices.Equal(got, want) {
			t.Errorf("readings of d1 %v, want %v", got, want)
		}
		if got, want := deviceReadingSecs(t, b, "x1"), []int{5, 4, 3, 2, 1}; !slices.Equal(got, want) {
			t.Errorf("readings of x1 (kept forever) %v, want %v", got, want)
		}
		msgs, err := b.ListMessages(ctx, messagelog.Query{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range msgs {
			s := int(m.ReceivedAt.Sub(base) / time.Second)
			got = append(got, m.DeviceID+"@"+strconv.Itoa(s)+map[bool]string{true: "+payload", false: ""}[m.Payload != nil])
		}
		want := []string{"d1@10+payload", "d1@9+payload", "d1@8+payload", "d1@7", "d1@6", "x1@5", "d1@5", "x1@4", "d1@4", "x1@3", "d1@3"}
		if !slices.Equal(got, want) {
			t.Errorf("messages\n got %v\nwant %v", got, want)
		}
		for _, ev := range allEvents(t, b) {
			if ev.Time.Before(at(4)) {
				t.Errorf("event %d %s of %v kept", ev.Seq, ev.Type, ev.Time)
			}
		}
		if n := len(allEvents(t, b)); n != 7+2 { // d1 at 4..10, x1 at 4, 5
			t.Errorf("%d events left, want 9", n)
		}
	}
	if err := e.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	check(t)
	// A second pass finds nothing more.
	if err := e.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	check(t)

	// Everything expired: the newest reading, message and event stay,
	// so that ids and seqs never go back.
	late := retention.New(b, retention.Options{
		Readings: time.Microsecond, ReadingsByType: map[string]time.Duration{"other": time.Microsecond},
		MessagePayloads: time.Microsecond, Messages: time.Microsecond, Events: time.Microsecond, Batch: 3,
		Now: func() time.Time { return at(100000) },
	}, slog.New(slog.DiscardHandler), nil)
	if err := late.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, b, ""); n != 1 {
		t.Errorf("%d readings left, want the newest", n)
	}
	if got := deviceReadingSecs(t, b, "d1"); !slices.Equal(got, []int{10}) {
		t.Errorf("readings of d1 %v, want [10]", got)
	}
	if evs := allEvents(t, b); len(evs) != 1 {
		t.Errorf("%d events left, want the newest", len(evs))
	}
	msgs, err := b.ListMessages(ctx, messagelog.Query{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Payload != nil {
		t.Errorf("messages left %+v, want the newest without payload", msgs)
	}
}
