package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Token is an operator token; Secret is set only in Create's answer.
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Secret is the bearer secret, shown only when the token is created.
	Secret string `json:"token,omitempty"`
}

// CreateToken creates a token with a role (admin, operator, viewer); the
// answer's Secret is the only copy of the secret.
func (c *Client) CreateToken(ctx context.Context, name, role string) (*Token, error) {
	var out Token
	body := map[string]string{"name": name, "role": role}
	if err := c.do(ctx, http.MethodPost, "/api/v1/tokens", nil, body, &out); err != nil {
		return nil, fmt.Errorf("create token %s: %w", name, err)
	}
	return &out, nil
}

// ListTokens lists every token, revoked ones included.
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	var out struct {
		Tokens []Token `json:"tokens"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/tokens", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out.Tokens, nil
}

// RevokeToken revokes a token by id and returns it.
func (c *Client) RevokeToken(ctx context.Context, id string) (*Token, error) {
	var out struct {
		Token Token `json:"token"`
	}
	if err := c.do(ctx, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return &out.Token, nil
}

// AuditEntry is one change asked of the API.
type AuditEntry struct {
	ID          int64     `json:"id"`
	Time        time.Time `json:"time"`
	TokenID     string    `json:"token_id,omitempty"`
	TokenName   string    `json:"token_name,omitempty"`
	Role        string    `json:"role,omitempty"`
	Method      string    `json:"method"`
	Path        string    `json:"path"`
	OperationID string    `json:"operation_id,omitempty"`
	Target      string    `json:"target,omitempty"`
	Status      int       `json:"status"`
	RemoteAddr  string    `json:"remote_addr,omitempty"`
}

// AuditQuery filters and pages the audit trail.
type AuditQuery struct {
	TokenID string
	Target  string
	Failed  bool
	Since   time.Time
	Cursor  string // the Next of the previous page
	Limit   int
}

// AuditPage is one page of the audit trail, newest first.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	Next    string       `json:"next,omitempty"`
}

// Audit returns one page of the API audit trail (admin tokens only).
func (c *Client) Audit(ctx context.Context, aq AuditQuery) (*AuditPage, error) {
	q := url.Values{}
	set(q, "token_id", aq.TokenID)
	set(q, "target", aq.Target)
	set(q, "cursor", aq.Cursor)
	if aq.Failed {
		q.Set("failed", "true")
	}
	if !aq.Since.IsZero() {
		q.Set("since", aq.Since.Format(time.RFC3339Nano))
	}
	if aq.Limit > 0 {
		q.Set("limit", strconv.Itoa(aq.Limit))
	}
	var out AuditPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/audit", q, nil, &out); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &out, nil
}

// DeviceType is a declared device type.
type DeviceType struct {
	Name               string               `json:"name"`
	HeartbeatInterval  string               `json:"heartbeat_interval,omitempty"`
	HeartbeatTimeout   string               `json:"heartbeat_timeout,omitempty"`
	Fields             map[string]TypeField `json:"fields"`
	AllowUnknownFields bool                 `json:"allow_unknown_fields"`
	Commands           []string             `json:"commands"`
	// CommandParams are the declared parameters of the commands that
	// have any.
	CommandParams map[string]CommandSpec `json:"command_params,omitempty"`
	RateLimit     *struct {
		Rate  float64 `json:"rate"`
		Burst int     `json:"burst"`
	} `json:"rate_limit,omitempty"`
	MaxPayloadBytes int `json:"max_payload_bytes,omitempty"`
}

// CommandSpec declares a command's parameters (with the rules of reading
// fields).
type CommandSpec struct {
	Params map[string]TypeField `json:"params,omitempty"`
}

// TypeField declares one reading field of a device type.
type TypeField struct {
	Type     string   `json:"type"`
	Unit     string   `json:"unit,omitempty"`
	Min      *float64 `json:"min,omitempty"`
	Max      *float64 `json:"max,omitempty"`
	Required bool     `json:"required,omitempty"`
}

// DeviceTypes lists the declared device types.
func (c *Client) DeviceTypes(ctx context.Context) ([]DeviceType, error) {
	var out struct {
		DeviceTypes []DeviceType `json:"device_types"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/device-types", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("device types: %w", err)
	}
	return out.DeviceTypes, nil
}

// Message is one message a device sent, accepted or rejected.
type Message struct {
	ID            int64     `json:"id"`
	DeviceID      string    `json:"device_id"`
	Topic         string    `json:"topic"`
	Transport     string    `json:"transport"`
	QoS           byte      `json:"qos"`
	Payload       string    `json:"payload,omitempty"`
	PayloadBase64 []byte    `json:"payload_base64,omitempty"`
	MsgID         string    `json:"msg_id,omitempty"`
	Accepted      bool      `json:"accepted"`
	Code          string    `json:"code,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	ReceivedAt    time.Time `json:"received_at"`
}

// MessagesQuery selects a device's messages, newest first.
type MessagesQuery struct {
	DeviceID string
	Rejected bool
	Before   string // the Next of the previous page
	Limit    int
}

// MessagePage is one page of messages.
type MessagePage struct {
	Messages []Message `json:"messages"`
	Next     string    `json:"next,omitempty"`
}

// Messages returns one page of a device's message log.
func (c *Client) Messages(ctx context.Context, mq MessagesQuery) (*MessagePage, error) {
	q := url.Values{}
	set(q, "before", mq.Before)
	if mq.Rejected {
		q.Set("rejected", "true")
	}
	if mq.Limit > 0 {
		q.Set("limit", strconv.Itoa(mq.Limit))
	}
	var out MessagePage
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(mq.DeviceID)+"/messages", q, nil, &out); err != nil {
		return nil, fmt.Errorf("messages of %s: %w", mq.DeviceID, err)
	}
	return &out, nil
}
