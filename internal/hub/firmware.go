package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/cluster"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/firmware"
)

// newFirmware builds firmware updates: the artifact directory and signing
// key (in the data directory unless firmware.dir / key_file say
// otherwise) and the rollouts not finished, loaded from the store.
func newFirmware(ctx context.Context, cfg *config.Config, st firmware.Store, c firmware.Committer, pub firmware.Publisher,
	devs firmware.Devices, remote firmware.Remote, log *slog.Logger) (*firmware.Service, error) {
	fc := cfg.Firmware
	dir, key := fc.Dir, fc.KeyFile
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "firmware")
	}
	if key == "" {
		key = filepath.Join(cfg.DataDir, "firmware-signing.key")
	}
	files, err := firmware.NewFiles(dir, key)
	if err != nil {
		return nil, fmt.Errorf("config: firmware.dir: %w", err)
	}
	svc := firmware.New(firmware.Deps{Store: st, Committer: c, Publisher: pub, Devices: devs, Files: files, Remote: remote}, firmware.Options{
		URL: fc.URL, MaxArtifactBytes: int64(fc.MaxArtifactBytes), Tick: fc.Tick, RefreshEvery: fc.RefreshEvery,
		ConnectDelay: fc.ConnectDelay, NoticeResend: fc.NoticeResend,
		StepTimeout: fc.StepTimeout, TotalTimeout: fc.TotalTimeout, HealthWindow: fc.HealthWindow, Settle: fc.Settle,
	}, log)
	// In cluster mode the node that takes job/firmware loads them.
	if remote == nil {
		if err := svc.Load(ctx); err != nil {
			return nil, err
		}
	}
	return svc, nil
}

// observeFirmware feeds the firmware service the connects and disconnects
// it follows until ctx is done.
func observeFirmware(ctx context.Context, bus *eventlog.Bus, svc *firmware.Service) error {
	sub, err := bus.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{Types: firmware.ObservedTypes}},
		func(e events.Event) { svc.Observe(ctx, e) })
	if err != nil {
		return fmt.Errorf("subscribe firmware: %w", err)
	}
	<-ctx.Done()
	sub.Close()
	return nil
}

// runFirmware is the firmware part that runs on one node (the holder of
// job/firmware in cluster mode): the scheduler and what it follows of
// the devices. In cluster mode it also applies the reports and rollouts
// committed through any node, from the event log (followFirmware), and
// answers the controls passed on by the other nodes.
func (h *Hub) runFirmware(ctx context.Context) error {
	if h.leases == nil {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return h.firmware.Run(gctx) })
		g.Go(func() error { return observeFirmware(gctx, h.bus, h.firmware) })
		return g.Wait()
	}
	// The cursor is read before the rollouts are loaded: what is committed
	// between the two is followed again (loading a rollout held already,
	// or applying a report to one loaded with it, changes nothing twice:
	// a stored cursor covers every report whose effects are stored).
	from, err := h.firmwareCursor(ctx)
	if err != nil {
		return stoppedOr(ctx, err)
	}
	if err := h.firmware.Load(ctx); err != nil {
		return stoppedOr(ctx, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	stop, err := h.fanout.Serve(firmwareControlKind, func(req []byte) []byte { return h.answerControl(gctx, req) })
	if err != nil {
		return err
	}
	defer stop()
	g.Go(func() error { return h.firmware.Run(gctx) })
	g.Go(func() error { return h.followFirmware(gctx, from) })
	g.Go(func() error {
		h.firmware.Lead(gctx)
		return nil
	})
	return g.Wait()
}

// firmwareCursorStore keeps how far the scheduler's node followed the
// event log (the PostgreSQL store).
type firmwareCursorStore interface {
	FirmwareCursor(ctx context.Context) (int64, bool, error)
}

// firmwareCursorEvery is how often the owner stores its cursor when no
// report moved it (so that a new owner does not go through a long tail).
const firmwareCursorEvery = 5 * time.Second

// firmwareCursor returns where the scheduler's node follows the event
// log from: its stored cursor, or for the first owner ever the end of
// the log (the rollouts and updates so far are in the store).
func (h *Hub) firmwareCursor(ctx context.Context) (int64, error) {
	from, ok, err := h.store.(firmwareCursorStore).FirmwareCursor(ctx)
	if err != nil || ok {
		return from, err
	}
	if from, err = h.store.LastSeq(ctx); err != nil {
		return 0, fmt.Errorf("firmware cursor: %w", err)
	}
	return from, nil
}

// followFirmware feeds the scheduler, from the cursor on, the events it
// follows in cluster mode (firmware.FollowedTypes): every report and
// rollout committed through any node, once, in order, across a change of
// owner.
func (h *Hub) followFirmware(ctx context.Context, from int64) error {
	opts := eventlog.SubscribeOptions{From: from, Buffer: 16384, Filter: events.Filter{Types: firmware.FollowedTypes}}
	if from == 0 {
		opts.From = -1 // the whole (empty) log
	}
	sub, err := h.bus.Subscribe(opts, func(e events.Event) { h.firmware.Follow(ctx, e) })
	if err != nil {
		return fmt.Errorf("subscribe firmware: %w", err)
	}
	defer sub.Close()
	saved := from
	t := time.NewTicker(firmwareCursorEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if seq := sub.LastSeq(); seq > saved {
				if err := h.firmware.SaveCursor(ctx, seq); err != nil {
					if ctx.Err() == nil {
						h.log.Warn("firmware cursor not stored", "err", err)
					}
					continue
				}
				saved = seq
			}
		}
	}
}

// stoppedOr returns err unless ctx is done (a node stopping while a part
// starts is no failure).
func stoppedOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// firmwareControlKind names the requests that pass a rollout's pause,
// resume or cancel to the node running the scheduler.
const firmwareControlKind = "firmware-control"

type controlRequest struct {
	Op      firmware.ControlOp `json:"op"`
	Rollout string             `json:"rollout"`
}

// controlAnswer carries the owner's answer; Code names the firmware error
// (errorCodes) so that the asking node's API answers as the owner's would.
type controlAnswer struct {
	Progress *firmware.Progress `json:"progress,omitempty"`
	Code     string             `json:"code,omitempty"`
	Error    string             `json:"error,omitempty"`
}

var controlErrors = map[string]error{
	"not_found": firmware.ErrNotFound, "conflict": firmware.ErrConflict, "invalid": firmware.ErrInvalid, "unavailable": firmware.ErrUnavailable,
}

// remoteError is an error of the owner, as its node said it.
type remoteError struct {
	msg string
	err error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.err }

// answerControl applies a control passed on by another node (this node
// runs the scheduler).
func (h *Hub) answerControl(ctx context.Context, req []byte) []byte {
	var r controlRequest
	var ans controlAnswer
	if err := json.Unmarshal(req, &r); err != nil {
		ans.Code, ans.Error = "invalid", fmt.Sprintf("undecodable control: %v", err)
	} else {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := h.firmware.Control(cctx, r.Op, r.Rollout)
		cancel()
		ans.Progress = p
		if err != nil {
			ans.Error = err.Error()
			for code, sentinel := range controlErrors {
				if errors.Is(err, sentinel) {
					ans.Code = code
				}
			}
		}
	}
	b, _ := json.Marshal(ans) // plain structs
	return b
}

// controlWait is how long a control waits for a node running the
// scheduler: longer than a clean handover of job/firmware (cluster.renew).
const controlWait = 10 * time.Second

// firmwareRemote passes controls to the node running the scheduler.
type firmwareRemote struct{ h *Hub }

func (r firmwareRemote) Control(ctx context.Context, op firmware.ControlOp, rolloutID string) (*firmware.Progress, error) {
	req, _ := json.Marshal(controlRequest{Op: op, Rollout: rolloutID})
	ctx, cancel := context.WithTimeout(ctx, controlWait)
	defer cancel()
	for {
		b, err := r.h.fanout.Request(ctx, firmwareControlKind, req)
		var ans controlAnswer
		if err == nil {
			if err = json.Unmarshal(b, &ans); err != nil {
				return nil, fmt.Errorf("%s rollout %s: answer: %w", op, rolloutID, err)
			}
			if ans.Error == "" {
				return ans.Progress, nil
			}
			if ans.Code != "unavailable" {
				if sentinel, ok := controlErrors[ans.Code]; ok {
					return nil, &remoteError{ans.Error, sentinel}
				}
				return nil, fmt.Errorf("%s rollout %s: %s", op, rolloutID, ans.Error)
			}
		} else if !errors.Is(err, cluster.ErrNoServer) {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s rollout %s: %w", op, rolloutID, firmware.ErrUnavailable)
			}
			return nil, fmt.Errorf("%s rollout %s: %w", op, rolloutID, err)
		}
		// No owner now (job/firmware moving between nodes): again, shortly.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s rollout %s: %w", op, rolloutID, firmware.ErrUnavailable)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
