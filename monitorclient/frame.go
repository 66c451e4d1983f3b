package monitorclient

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The stream protocol. Over TCP (or TLS) every frame is a type byte, a
// 4-byte big-endian payload length and the payload; over WebSocket every
// binary message is one such frame. The receiver speaks first:
//
//	receiver → hub   Connect   {"monitor_id", "token", "protocol": 1}
//	hub → receiver   Connected {"ok": true, "format", "compression", "ack"}
//	                           or {"ok": false, "error": "..."} and the hub closes
//	hub → receiver   Publish   2-byte header length, header JSON, body
//	receiver → hub   Ack       8-byte big-endian block number (ack "explicit" only)
//
// The Publish body is exactly the body an HTTP monitor would send (Encode).
// Blocks are numbered from 1 per connection; an Ack acknowledges its block
// alone, and the hub moves the monitor's cursor over the acknowledged
// blocks that have no unacknowledged block before them.
const (
	FrameConnect   byte = 1
	FrameConnected byte = 2
	FramePublish   byte = 3
	FrameAck       byte = 4
)

// Protocol is the stream protocol version.
const Protocol = 1

// MaxFrame bounds a frame's payload.
const MaxFrame = 64 << 20

// ErrFrame is wrapped by the errors of a malformed frame.
var ErrFrame = errors.New("bad stream frame")

// ConnectRequest is the receiver's first frame.
type ConnectRequest struct {
	MonitorID string `json:"monitor_id"`
	Token     string `json:"token"`
	Protocol  int    `json:"protocol"`
}

// ConnectResponse is the hub's answer.
type ConnectResponse struct {
	OK          bool   `json:"ok"`
	Error       string `json:"error,omitempty"`
	Format      string `json:"format,omitempty"`
	Compression string `json:"compression,omitempty"`
	Ack         string `json:"ack,omitempty"` // explicit or off
}

// PublishHeader describes a Publish frame's body.
type PublishHeader struct {
	Block       uint64 `json:"block"`
	DeliveryID  string `json:"delivery_id"`
	MonitorID   string `json:"monitor_id"`
	FirstSeq    int64  `json:"first_seq"`
	LastSeq     int64  `json:"last_seq"`
	Count       int    `json:"count"`
	Format      string `json:"format"`
	Compression string `json:"compression"`
}

// AppendFrame appends a frame to dst.
func AppendFrame(dst []byte, typ byte, payload []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// ReadFrame reads one frame of at most max payload bytes (0: MaxFrame).
func ReadFrame(r *bufio.Reader, max int) (byte, []byte, error) {
	if max <= 0 {
		max = MaxFrame
	}
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if int64(n) > int64(max) {
		return 0, nil, fmt.Errorf("%w: payload of %d bytes, at most %d", ErrFrame, n, max)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, fmt.Errorf("%w: truncated: %v", ErrFrame, err)
	}
	return hdr[0], p, nil
}

// ParseFrame splits one whole frame (a WebSocket message) into its type and
// payload.
func ParseFrame(b []byte) (byte, []byte, error) {
	if len(b) < 5 {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrFrame, len(b))
	}
	n := binary.BigEndian.Uint32(b[1:])
	if int(n) != len(b)-5 {
		return 0, nil, fmt.Errorf("%w: length %d, payload of %d bytes", ErrFrame, n, len(b)-5)
	}
	return b[0], b[5:], nil
}

// PublishPayload builds a Publish frame's payload.
func PublishPayload(h PublishHeader, body []byte) ([]byte, error) {
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if len(hj) > 0xFFFF {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrFrame, len(hj))
	}
	p := make([]byte, 0, 2+len(hj)+len(body))
	p = binary.BigEndian.AppendUint16(p, uint16(len(hj)))
	p = append(p, hj...)
	return append(p, body...), nil
}

// ParsePublish splits a Publish payload into its header and body.
func ParsePublish(p []byte) (PublishHeader, []byte, error) {
	var h PublishHeader
	if len(p) < 2 {
		return h, nil, fmt.Errorf("%w: publish of %d bytes", ErrFrame, len(p))
	}
	n := int(binary.BigEndian.Uint16(p))
	if len(p) < 2+n {
		return h, nil, fmt.Errorf("%w: publish header of %d bytes in %d", ErrFrame, n, len(p))
	}
	if err := json.Unmarshal(p[2:2+n], &h); err != nil {
		return h, nil, fmt.Errorf("%w: publish header: %v", ErrFrame, err)
	}
	return h, p[2+n:], nil
}

// AckPayload is an Ack frame's payload.
func AckPayload(block uint64) []byte { return binary.BigEndian.AppendUint64(nil, block) }

// ParseAck reads an Ack frame's payload.
func ParseAck(p []byte) (uint64, error) {
	if len(p) != 8 {
		return 0, fmt.Errorf("%w: ack of %d bytes", ErrFrame, len(p))
	}
	return binary.BigEndian.Uint64(p), nil
}
