package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
)

// TestFirmwareControlAndLateJoiners: a rollout to a group at one device
// a minute, including late joiners, is paused, resumed and canceled by
// an operator: a device that joins the group while it runs is added to
// it; canceling ends every device not finished; a canceled rollout
// cannot be resumed.
func TestFirmwareControlAndLateJoiners(t *testing.T) {
	th := startHub(t, "firmware: {tick: 20ms, refresh_every: 50ms}\n")
	th.do(t, "POST", "/api/v1/groups", map[string]any{"id": "roof", "name": "roof"}, nil)
	add := func(id string) {
		if code := th.do(t, "POST", "/api/v1/devices", map[string]any{"id": id, "type": "WeatherStation", "group": "roof"}, nil); code != 201 {
			t.Fatalf("provision %s: %d", id, code)
		}
	}
	for _, id := range []string{"roof-1", "roof-2", "roof-3"} {
		add(id)
	}
	api, r := fwSetup(t, th, client.RolloutRequest{Group: "roof", IncludeLate: true, MaxPerMinute: 1, StepTimeout: "10m"})
	ctx := context.Background()
	counts := func(want map[string]int, status string) func() error {
		return func() error {
			got, err := api.GetRollout(ctx, r.ID)
			if err != nil {
				return err
			}
			if got.Status != status {
				return fmt.Errorf("rollout %s, want %s", got.Status, status)
			}
			for st, n := range want {
				if got.Counts[st] != n {
					return fmt.Errorf("counts %v, want %v", got.Counts, want)
				}
			}
			return nil
		}
	}
	// One device a minute: the first is notified, two wait.
	eventually.CheckFor(t, 30*time.Second, 10*time.Millisecond, counts(map[string]int{"notified": 1, "queued": 2}, "running"))

	if got, err := api.RolloutAction(ctx, r.ID, "pause"); err != nil || got.Status != "paused" {
		t.Fatalf("pause: %+v %v", got, err)
	}
	var ae *client.Error
	if _, err := api.RolloutAction(ctx, r.ID, "pause"); !errors.As(err, &ae) || ae.Status != 409 {
		t.Fatalf("pause a paused rollout: %v", err)
	}
	if got, err := api.RolloutAction(ctx, r.ID, "resume"); err != nil || got.Status != "running" {
		t.Fatalf("resume: %+v %v", got, err)
	}

	// A device that joins the group is added to the running rollout.
	add("roof-4")
	// (Whether a second device started meanwhile depends on how long this
	// took: a minute passing is not this test's business.)
	eventually.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		got, err := api.GetRollout(ctx, r.ID)
		if err != nil {
			return err
		}
		if got.Total != 4 || got.Counts["notified"]+got.Counts["queued"] != 4 {
			return fmt.Errorf("rollout of %d: %v", got.Total, got.Counts)
		}
		return nil
	})
	if u := updateOf(t, api, r.ID, "roof-4"); u.State != "queued" || !strings.Contains(u.Message, "joined the target") {
		t.Fatalf("late joiner %+v", u)
	}

	if got, err := api.RolloutAction(ctx, r.ID, "cancel"); err != nil || got.Status != "canceled" {
		t.Fatalf("cancel: %+v %v", got, err)
	}
	if err := counts(map[string]int{"canceled": 4}, "canceled")(); err != nil {
		t.Fatal(err)
	}
	if _, err := api.RolloutAction(ctx, r.ID, "resume"); !errors.As(err, &ae) || ae.Status != 409 {
		t.Fatalf("resume a canceled rollout: %v", err)
	}
}
