package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
)

// Rejection codes of command results.
const (
	CodeUnknownCommand  = "unknown_command"  // no such command was sent to the device
	CodeCommandFinished = "command_finished" // the command was answered otherwise, or expired
)

// CommandResults records devices' answers to commands (internal/commands).
// RecordResult returns the ticket of the change that stores the answer,
// with dup true for an answer that repeats the stored one (its change
// records the message as a duplicate). An error with a RejectCode()
// string method, returned or through the ticket, refuses the message with
// that code; any other error means nothing was stored.
type CommandResults interface {
	RecordResult(ctx context.Context, deviceID, deviceType, commandID, status string, result json.RawMessage, msg *readings.Message) (t *commit.Ticket, dup bool, err error)
}

// ReportedProperties records the patches of reported properties devices
// send (internal/twin).
type ReportedProperties interface {
	RecordReported(ctx context.Context, deviceID, deviceType string, patch map[string]any, msg *readings.Message) (*commit.Ticket, error)
}

// maxCommandIDLen bounds the command id level of a result topic.
const maxCommandIDLen = 128

// handleCommandResult takes in devices/{id}/commands/{command_id}/result:
// {"status": "succeeded" | "failed", "result": ...}.
func (p *Pipeline) handleCommandResult(ctx context.Context, m *Msg) error {
	r := m.Req
	if p.deps.Commands == nil {
		return &Rejection{Code: CodeUnknownTopic, Reason: "this hub takes no command results"}
	}
	id := m.Params.Get("command_id")
	if len(id) > maxCommandIDLen {
		return &Rejection{Code: CodeUnknownCommand, Reason: fmt.Sprintf("command id longer than %d bytes", maxCommandIDLen)}
	}
	o, rej := decodeObject(r)
	if rej != nil {
		return rej
	}
	status, ok := o["status"].(string)
	if !ok || (status != "succeeded" && status != "failed") {
		return &Rejection{Code: CodeValidationFailed, Field: "status", Reason: `status must be "succeeded" or "failed"`}
	}
	var result json.RawMessage
	if v, ok := o["result"]; ok && v != nil {
		b, err := appendJSON(nil, v)
		if err != nil {
			return &Rejection{Code: CodeInvalidPayload, Field: "result", Reason: err.Error()}
		}
		result = b
	}
	msg := p.auditMessage(m)
	t, dup, err := p.deps.Commands.RecordResult(ctx, r.DeviceID, r.DeviceType, id, status, result, msg)
	if err != nil {
		return serviceRejection(err)
	}
	m.Result = Result{MessageID: msg.ID, Duplicate: dup}
	// The answer is refused if the command finished (expired, canceled)
	// between the service's check and the commit: wait for the verdict
	// even at QoS 0, so that the refusal is recorded.
	if err := t.Wait(ctx); err != nil {
		if rej := serviceRejection(err); rej != err {
			return rej
		}
		return fmt.Errorf("commit message of %s: %w", r.DeviceID, err)
	}
	return nil
}

// handleReported takes in devices/{id}/twin/reported: a JSON object, the
// patch of reported properties (null removes one), with an optional msg_id.
func (p *Pipeline) handleReported(ctx context.Context, m *Msg) error {
	r := m.Req
	if p.deps.Twin == nil {
		return &Rejection{Code: CodeUnknownTopic, Reason: "this hub keeps no device twins"}
	}
	o, rej := decodeObject(r)
	if rej != nil {
		return rej
	}
	msgID := ""
	if v, ok := o["msg_id"]; ok {
		delete(o, "msg_id")
		s, isStr := v.(string)
		switch {
		case v == nil:
		case !isStr || s == "" || utf8.RuneCountInString(s) > maxMsgIDLen:
			return &Rejection{Code: CodeInvalidPayload, Field: "msg_id", Reason: fmt.Sprintf("msg_id must be a string of 1 to %d characters", maxMsgIDLen)}
		default:
			msgID = s
		}
	}
	m.msgID = msgID
	if len(o) == 0 {
		return &Rejection{Code: CodeInvalidPayload, Reason: "the patch has no properties"}
	}
	msg := p.auditMessage(m)
	msg.MsgID = msgID
	t, err := p.deps.Twin.RecordReported(ctx, r.DeviceID, r.DeviceType, o, msg)
	if err != nil {
		return serviceRejection(err)
	}
	m.Result = Result{MessageID: msg.ID}
	return p.wait(ctx, m, t)
}

// serviceRejection turns a service's error that names a rejection code
// into a Rejection; other errors pass.
func serviceRejection(err error) error {
	var rc interface{ RejectCode() string }
	if errors.As(err, &rc) {
		return &Rejection{Code: rc.RejectCode(), Reason: err.Error()}
	}
	return err
}
