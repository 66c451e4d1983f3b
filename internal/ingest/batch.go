package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/devicehub/devicehub/internal/commit"
)

// Batches of messages.
//
// A device that has many messages waiting (a store-and-forward backlog)
// may send them in one MQTT message with the content type
// "application/vnd.devicehub.batch+json" (compressed: "...+json+zstd" or
// "+gzip") on a data topic: a JSON array whose elements are data messages
// as they would be sent alone (an object or an array of readings), each
// with its own msg_id. Each element is stored as its own message (its own
// message log record, its own msg_id for deduplication), and the PUBACK of the
// batch means every element is stored. The elements are checked before
// anything is stored: if one is refused, the whole batch is refused (the
// reason names the element) and nothing is stored, so the device can send
// the elements one by one. A batch holds at most MaxReadingsPerMessage
// readings in all.

// ContentTypeBatch is the content type of a batch of data messages.
const ContentTypeBatch = "application/vnd.devicehub.batch+json"

func isBatch(ct string) bool {
	base, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(base), ContentTypeBatch)
}

// handleBatch takes in a batch of data messages (see above).
func (p *Pipeline) handleBatch(ctx context.Context, m *Msg, stream string) error {
	r := m.Req
	var elems []json.RawMessage
	if err := json.Unmarshal(r.Payload, &elems); err != nil {
		return &Rejection{Code: CodeInvalidJSON, Reason: "a batch must be a JSON array of messages: " + err.Error()}
	}
	if len(elems) == 0 {
		return &Rejection{Code: CodeInvalidPayload, Reason: "empty batch"}
	}
	if len(elems) > p.opts.MaxReadingsPerMessage {
		return &Rejection{Code: CodePayloadTooLarge, Reason: fmt.Sprintf("more than %d messages in one batch", p.opts.MaxReadingsPerMessage)}
	}
	dcs := make([]*dataChange, len(elems))
	readings := 0
	for i, e := range elems {
		er := *r
		er.Payload = e // a slice of r.Payload, which is not modified
		dc, rej := p.buildData(m, &er, stream)
		if rej != nil {
			rej.Reason = fmt.Sprintf("message %d of the batch: %s", i, rej.Reason)
			return rej
		}
		if readings += len(dc.rows.Rows); readings > p.opts.MaxReadingsPerMessage {
			return &Rejection{Code: CodePayloadTooLarge, Reason: fmt.Sprintf("more than %d readings in one batch", p.opts.MaxReadingsPerMessage)}
		}
		dcs[i] = dc
	}
	m.msgID = ""
	tickets := make([]*commit.Ticket, len(dcs))
	for i, dc := range dcs {
		t, err := p.deps.Committer.Enqueue(ctx, &dc.ch)
		if err != nil {
			return fmt.Errorf("enqueue batch of %s: %w", r.DeviceID, err)
		}
		tickets[i] = t
	}
	if m.Req.QoS == 0 && m.Req.Transport != "http" {
		m.Result = Result{MessageID: dcs[len(dcs)-1].msg.ID, Readings: readings}
		return nil
	}
	dups := 0
	for _, t := range tickets {
		if err := t.Wait(ctx); err != nil {
			return fmt.Errorf("commit batch of %s: %w", r.DeviceID, err)
		}
		if t.Change != nil && t.Change.Duplicate {
			dups++
		}
	}
	m.Result = Result{MessageID: dcs[len(dcs)-1].msg.ID, Readings: readings, Duplicate: dups == len(dcs)}
	return nil
}
