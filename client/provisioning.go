package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// ProvisioningToken is a provisioning token; Secret is set only in
// CreateProvisioningToken's answer.
type ProvisioningToken struct {
	ID          string     `json:"id"`
	Name        string     `json:"name,omitempty"`
	DeviceType  string     `json:"device_type"`
	Group       string     `json:"group,omitempty"`
	Tags        []string   `json:"tags,omitempty"`
	ExpiresAt   time.Time  `json:"expires_at"`
	MaxUses     int        `json:"max_uses"` // 0: unlimited
	Uses        int        `json:"uses"`
	AutoApprove bool       `json:"auto_approve"`
	CreatedAt   time.Time  `json:"created_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	Secret      string     `json:"token,omitempty"`
}

// ProvisioningTokenRequest creates a provisioning token.
type ProvisioningTokenRequest struct {
	Name        string     `json:"name,omitempty"`
	DeviceType  string     `json:"device_type"`
	Group       string     `json:"group,omitempty"`
	Tags        []string   `json:"tags,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"` // nil: the hub's default (7 days)
	MaxUses     int        `json:"max_uses,omitempty"`   // 0: unlimited
	AutoApprove bool       `json:"auto_approve,omitempty"`
}

// CreateProvisioningToken creates a provisioning token (admin); the
// answer's Secret is the only copy of its secret.
func (c *Client) CreateProvisioningToken(ctx context.Context, req ProvisioningTokenRequest) (*ProvisioningToken, error) {
	var out ProvisioningToken
	if err := c.do(ctx, http.MethodPost, "/api/v1/provisioning/tokens", nil, req, &out); err != nil {
		return nil, fmt.Errorf("create provisioning token: %w", err)
	}
	return &out, nil
}

// ListProvisioningTokens lists the provisioning tokens (admin).
func (c *Client) ListProvisioningTokens(ctx context.Context) ([]ProvisioningToken, error) {
	var out struct {
		Tokens []ProvisioningToken `json:"tokens"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/provisioning/tokens", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list provisioning tokens: %w", err)
	}
	return out.Tokens, nil
}

// RevokeProvisioningToken revokes a provisioning token (admin).
func (c *Client) RevokeProvisioningToken(ctx context.Context, id string) (*ProvisioningToken, error) {
	var out struct {
		Token ProvisioningToken `json:"token"`
	}
	if err := c.do(ctx, http.MethodDelete, "/api/v1/provisioning/tokens/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("revoke provisioning token %s: %w", id, err)
	}
	return &out.Token, nil
}

// Operation is a provisioning operation: as operators see it, or as the
// device polling it does (with Credentials in its first poll after
// approval).
type Operation struct {
	ID                string       `json:"id"`
	Status            string       `json:"status"` // pending, approved, delivered, rejected, expired
	VerificationCode  string       `json:"verification_code,omitempty"`
	TokenID           string       `json:"token_id,omitempty"`
	RequestedDeviceID string       `json:"requested_device_id,omitempty"`
	DeviceID          string       `json:"device_id,omitempty"`
	DeviceType        string       `json:"device_type,omitempty"`
	Group             string       `json:"group,omitempty"`
	Tags              []string     `json:"tags,omitempty"`
	Reason            string       `json:"reason,omitempty"`
	RemoteAddr        string       `json:"remote_addr,omitempty"`
	CreatedAt         *time.Time   `json:"created_at,omitempty"`
	ExpiresAt         time.Time    `json:"expires_at"`
	DecidedAt         *time.Time   `json:"decided_at,omitempty"`
	Credentials       *Credentials `json:"credentials,omitempty"`
}

func operationPath(id string) string { return "/api/v1/provisioning/operations/" + url.PathEscape(id) }

// ListOperations lists provisioning operations, newest first; status ""
// lists all, "pending" those waiting for an operator.
func (c *Client) ListOperations(ctx context.Context, status string) ([]Operation, error) {
	q := url.Values{}
	set(q, "status", status)
	var out struct {
		Operations []Operation `json:"operations"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/provisioning/operations", q, nil, &out); err != nil {
		return nil, fmt.Errorf("list provisioning operations: %w", err)
	}
	return out.Operations, nil
}

// GetOperation returns an operation as operators see it.
func (c *Client) GetOperation(ctx context.Context, id string) (*Operation, error) {
	var out Operation
	if err := c.do(ctx, http.MethodGet, operationPath(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get provisioning operation %s: %w", id, err)
	}
	return &out, nil
}

type operationAnswer struct {
	Operation Operation `json:"operation"`
}

// ApproveOperation approves an operation; deviceID "" keeps the id the
// device asked for (or lets the hub pick one).
func (c *Client) ApproveOperation(ctx context.Context, id, deviceID string) (*Operation, error) {
	var body any
	if deviceID != "" {
		body = map[string]string{"device_id": deviceID}
	}
	var out operationAnswer
	if err := c.do(ctx, http.MethodPost, operationPath(id)+"/approve", nil, body, &out); err != nil {
		return nil, fmt.Errorf("approve %s: %w", id, err)
	}
	return &out.Operation, nil
}

// RejectOperation rejects an operation; the device reads the reason.
func (c *Client) RejectOperation(ctx context.Context, id, reason string) (*Operation, error) {
	var body any
	if reason != "" {
		body = map[string]string{"reason": reason}
	}
	var out operationAnswer
	if err := c.do(ctx, http.MethodPost, operationPath(id)+"/reject", nil, body, &out); err != nil {
		return nil, fmt.Errorf("reject %s: %w", id, err)
	}
	return &out.Operation, nil
}

// CreatedOperation is a device's new provisioning operation.
type CreatedOperation struct {
	ID               string    `json:"id"`
	VerificationCode string    `json:"verification_code"`
	ExpiresAt        time.Time `json:"expires_at"`
	Secret           string    `json:"secret"`
}

// CreateOperation starts provisioning as a device does, with a
// provisioning token and the device id it would like ("" for none). The
// client's own token is not sent.
func (c *Client) CreateOperation(ctx context.Context, token, deviceID string) (*CreatedOperation, error) {
	req, err := c.newRequest(ctx, http.MethodPost, "/api/v1/provisioning/operations", nil,
		map[string]string{"token": token, "device_id": deviceID})
	if err != nil {
		return nil, err
	}
	req.Header.Del("Authorization")
	var out CreatedOperation
	if err := c.send(req, &out); err != nil {
		return nil, fmt.Errorf("create provisioning operation: %w", err)
	}
	return &out, nil
}

// PollOperation polls an operation as its device does, with its secret.
func (c *Client) PollOperation(ctx context.Context, id, secret string) (*Operation, error) {
	req, err := c.newRequest(ctx, http.MethodGet, operationPath(id), nil, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	var out Operation
	if err := c.send(req, &out); err != nil {
		return nil, fmt.Errorf("poll provisioning operation %s: %w", id, err)
	}
	return &out, nil
}

// RegisterRequest is a device's self-registration.
type RegisterRequest struct {
	SharedSecret    string `json:"shared_secret"`
	Key             string `json:"key"`
	DeviceID        string `json:"device_id,omitempty"`
	Type            string `json:"type,omitempty"`
	Name            string `json:"name,omitempty"`
	FirmwareVersion string `json:"firmware_version,omitempty"`
	HardwareVersion string `json:"hardware_version,omitempty"`
}

// Registered is the answer of a self-registration.
type Registered struct {
	DeviceID    string      `json:"device_id"`
	Type        string      `json:"type"`
	IsNew       bool        `json:"is_new"`
	Credentials Credentials `json:"credentials"`
}

// Register registers a device with the hub's shared secret, as the device
// does. The client's own token is not sent.
func (c *Client) Register(ctx context.Context, r RegisterRequest) (*Registered, error) {
	req, err := c.newRequest(ctx, http.MethodPost, "/api/v1/device/register", nil, r)
	if err != nil {
		return nil, err
	}
	req.Header.Del("Authorization")
	var out Registered
	if err := c.send(req, &out); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	return &out, nil
}
