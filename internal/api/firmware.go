package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/firmware"
)

// Firmware runs firmware artifacts and rollouts (*firmware.Service).
type Firmware interface {
	PublicKey() (string, error)
	UploadArtifact(ctx context.Context, r io.Reader, u firmware.Upload) (*firmware.Artifact, error)
	ListArtifacts(ctx context.Context) ([]firmware.Artifact, error)
	GetArtifact(ctx context.Context, id string) (*firmware.Artifact, error)
	DeleteArtifact(ctx context.Context, id string) error
	OpenArtifact(ctx context.Context, id, deviceType string) (*firmware.Artifact, *os.File, error)
	StartRollout(ctx context.Context, sp firmware.Spec) (*firmware.Progress, error)
	ListRollouts(ctx context.Context) ([]firmware.Progress, error)
	GetRollout(ctx context.Context, id string) (*firmware.Progress, error)
	RolloutDevices(ctx context.Context, id string) ([]firmware.DeviceUpdate, error)
	Pause(ctx context.Context, id string) (*firmware.Progress, error)
	Resume(ctx context.Context, id string) (*firmware.Progress, error)
	Cancel(ctx context.Context, id string) (*firmware.Progress, error)
	History(ctx context.Context, deviceID, rolloutID string) ([]firmware.HistoryEntry, error)
	RecordStatus(ctx context.Context, deviceID, deviceType string, r firmware.Report, msg commit.Op) error
}

func (a *API) firmware() (Firmware, error) {
	if a.deps.Firmware == nil {
		return nil, errNotImplemented
	}
	return a.deps.Firmware, nil
}

// firmwareError maps the errors of the firmware domain.
func firmwareError(err error) (int, ErrorDetail, bool) {
	switch {
	case errors.Is(err, firmware.ErrNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}, true
	case errors.Is(err, firmware.ErrInUse):
		return http.StatusConflict, ErrorDetail{Code: "artifact_in_use", Message: err.Error()}, true
	case errors.Is(err, firmware.ErrConflict):
		return http.StatusConflict, ErrorDetail{Code: "conflict", Message: err.Error()}, true
	case errors.Is(err, firmware.ErrBadSignature):
		return http.StatusBadRequest, ErrorDetail{Code: "bad_signature", Message: err.Error(), Field: "signature"}, true
	case errors.Is(err, firmware.ErrNoDevices):
		return http.StatusUnprocessableEntity, ErrorDetail{Code: "no_devices", Message: err.Error()}, true
	case errors.Is(err, firmware.ErrInvalid):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error()}, true
	case errors.Is(err, firmware.ErrUnavailable):
		return http.StatusServiceUnavailable, ErrorDetail{Code: "unavailable", Message: err.Error()}, true
	}
	var re *firmware.ReportError
	if errors.As(err, &re) {
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: re.Error(), Field: re.Field}, true
	}
	return 0, ErrorDetail{}, false
}

func (a *API) registerFirmware() {
	tags := []string{"firmware"}
	register(a, permViewer, huma.Operation{OperationID: "getFirmwareKey", Method: http.MethodGet, Path: "/api/v1/firmware/key", Tags: tags,
		Summary: "Get the hub's public firmware signing key",
		Description: "The ed25519 public key (base64 of its 32 bytes) that verifies the signatures the hub makes of artifacts: " +
			"bake it into devices. The key is created on first use."}, a.firmwareKey)
	op := huma.Operation{OperationID: "uploadFirmwareArtifact", Method: http.MethodPost, Path: "/api/v1/firmware/artifacts", Tags: tags,
		Summary: "Upload a firmware artifact",
		Description: "The request body is the file (application/octet-stream), streamed to the artifact directory. The hub computes its " +
			"size and SHA-256 and signs the SHA-256 (32 bytes) with its ed25519 key, or verifies the vendor's signature given in " +
			"signature with public_key (both base64) and keeps it. 400 bad_signature when it does not verify.",
		DefaultStatus: http.StatusCreated,
		RequestBody: &huma.RequestBody{Required: true, Description: "The firmware file.",
			Content: map[string]*huma.MediaType{"application/octet-stream": {Schema: &huma.Schema{Type: "string", Format: "binary"}}}}}
	register(a, permOperator, op, a.uploadArtifact)
	register(a, permViewer, huma.Operation{OperationID: "listFirmwareArtifacts", Method: http.MethodGet, Path: "/api/v1/firmware/artifacts", Tags: tags,
		Summary: "List firmware artifacts"}, a.listArtifacts)
	register(a, permViewer, huma.Operation{OperationID: "getFirmwareArtifact", Method: http.MethodGet, Path: "/api/v1/firmware/artifacts/{id}", Tags: tags,
		Summary: "Get a firmware artifact"}, a.getArtifact)
	register(a, permOperator, huma.Operation{OperationID: "deleteFirmwareArtifact", Method: http.MethodDelete, Path: "/api/v1/firmware/artifacts/{id}", Tags: tags,
		Summary:     "Delete a firmware artifact; answers it as it was",
		Description: "Refused with 409 artifact_in_use while a rollout that is not completed or canceled uses it. Its finished rollouts go with it; the devices' update history stays."}, a.deleteArtifact)
	register(a, permOperator, huma.Operation{OperationID: "startRollout", Method: http.MethodPost, Path: "/api/v1/firmware/rollouts", Tags: tags,
		Summary: "Start a rollout", DefaultStatus: http.StatusCreated,
		Description: "Sends an artifact to a target: a group, a filter (type, group, hardware) or a list of device ids. Devices of another " +
			"type than the artifact's, or another hardware version than its hardware, are left out; 422 no_devices when none is left."}, a.startRollout)
	register(a, permViewer, huma.Operation{OperationID: "listRollouts", Method: http.MethodGet, Path: "/api/v1/firmware/rollouts", Tags: tags,
		Summary: "List rollouts with their progress"}, a.listRollouts)
	register(a, permViewer, huma.Operation{OperationID: "getRollout", Method: http.MethodGet, Path: "/api/v1/firmware/rollouts/{id}", Tags: tags,
		Summary: "Get a rollout with its devices counted by state"}, a.getRollout)
	register(a, permViewer, huma.Operation{OperationID: "listRolloutDevices", Method: http.MethodGet, Path: "/api/v1/firmware/rollouts/{id}/devices", Tags: tags,
		Summary: "List a rollout's device updates"}, a.rolloutDevices)
	for _, c := range []struct {
		name, summary string
		fn            func(context.Context, string) (*firmware.Progress, error)
	}{
		{"pause", "Pause a rollout: no device is started until it is resumed", func(ctx context.Context, id string) (*firmware.Progress, error) {
			return a.deps.Firmware.Pause(ctx, id)
		}},
		{"resume", "Resume a paused or aborted rollout; the abort rule counts from here", func(ctx context.Context, id string) (*firmware.Progress, error) {
			return a.deps.Firmware.Resume(ctx, id)
		}},
		{"cancel", "Cancel a rollout: devices not finished are canceled", func(ctx context.Context, id string) (*firmware.Progress, error) {
			return a.deps.Firmware.Cancel(ctx, id)
		}},
	} {
		fn := c.fn
		register(a, permOperator, huma.Operation{OperationID: c.name + "Rollout", Method: http.MethodPost, Path: "/api/v1/firmware/rollouts/{id}/" + c.name, Tags: tags,
			Summary: c.summary}, func(ctx context.Context, in *RolloutIDInput) (*struct{ Body RolloutView }, error) {
			if _, err := a.firmware(); err != nil {
				return nil, err
			}
			p, err := fn(ctx, in.ID)
			if err != nil {
				return nil, err
			}
			return &struct{ Body RolloutView }{Body: rolloutView(p)}, nil
		})
	}
	register(a, permViewer, huma.Operation{OperationID: "getDeviceFirmwareHistory", Method: http.MethodGet, Path: "/api/v1/devices/{id}/firmware/history", Tags: tags,
		Summary: "List the states a device's firmware updates went through, oldest first"}, a.firmwareHistory)

	dtags := []string{"device"}
	register(a, permDevice, huma.Operation{OperationID: "downloadFirmware", Method: http.MethodGet, Path: "/api/v1/device/firmware/{id}", Tags: dtags,
		Summary: "Download a firmware artifact",
		Description: "Streams the file; Range requests (206) resume an interrupted download, If-Range with the ETag (the SHA-256) makes " +
			"sure the parts are of one file. Only artifacts of the device's type.",
		Responses: map[string]*huma.Response{
			"200":     {Description: "The file.", Content: map[string]*huma.MediaType{"application/octet-stream": {Schema: &huma.Schema{Type: "string", Format: "binary"}}}},
			"206":     {Description: "The requested range of the file."},
			"default": {Description: "Error", Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Ref: "#/components/schemas/ErrorResponse"}}}},
		}}, a.downloadFirmware)
	register(a, permDevice, huma.Operation{OperationID: "postDeviceFirmwareStatus", Method: http.MethodPost, Path: "/api/v1/device/firmware/status", Tags: dtags,
		Summary:     "Report firmware update progress",
		Description: "Same payload as on devices/{id}/firmware/status."}, a.deviceFirmwareStatus)
}

// FirmwareKey is the hub's public signing key.
type FirmwareKey struct {
	PublicKey string `json:"public_key" doc:"ed25519 public key, base64 of its 32 bytes."`
	Algorithm string `json:"algorithm" example:"ed25519"`
	Signs     string `json:"signs" doc:"What a signature covers."`
}

func (a *API) firmwareKey(ctx context.Context, _ *struct{}) (*struct{ Body FirmwareKey }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	k, err := f.PublicKey()
	if err != nil {
		return nil, err
	}
	return &struct{ Body FirmwareKey }{Body: FirmwareKey{PublicKey: k, Algorithm: "ed25519", Signs: "the 32 bytes of the file's SHA-256"}}, nil
}

// UploadInput names an uploaded artifact.
type UploadInput struct {
	Version   string `query:"version" required:"true" minLength:"1" maxLength:"64" doc:"The firmware's version."`
	Type      string `query:"type" required:"true" minLength:"1" maxLength:"64" doc:"The device type it is built for."`
	Hardware  string `query:"hardware" maxLength:"64" doc:"The only hardware version it runs on (optional)."`
	Filename  string `query:"filename" maxLength:"255"`
	Signature string `query:"signature" doc:"A vendor's ed25519 signature of the file's SHA-256 (base64); with public_key."`
	PublicKey string `query:"public_key" doc:"The vendor's ed25519 public key (base64)."`
}

func (a *API) uploadArtifact(ctx context.Context, in *UploadInput) (*struct{ Body firmware.Artifact }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	r := infoFrom(ctx).r
	if r == nil || r.Body == nil {
		return nil, invalidArg("body", "the file is required")
	}
	if a.deps.Types != nil && !knownType(a.deps.Types, in.Type) {
		return nil, invalidArg("type", "unknown device type %q", in.Type)
	}
	art, err := f.UploadArtifact(ctx, r.Body, firmware.Upload{Version: in.Version, Type: in.Type, Hardware: in.Hardware,
		Filename: in.Filename, Signature: in.Signature, PublicKey: in.PublicKey})
	if err != nil {
		return nil, err
	}
	setTarget(ctx, art.ID)
	return &struct{ Body firmware.Artifact }{Body: *art}, nil
}

// ArtifactList is the answer of listFirmwareArtifacts.
type ArtifactList struct {
	Artifacts []firmware.Artifact `json:"artifacts"`
}

func (a *API) listArtifacts(ctx context.Context, _ *struct{}) (*struct{ Body ArtifactList }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	l, err := f.ListArtifacts(ctx)
	if err != nil {
		return nil, err
	}
	if l == nil {
		l = []firmware.Artifact{}
	}
	return &struct{ Body ArtifactList }{Body: ArtifactList{Artifacts: l}}, nil
}

// ArtifactIDInput is an artifact id in a path.
type ArtifactIDInput struct {
	ID string `path:"id" maxLength:"64"`
}

func (a *API) getArtifact(ctx context.Context, in *ArtifactIDInput) (*struct{ Body firmware.Artifact }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	art, err := f.GetArtifact(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &struct{ Body firmware.Artifact }{Body: *art}, nil
}

func (a *API) deleteArtifact(ctx context.Context, in *ArtifactIDInput) (*struct{ Body firmware.Artifact }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.ID)
	art, err := f.GetArtifact(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	if err := f.DeleteArtifact(ctx, in.ID); err != nil {
		return nil, err
	}
	return &struct{ Body firmware.Artifact }{Body: *art}, nil
}

// RolloutRequest starts a rollout. Durations are Go durations ("90s",
// "10m"); empty ones take the hub's defaults (firmware.* in the config).
type RolloutRequest struct {
	ArtifactID string   `json:"artifact_id" minLength:"1" maxLength:"64"`
	Group      string   `json:"group,omitempty" doc:"Target: the devices of this group (with type and hardware: a filter)."`
	Type       string   `json:"type,omitempty" doc:"Filter: device type (default: the artifact's)."`
	Hardware   string   `json:"hardware,omitempty" doc:"Filter: hardware version."`
	DeviceIDs  []string `json:"device_ids,omitempty" maxItems:"100000" doc:"Target: these devices (instead of a group or filter)."`
	// IncludeLate: see firmware.Spec.
	IncludeLate         bool     `json:"include_late,omitempty" doc:"Devices that join the group (or match the filter) later are added; the rollout then runs until canceled."`
	MaxPerMinute        int      `json:"max_per_minute,omitempty" minimum:"0" doc:"Devices started per minute at most (0: no bound)."`
	RateIncreaseAfter   int      `json:"rate_increase_after,omitempty" minimum:"0" doc:"Multiply the rate by rate_increase_factor every so many updated devices."`
	RateIncreaseFactor  float64  `json:"rate_increase_factor,omitempty" minimum:"0" maximum:"5"`
	RateIncreaseMax     int      `json:"rate_increase_max,omitempty" minimum:"0" doc:"The rate's bound when it increases."`
	Phases              []int    `json:"phases,omitempty" maxItems:"20" doc:"Cumulative percentages of the target, e.g. [10, 50, 100]; a phase starts when the previous one finished."`
	WindowStart         string   `json:"window_start,omitempty" pattern:"^[0-2][0-9]:[0-5][0-9]$" doc:"Maintenance window start, HH:MM UTC."`
	WindowEnd           string   `json:"window_end,omitempty" pattern:"^[0-2][0-9]:[0-5][0-9]$"`
	StepTimeout         string   `json:"step_timeout,omitempty" doc:"Bound of each step from notified to installing."`
	TotalTimeout        string   `json:"total_timeout,omitempty" doc:"Bound of a device's whole update."`
	Retries             int      `json:"retries,omitempty" minimum:"0" maximum:"100"`
	RetryOn             []string `json:"retry_on,omitempty" enum:"failed,timed_out" doc:"Outcomes retried (default both)."`
	AbortFailurePercent float64  `json:"abort_failure_percent,omitempty" minimum:"0" maximum:"100"`
	AbortMinDevices     int      `json:"abort_min_devices,omitempty" minimum:"0"`
	AbortFirstPhase     bool     `json:"abort_on_first_phase_failure,omitempty"`
	HealthWindow        string   `json:"health_window,omitempty" doc:"After rebooting, the device must confirm the new version within this."`
	Settle              string   `json:"settle,omitempty" doc:"And stay connected this long after confirming."`
}

func (b *RolloutRequest) spec() (firmware.Spec, error) {
	sp := firmware.Spec{ArtifactID: b.ArtifactID, Target: firmware.Target{Group: b.Group, Type: b.Type, Hardware: b.Hardware, DeviceIDs: b.DeviceIDs},
		IncludeLate: b.IncludeLate, MaxPerMinute: b.MaxPerMinute, Phases: b.Phases, Retries: b.Retries,
		AbortFailurePercent: b.AbortFailurePercent, AbortMinDevices: b.AbortMinDevices, AbortOnFirstPhaseFailure: b.AbortFirstPhase}
	if b.RateIncreaseAfter > 0 || b.RateIncreaseFactor > 0 {
		sp.RateIncrease = &firmware.RateIncrease{AfterSuccesses: b.RateIncreaseAfter, Factor: b.RateIncreaseFactor, MaxPerMinute: b.RateIncreaseMax}
	}
	if b.WindowStart != "" || b.WindowEnd != "" {
		sp.Window = &firmware.Window{Start: b.WindowStart, End: b.WindowEnd}
	}
	for _, o := range b.RetryOn {
		switch o {
		case "failed":
			sp.RetryFailed = true
		case "timed_out":
			sp.RetryTimedOut = true
		}
	}
	for _, d := range []struct {
		name, v string
		dst     *time.Duration
	}{{"step_timeout", b.StepTimeout, &sp.StepTimeout}, {"total_timeout", b.TotalTimeout, &sp.TotalTimeout},
		{"health_window", b.HealthWindow, &sp.HealthWindow}, {"settle", b.Settle, &sp.Settle}} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v <= 0 {
			return sp, invalidArg(d.name, "must be a positive duration such as 90s or 10m, got %q", d.v)
		}
		*d.dst = v
	}
	return sp, nil
}

// RolloutView is a rollout with its progress.
type RolloutView struct {
	ID                  string          `json:"id"`
	ArtifactID          string          `json:"artifact_id"`
	Version             string          `json:"version"`
	DeviceType          string          `json:"device_type"`
	Status              string          `json:"status" enum:"running,paused,aborted,canceled,completed"`
	Reason              string          `json:"reason,omitempty"`
	Total               int             `json:"total" doc:"Devices in the rollout."`
	Counts              map[string]int  `json:"counts" doc:"Devices by state."`
	Target              firmware.Target `json:"target"`
	IncludeLate         bool            `json:"include_late"`
	MaxPerMinute        int             `json:"max_per_minute"`
	Phases              []int           `json:"phases,omitempty"`
	StepTimeout         string          `json:"step_timeout"`
	TotalTimeout        string          `json:"total_timeout"`
	HealthWindow        string          `json:"health_window"`
	Settle              string          `json:"settle"`
	Retries             int             `json:"retries"`
	AbortFailurePercent float64         `json:"abort_failure_percent,omitempty"`
	AbortMinDevices     int             `json:"abort_min_devices,omitempty"`
	CreatedAt           time.Time       `json:"created_at"`
	UpdatedAt           time.Time       `json:"updated_at"`
}

func rolloutView(p *firmware.Progress) RolloutView {
	sp := p.Spec
	v := RolloutView{ID: p.ID, ArtifactID: sp.ArtifactID, Version: p.Version, DeviceType: p.DeviceType, Status: string(p.Status), Reason: p.Reason,
		Total: p.Total, Counts: map[string]int{}, Target: sp.Target, IncludeLate: sp.IncludeLate, MaxPerMinute: sp.MaxPerMinute, Phases: sp.Phases,
		StepTimeout: sp.StepTimeout.String(), TotalTimeout: sp.TotalTimeout.String(), HealthWindow: sp.HealthWindow.String(), Settle: sp.Settle.String(),
		Retries: sp.Retries, AbortFailurePercent: sp.AbortFailurePercent, AbortMinDevices: sp.AbortMinDevices, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
	for s, n := range p.Counts {
		v.Counts[string(s)] = n
	}
	return v
}

func (a *API) startRollout(ctx context.Context, in *struct{ Body RolloutRequest }) (*struct{ Body RolloutView }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	sp, err := in.Body.spec()
	if err != nil {
		return nil, err
	}
	p, err := f.StartRollout(ctx, sp)
	if err != nil {
		return nil, err
	}
	setTarget(ctx, p.ID)
	return &struct{ Body RolloutView }{Body: rolloutView(p)}, nil
}

// RolloutList is the answer of listRollouts.
type RolloutList struct {
	Rollouts []RolloutView `json:"rollouts"`
}

func (a *API) listRollouts(ctx context.Context, _ *struct{}) (*struct{ Body RolloutList }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	ps, err := f.ListRollouts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]RolloutView, 0, len(ps))
	for i := range ps {
		out = append(out, rolloutView(&ps[i]))
	}
	return &struct{ Body RolloutList }{Body: RolloutList{Rollouts: out}}, nil
}

// RolloutIDInput is a rollout id in a path.
type RolloutIDInput struct {
	ID string `path:"id" maxLength:"64"`
}

func (a *API) getRollout(ctx context.Context, in *RolloutIDInput) (*struct{ Body RolloutView }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	p, err := f.GetRollout(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &struct{ Body RolloutView }{Body: rolloutView(p)}, nil
}

// RolloutDeviceList is the answer of listRolloutDevices.
type RolloutDeviceList struct {
	Devices []firmware.DeviceUpdate `json:"devices"`
}

func (a *API) rolloutDevices(ctx context.Context, in *RolloutIDInput) (*struct{ Body RolloutDeviceList }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	us, err := f.RolloutDevices(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	if us == nil {
		us = []firmware.DeviceUpdate{}
	}
	return &struct{ Body RolloutDeviceList }{Body: RolloutDeviceList{Devices: us}}, nil
}

// FirmwareHistoryInput names a device and optionally a rollout.
type FirmwareHistoryInput struct {
	ID      string `path:"id"`
	Rollout string `query:"rollout" doc:"Only this rollout."`
}

// FirmwareHistory is the answer of getDeviceFirmwareHistory.
type FirmwareHistory struct {
	History []firmware.HistoryEntry `json:"history"`
}

func (a *API) firmwareHistory(ctx context.Context, in *FirmwareHistoryInput) (*struct{ Body FirmwareHistory }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	h, err := f.History(ctx, in.ID, in.Rollout)
	if err != nil {
		return nil, err
	}
	if h == nil {
		h = []firmware.HistoryEntry{}
	}
	return &struct{ Body FirmwareHistory }{Body: FirmwareHistory{History: h}}, nil
}

type streamOutput struct{ Body func(huma.Context) }

func (a *API) downloadFirmware(ctx context.Context, in *ArtifactIDInput) (*streamOutput, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	dev := infoFrom(ctx).device
	art, file, err := f.OpenArtifact(ctx, in.ID, dev.typ)
	if err != nil {
		return nil, err
	}
	return &streamOutput{Body: func(hctx huma.Context) {
		defer file.Close()
		r, w := humago.Unwrap(hctx)
		// A large file outlives the server's write timeout: allow it at
		// least 64 KiB/s plus a minute.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute + time.Duration(art.Size/(64<<10))*time.Second))
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("ETag", `"`+art.SHA256+`"`)
		h.Set("X-Firmware-SHA256", art.SHA256)
		h.Set("X-Firmware-Signature", art.Signature)
		// ServeContent answers Range and If-Range from the file itself,
		// reading it in small chunks: nothing is held in memory.
		http.ServeContent(w, r, fmt.Sprintf("%s-%s.bin", art.Type, art.Version), art.CreatedAt, file)
	}}, nil
}

// FirmwareStatusAnswer is the answer to a device's report.
type FirmwareStatusAnswer struct {
	Recorded bool `json:"recorded"`
}

func (a *API) deviceFirmwareStatus(ctx context.Context, in *struct{ Body firmware.Report }) (*struct{ Body FirmwareStatusAnswer }, error) {
	f, err := a.firmware()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(in.Body)
	if err != nil {
		return nil, err
	}
	rep, err := firmware.DecodeReport(b)
	if err != nil {
		return nil, err
	}
	dev := infoFrom(ctx).device
	if err := f.RecordStatus(ctx, dev.id, dev.typ, rep, nil); err != nil {
		return nil, err
	}
	return &struct{ Body FirmwareStatusAnswer }{Body: FirmwareStatusAnswer{Recorded: true}}, nil
}

func knownType(ts Types, name string) bool {
	for _, t := range ts.List() {
		if t.Name == name {
			return true
		}
	}
	return false
}
