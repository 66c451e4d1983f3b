package ingest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/devicetype"
)

// Finding 4: a device flooding oversized payloads gets them counted
// against its rate, and the hub writes no more refusals than the rate
// allows (plus one summed-up record per interval), whatever the code.
func TestOversizeFloodAgainstRate(t *testing.T) {
	h := newHarness(t, Options{DefaultRateLimit: devicetype.RateLimit{Rate: 1e-9, Burst: 5}})
	big := `{"temp": 1, "pad": "` + strings.Repeat("x", 70<<10) + `"}`
	codes := map[string]int{}
	for range 200 {
		_, err := h.p.Handle(context.Background(), req("devices/dev1/data", big))
		var rej *Rejection
		if !errors.As(err, &rej) {
			t.Fatalf("oversized payload: %v", err)
		}
		codes[rej.Code]++
	}
	// Five tokens: five payload_too_large, then rate_limited.
	if codes[CodePayloadTooLarge] != 5 || codes[CodeRateLimited] != 195 {
		t.Fatalf("refusals by code %v, want 5 payload_too_large and 195 rate_limited", codes)
	}
	var recorded []string
	for _, ch := range h.store.all() {
		if msgOf(ch) != nil && !msgOf(ch).Accepted {
			recorded = append(recorded, msgOf(ch).Code)
		}
	}
	// Five within the rate, and the first rate_limited of the interval.
	if len(recorded) != 6 {
		t.Fatalf("%d refusals written (%v), want 6", len(recorded), recorded)
	}

	// The next recorded refusal sums up those that were not written.
	e := h.p.limiters.get("dev1", h.p.typeInfo(mustType(t, h, "thermo")))
	e.lastReport.Store(0) // the interval has passed
	_, _ = h.p.Handle(context.Background(), req("devices/dev1/data", big))
	chs := h.store.all()
	last := chs[len(chs)-1]
	if msgOf(last) == nil || !strings.Contains(msgOf(last).Reason, "and 194 more refusals") {
		t.Fatalf("summary record: %+v", msgOf(last))
	}
	back, err := events.DecodeArgs(events.MessageRejected, last.Events[0].Args)
	if args, ok := back.(*events.Rejected); err != nil || !ok || args.Suppressed != 194 {
		t.Fatalf("summary event: %+v %v", back, err)
	}
}

// Refusals decided before the rate limit (another device's topic over
// HTTP, an undeclared type) are bounded the same way.
func TestUnmeteredRefusalsBounded(t *testing.T) {
	h := newHarness(t, Options{})
	for range 50 {
		r := req("devices/dev1/data", `{"temp": 1}`)
		r.DeviceType = "undeclared"
		if _, err := h.p.Handle(context.Background(), r); err == nil {
			t.Fatal("undeclared type accepted")
		}
	}
	n := 0
	for _, ch := range h.store.all() {
		if msgOf(ch) != nil && !msgOf(ch).Accepted {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d refusals written for a flood of 50 within a second, want 1", n)
	}
}

func mustType(t *testing.T, h *harness, name string) *devicetype.Type {
	t.Helper()
	typ, err := h.types.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return typ
}
