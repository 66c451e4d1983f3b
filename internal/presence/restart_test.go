package presence

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/registry"
)

// listing is a store's device list: connected and online filters, paged
// by id.
type listing []registry.Device

func (l listing) ListDevices(_ context.Context, o registry.ListOptions) ([]registry.Device, error) {
	var out []registry.Device
	for _, d := range l {
		if d.ID <= o.After || (o.Connected != nil && d.Connected != *o.Connected) || (o.Status != "" && d.Status != o.Status) {
			continue
		}
		if out = append(out, d); len(out) == o.Limit {
			break
		}
	}
	return out, nil
}

// Devices left connected or online by an unclean stop are set offline
// once each, across pages; the others are left alone.
func TestResetAfterStart(t *testing.T) {
	var devs listing
	want := map[string]bool{}
	for i := range resetPage + 5 { // more than a page of each kind
		d := registry.Device{ID: fmt.Sprintf("d%05d", i), Type: "sensor", Status: StatusOffline}
		switch i % 3 {
		case 0:
			d.Connected = true
		case 1:
			d.Connected, d.Status = true, StatusOnline
		}
		if d.Connected || d.Status == StatusOnline {
			want[d.ID] = true
		}
		devs = append(devs, d)
	}
	devs = slices.Concat(devs, listing{{ID: "z-online", Type: "sensor", Status: StatusOnline}})
	want["z-online"] = true

	h := newHarness(t, true)
	n, err := h.tr.ResetAfterStart(context.Background(), devs)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Fatalf("reset %d devices, want %d", n, len(want))
	}
	got := map[string]int{}
	for _, l := range h.pub.lines() {
		if id, ok := strings.CutSuffix(l, " disconnected g0 hub_restart"); ok {
			got[id]++
		}
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("%s: %d hub_restart disconnects, want 1", id, got[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d devices reset, want %d", len(got), len(want))
	}

	// A second start finds nothing left (the store now says offline).
	n, err = h.tr.ResetAfterStart(context.Background(), listing{{ID: "d1", Status: StatusOffline}})
	if err != nil || n != 0 {
		t.Fatalf("second reset: %d, %v", n, err)
	}
}
