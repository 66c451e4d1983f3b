// Package messagelog reads the message log: every message a device sent,
// accepted or rejected, with its raw topic and payload. The commit path
// writes it. (What operators asked of the API is another record, the
// audit trail: package access.)
package messagelog

import (
	"context"
	"time"
)

// Message is one record of the message log.
type Message struct {
	ID         int64     `json:"id"`
	DeviceID   string    `json:"device_id"`
	Topic      string    `json:"topic"`
	Transport  string    `json:"transport"`
	QoS        byte      `json:"qos"`
	Payload    []byte    `json:"payload"`
	MsgID      string    `json:"msg_id,omitempty"`
	Accepted   bool      `json:"accepted"`
	Code       string    `json:"code,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
}

// Query selects messages of one device (or all, with DeviceID ""),
// newest first.
type Query struct {
	DeviceID string
	Rejected bool  // only rejected messages
	Before   int64 // cursor: ids below this; 0 for the newest
	Limit    int   // 0: 100
}

// Store reads the message log.
type Store interface {
	ListMessages(ctx context.Context, q Query) ([]Message, error)
}
