package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/firmware"
)

// FirmwareReports records what devices report of their firmware updates
// (internal/firmware). RecordStatus returns once the report (and msg, its
// message log record, in the same change) is committed.
type FirmwareReports interface {
	RecordStatus(ctx context.Context, deviceID, deviceType string, r firmware.Report, msg commit.Op) error
}

// handleFirmwareStatus takes in devices/{id}/firmware/status (see
// firmware.Report for the payload).
func (p *Pipeline) handleFirmwareStatus(ctx context.Context, m *Msg) error {
	r := m.Req
	if p.deps.Firmware == nil {
		return &Rejection{Code: CodeUnknownTopic, Reason: "this hub manages no firmware"}
	}
	if rej := checkContentType(r.ContentType); rej != nil {
		return rej
	}
	rep, err := firmware.DecodeReport(r.Payload)
	var re *firmware.ReportError
	if errors.As(err, &re) {
		code := CodeValidationFailed
		if re.Field == "payload" {
			code = CodeInvalidPayload
		}
		return &Rejection{Code: code, Field: re.Field, Reason: re.Reason}
	}
	if err != nil {
		return err
	}
	var id struct {
		MsgID *string `json:"msg_id"`
	}
	_ = json.Unmarshal(r.Payload, &id) // an object: DecodeReport said so
	msg := p.auditMessage(m)
	if id.MsgID != nil {
		if *id.MsgID == "" || utf8.RuneCountInString(*id.MsgID) > maxMsgIDLen {
			return &Rejection{Code: CodeInvalidPayload, Field: "msg_id", Reason: fmt.Sprintf("msg_id must be a string of 1 to %d characters", maxMsgIDLen)}
		}
		m.msgID = *id.MsgID
		msg.MsgID = *id.MsgID
	}
	if err := p.deps.Firmware.RecordStatus(ctx, r.DeviceID, r.DeviceType, rep, msg); err != nil {
		return serviceRejection(err)
	}
	m.Result = Result{MessageID: msg.ID}
	return nil
}
