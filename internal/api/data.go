package api

import (
	"bytes"
	"context"
	"errors"
	"mime"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
)

func (a *API) registerData() {
	const desc = "Takes in readings a device posts with its API key: the same payload as on the MQTT topic " +
		"devices/{id}/data[/{stream}]: a JSON object of field → value or an array of them, with optional ts " +
		"(RFC 3339 or Unix milliseconds) and msg_id (a msg_id the device sent before is answered as a duplicate and stored once; on the SQLite backend within the device's newest 1,000 messages with a msg_id, storage.sqlite.message_log.dedupe_window). " +
		"Send it with Content-Type: application/json (a body sent as a form, as curl -d does unless told otherwise, " +
		"is read as JSON too; application/json+gzip and +zstd are compressed JSON). " +
		"A message the ingest refuses is answered 422 (429 when rate limited, 413 when too large) with the " +
		"rejection's code and field."
	body := func() *huma.RequestBody {
		return &huma.RequestBody{
			Description: "Readings: a JSON object of field → value, or an array of them. The ingest validates it against the device's type.",
			Content:     map[string]*huma.MediaType{},
		}
	}
	register(a, permDevice, huma.Operation{
		OperationID: "postDeviceData", Method: http.MethodPost, Path: "/api/v1/device/data", Tags: []string{"device"},
		Summary: "Post readings", Description: desc, MaxBodyBytes: a.opts.MaxDataBytes, RequestBody: body(), SkipValidateBody: true,
	}, a.deviceData)
	register(a, permDevice, huma.Operation{
		OperationID: "postDeviceStreamData", Method: http.MethodPost, Path: "/api/v1/device/data/{stream}", Tags: []string{"device"},
		Summary: "Post readings to a stream", Description: desc, MaxBodyBytes: a.opts.MaxDataBytes, RequestBody: body(), SkipValidateBody: true,
	}, a.deviceStreamData)
}

// DataInput is a device's HTTP message: the body is passed to the ingest
// pipeline as is, which validates it against the device's type.
type DataInput struct {
	ContentType string `header:"Content-Type"`
	RawBody     []byte `contentType:"application/json"`
}

// StreamDataInput is a device's HTTP message to a named stream.
type StreamDataInput struct {
	Stream string `path:"stream" pattern:"^[A-Za-z0-9._:-]{1,128}$" doc:"Stream name: one MQTT topic level." example:"fast"`
	DataInput
}

type dataOutput struct{ Body DataResult }

func (a *API) deviceData(ctx context.Context, in *DataInput) (*dataOutput, error) {
	return a.ingest(ctx, "", in)
}

func (a *API) deviceStreamData(ctx context.Context, in *StreamDataInput) (*dataOutput, error) {
	return a.ingest(ctx, in.Stream, &in.DataInput)
}

func (a *API) ingest(ctx context.Context, stream string, in *DataInput) (*dataOutput, error) {
	dev := infoFrom(ctx).device
	// huma reuses the body's buffer once the handler returns.
	payload := bytes.Clone(in.RawBody)
	res, err := a.deps.DeviceData.HandleHTTPData(ctx, dev.id, dev.typ, stream, payload, dataContentType(in.ContentType))
	if err != nil {
		var rej Rejection
		if errors.As(err, &rej) && (rej.RejectCode() == "invalid_json" || rej.RejectCode() == "invalid_payload") {
			return nil, hintedRejection{rej}
		}
		return nil, err
	}
	return &dataOutput{Body: res}, nil
}

// dataContentType is the content type a device's HTTP message is decoded
// with. A body sent as a form (application/x-www-form-urlencoded, what
// `curl -d` sends unless told otherwise) is read as JSON, like one with no
// content type: the ingest checks that it is JSON all the same, and a
// device that cannot set a header loses nothing by it.
func dataContentType(ct string) string {
	if base, _, err := mime.ParseMediaType(ct); err == nil && base == "application/x-www-form-urlencoded" {
		return ""
	}
	return ct
}

// dataHint says what to send, for a device message over HTTP that is not
// the JSON it should be.
const dataHint = `send a JSON object of readings (or an array of them), e.g. {"temperature": 21.5}, ` +
	`with Content-Type: application/json (curl: -H 'Content-Type: application/json' -d '{"temperature": 21.5}')`

// hintedRejection is an ingest rejection of an HTTP message with what to
// send instead.
type hintedRejection struct{ Rejection }

func (h hintedRejection) Error() string { return h.Rejection.Error() + "; " + dataHint }
