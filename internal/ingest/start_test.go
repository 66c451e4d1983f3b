package ingest

import (
	"context"
	"errors"
	"testing"
	"time"
)

// outcome is what pd gives: from Wait, or from an OnDone callback (which
// must come exactly once).
func outcome(t *testing.T, pd *Pending, onDone bool) error {
	t.Helper()
	if !onDone {
		return pd.Wait(context.Background())
	}
	got := make(chan error, 2)
	pd.OnDone(func(err error) { got <- err })
	var err error
	select {
	case err = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("OnDone callback not called after 10s")
	}
	select {
	case err2 := <-got:
		t.Fatalf("OnDone callback called twice (%v, then %v)", err, err2)
	default:
	}
	return err
}

// TestStart: Start queues an accepted message and leaves the wait for its
// commit to the caller; an outcome known without the commit comes at
// once; a store failure comes from Wait, never as a rejection.
func TestStart(t *testing.T) {
	tests := []struct {
		name      string
		topic     string
		payload   string
		qos       byte
		pending   bool   // Start returns a Pending
		rejection string // Start returns this rejection code
		dup       bool   // send it twice: the second is a duplicate
	}{
		{name: "data", topic: "devices/dev1/data", payload: `{"temp": 1}`, qos: 1, pending: true},
		{name: "data with msg_id twice", topic: "devices/dev1/data", payload: `{"temp": 1, "msg_id": "m1"}`, qos: 1, pending: true, dup: true},
		{name: "heartbeat", topic: "devices/dev1/heartbeat", payload: ``, qos: 1, pending: true},
		{name: "status", topic: "devices/dev1/status", payload: `{"status": "online"}`, qos: 1, pending: true},
		{name: "qos 0 does not wait", topic: "devices/dev1/data", payload: `{"temp": 1}`, qos: 0},
		{name: "rejection", topic: "devices/dev1/data", payload: `{"temp": 1000}`, qos: 1, rejection: CodeValidationFailed},
	}
	for _, tt := range tests {
		for _, onDone := range []bool{false, true} {
			name := tt.name
			if onDone {
				name += ", OnDone"
			}
			t.Run(name, func(t *testing.T) {
				h := newHarness(t, Options{})
				sends := 1
				if tt.dup {
					sends = 2
				}
				for i := range sends {
					r := req(tt.topic, tt.payload)
					r.QoS = tt.qos
					pd, err := h.p.Start(context.Background(), r)
					if tt.rejection != "" {
						var rej *Rejection
						if pd != nil || !errors.As(err, &rej) || rej.Code != tt.rejection {
							t.Fatalf("Start = %v, %v; want no Pending and rejection %s", pd, err, tt.rejection)
						}
						return
					}
					if (pd != nil) != tt.pending || err != nil {
						t.Fatalf("Start = %v, %v; want pending %v", pd, err, tt.pending)
					}
					if pd != nil {
						if err := outcome(t, pd, onDone); err != nil {
							t.Fatalf("outcome: %v", err)
						}
					}
					if i == 1 && h.counter("duplicate", "") != 1 {
						t.Errorf("duplicate counter %v, want 1", h.counter("duplicate", ""))
					}
				}
				if tt.pending {
					if n := len(h.store.all()); n != 1 {
						t.Errorf("%d changes stored after Wait, want 1", n)
					}
				}
			})
		}
	}
}

func TestStartStoreFailure(t *testing.T) {
	for _, onDone := range []bool{false, true} {
		h := newHarness(t, Options{})
		h.store.fail = errors.New("disk full")
		pd, err := h.p.Start(context.Background(), req("devices/dev1/data", `{"temp": 1}`))
		if pd == nil || err != nil {
			t.Fatalf("Start = %v, %v; want a Pending", pd, err)
		}
		err = outcome(t, pd, onDone)
		var rej *Rejection
		if err == nil || errors.As(err, &rej) {
			t.Fatalf("outcome (OnDone %v) = %v, want a plain error", onDone, err)
		}
	}
}
