// Package audit reads the message audit log: every message a device sent,
// accepted or rejected, with its raw topic and payload. The commit path
// writes it.
package audit

import (
	"context"
	"time"
)

// Message is one audit record.
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

// Query selects audit records of one device (or all, with DeviceID ""),
// newest first.
type Query struct {
	DeviceID string
	Rejected bool  // only rejected messages
	Before   int64 // cursor: ids below this; 0 for the newest
	Limit    int   // 0: 100
}

// Store reads the audit log.
type Store interface {
	ListMessages(ctx context.Context, q Query) ([]Message, error)
}
