package apitest

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/firmware"
)

// Firmware is an in-memory firmware service for the API's tests: artifact
// fw_1 (WeatherStation) and rollout ro_1. The real service is tested in
// internal/firmware, internal/store/storetest and end to end in sdk.
type Firmware struct {
	mu        sync.Mutex
	artifacts map[string]firmware.Artifact
	rollouts  map[string]*firmware.Progress
	content   []byte
	Reports   []firmware.Report
}

func newFirmware() *Firmware {
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &Firmware{artifacts: map[string]firmware.Artifact{}, rollouts: map[string]*firmware.Progress{}, content: []byte("firmware bytes")}
	f.artifacts["fw_1"] = firmware.Artifact{ID: "fw_1", Version: "1.0", Type: "WeatherStation", Size: int64(len(f.content)), SHA256: "ab", SignedBy: "hub", CreatedAt: at}
	f.rollouts["ro_1"] = &firmware.Progress{Rollout: firmware.Rollout{ID: "ro_1", Spec: firmware.Spec{ArtifactID: "fw_1"}, Status: firmware.RolloutRunning,
		Version: "1.0", DeviceType: "WeatherStation", CreatedAt: at, UpdatedAt: at}, Counts: map[firmware.State]int{firmware.Queued: 1}, Total: 1}
	return f
}

func (f *Firmware) PublicKey() (string, error) { return "AAAA", nil }

func (f *Firmware) UploadArtifact(ctx context.Context, r io.Reader, u firmware.Upload) (*firmware.Artifact, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a := firmware.Artifact{ID: fmt.Sprintf("fw_%d", len(f.artifacts)+1), Version: u.Version, Type: u.Type, Size: int64(len(b)), SignedBy: "hub"}
	f.artifacts[a.ID] = a
	return &a, nil
}

func (f *Firmware) ListArtifacts(ctx context.Context) ([]firmware.Artifact, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []firmware.Artifact
	for _, a := range f.artifacts {
		out = append(out, a)
	}
	return out, nil
}

func (f *Firmware) GetArtifact(ctx context.Context, id string) (*firmware.Artifact, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.artifacts[id]
	if !ok {
		return nil, fmt.Errorf("artifact %s: %w", id, firmware.ErrNotFound)
	}
	return &a, nil
}

func (f *Firmware) DeleteArtifact(ctx context.Context, id string) error {
	_, err := f.GetArtifact(ctx, id)
	return err
}

// OpenArtifact writes the artifact's bytes to a temporary file (removed
// once opened, so only the handle keeps it).
func (f *Firmware) OpenArtifact(ctx context.Context, id, deviceType string) (*firmware.Artifact, *os.File, error) {
	a, err := f.GetArtifact(ctx, id)
	if err != nil || a.Type != deviceType {
		return nil, nil, fmt.Errorf("artifact %s: %w", id, firmware.ErrNotFound)
	}
	tmp, err := os.CreateTemp("", "apitest-fw-*")
	if err != nil {
		return nil, nil, err
	}
	os.Remove(tmp.Name())
	if _, err := tmp.Write(f.content); err != nil {
		tmp.Close()
		return nil, nil, err
	}
	return a, tmp, nil
}

func (f *Firmware) StartRollout(ctx context.Context, sp firmware.Spec) (*firmware.Progress, error) {
	if _, err := f.GetArtifact(ctx, sp.ArtifactID); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &firmware.Progress{Rollout: firmware.Rollout{ID: fmt.Sprintf("ro_%d", len(f.rollouts)+1), Spec: sp, Status: firmware.RolloutRunning}, Counts: map[firmware.State]int{}}
	f.rollouts[p.ID] = p
	return p, nil
}

func (f *Firmware) ListRollouts(ctx context.Context) ([]firmware.Progress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []firmware.Progress
	for _, p := range f.rollouts {
		out = append(out, *p)
	}
	return out, nil
}

func (f *Firmware) GetRollout(ctx context.Context, id string) (*firmware.Progress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.rollouts[id]
	if !ok {
		return nil, fmt.Errorf("rollout %s: %w", id, firmware.ErrNotFound)
	}
	c := *p
	return &c, nil
}

func (f *Firmware) RolloutDevices(ctx context.Context, id string) ([]firmware.DeviceUpdate, error) {
	if _, err := f.GetRollout(ctx, id); err != nil {
		return nil, err
	}
	return []firmware.DeviceUpdate{{RolloutID: id, DeviceID: "ws-1", DeviceType: "WeatherStation", State: firmware.Queued}}, nil
}

func (f *Firmware) setStatus(id string, st firmware.RolloutStatus) (*firmware.Progress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.rollouts[id]
	if !ok {
		return nil, fmt.Errorf("rollout %s: %w", id, firmware.ErrNotFound)
	}
	p.Status = st
	c := *p
	return &c, nil
}

func (f *Firmware) Pause(ctx context.Context, id string) (*firmware.Progress, error) {
	return f.setStatus(id, firmware.RolloutPaused)
}

func (f *Firmware) Resume(ctx context.Context, id string) (*firmware.Progress, error) {
	return f.setStatus(id, firmware.RolloutRunning)
}

func (f *Firmware) Cancel(ctx context.Context, id string) (*firmware.Progress, error) {
	return f.setStatus(id, firmware.RolloutCanceled)
}

func (f *Firmware) History(ctx context.Context, deviceID, rolloutID string) ([]firmware.HistoryEntry, error) {
	return []firmware.HistoryEntry{{RolloutID: "ro_1", DeviceID: deviceID, State: firmware.Notified}}, nil
}

func (f *Firmware) RecordStatus(ctx context.Context, deviceID, deviceType string, r firmware.Report, msg commit.Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Reports = append(f.Reports, r)
	return nil
}
