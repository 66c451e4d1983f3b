package ingest

import (
	"context"
	"fmt"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
)

// ConfigReports records what devices report of the configuration they
// applied (internal/deviceconfig). RecordReport returns once the report
// (and msg, its audit record, in the same change) is committed. An error
// with a RejectCode() string method (a stale checksum) refuses the
// message with that code; any other error means nothing was stored.
type ConfigReports interface {
	RecordReport(ctx context.Context, deviceID, deviceType string, r deviceconfig.Report, msg commit.Op) error
}

// Bounds of a configuration report.
const (
	maxChecksumLen    = 128
	maxConfigErrorLen = 4096
)

// handleConfigStatus takes in devices/{id}/config/status:
// {"checksum": "...", "status": "applied" | "error", "error": "..."}.
func (p *Pipeline) handleConfigStatus(ctx context.Context, m *Msg) error {
	r := m.Req
	if p.deps.Config == nil {
		return &Rejection{Code: CodeUnknownTopic, Reason: "this hub manages no device configurations"}
	}
	o, rej := decodeObject(r)
	if rej != nil {
		return rej
	}
	sum, ok := o["checksum"].(string)
	if !ok || sum == "" || len(sum) > maxChecksumLen {
		return &Rejection{Code: CodeValidationFailed, Field: "checksum", Reason: fmt.Sprintf("checksum must be a string of 1 to %d bytes", maxChecksumLen)}
	}
	status, ok := o["status"].(string)
	if !ok || (status != "applied" && status != "error") {
		return &Rejection{Code: CodeValidationFailed, Field: "status", Reason: `status must be "applied" or "error"`}
	}
	var text string
	if v, ok := o["error"]; ok && v != nil {
		s, isStr := v.(string)
		if !isStr || len(s) > maxConfigErrorLen {
			return &Rejection{Code: CodeValidationFailed, Field: "error", Reason: fmt.Sprintf("error must be a string of at most %d bytes", maxConfigErrorLen)}
		}
		text = s
	}
	msg := p.auditMessage(m)
	rep := deviceconfig.Report{Checksum: sum, Applied: status == "applied", Error: text}
	if err := p.deps.Config.RecordReport(ctx, r.DeviceID, r.DeviceType, rep, msg); err != nil {
		return serviceRejection(err)
	}
	m.Result = Result{MessageID: msg.ID}
	return nil
}
