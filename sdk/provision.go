package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ProvisioningOperation is a provisioning request waiting for an
// operator's approval: show VerificationCode to the person who approves
// it, so that they can tell this device from another.
type ProvisioningOperation struct {
	ID               string    `json:"id"`
	VerificationCode string    `json:"verification_code"`
	ExpiresAt        time.Time `json:"expires_at"`
	// Secret authenticates the device's polls of the operation; it is
	// stored in DB so that a restarted device resumes waiting.
	Secret string `json:"secret"`
}

// credentials returns the credentials to connect with: Options.Credentials,
// those stored in DB, or new ones from the provisioning flow.
func (c *Client) credentials(ctx context.Context) (*Credentials, error) {
	st := c.st
	if cr := c.opts.Credentials; cr != nil {
		if err := cr.check(); err != nil {
			return nil, newError(KindInvalidOptions, "start", err)
		}
		if c.opts.DeviceID != "" && c.opts.DeviceID != cr.DeviceID {
			return nil, newError(KindInvalidOptions, "start", fmt.Errorf("DeviceID %q differs from the credentials' %q", c.opts.DeviceID, cr.DeviceID))
		}
		err := st.write(func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketMeta).Delete(keyRevoked); err != nil {
				return err
			}
			return putJSON(tx, keyCredentials, cr)
		})
		if err != nil {
			return nil, newError(KindStorage, "start", err)
		}
		return cr, nil
	}
	var (
		cr      Credentials
		revoked bool
	)
	found, err := st.getJSON(keyCredentials, &cr)
	if err == nil {
		_, err = st.getJSON(keyRevoked, &revoked)
	}
	if err != nil {
		return nil, newError(KindStorage, "start", err)
	}
	if found && !revoked && cr.check() == nil {
		return &cr, nil
	}
	if c.opts.ProvisioningToken == "" {
		if revoked {
			return nil, &Error{Kind: KindCredentialsRevoked, Op: "start", Reason: "the hub refused the stored credentials; provision the device again"}
		}
		return nil, newError(KindInvalidOptions, "start", errors.New("no credentials in DB, Credentials or ProvisioningToken is required"))
	}
	if c.opts.Server == "" {
		return nil, newError(KindInvalidOptions, "start", errors.New("provisioning needs Server"))
	}
	return c.provision(ctx)
}

// provision runs the provisioning flow against the hub's HTTP API:
//
//	POST /api/v1/provisioning/operations
//	     {"token": "<provisioning token>", "device_id": "<id or empty>"}
//	  → {"id", "verification_code", "expires_at", "secret"}
//	GET  /api/v1/provisioning/operations/{id}   Authorization: Bearer <secret>
//	  → {"status": "pending" | "approved" | "rejected" | "expired",
//	     "device_id", "credentials": {"mqtt_username", "mqtt_password", "api_key"}}
//
// The credentials come exactly once, so they are stored in the same
// transaction that forgets the operation. An operation the hub no longer
// knows (404, e.g. its credentials were fetched but not stored before a
// crash) is replaced by a new one.
func (c *Client) provision(ctx context.Context) (*Credentials, error) {
	var op ProvisioningOperation
	found, err := c.st.getJSON(keyProvisioningOp, &op)
	if err != nil {
		return nil, newError(KindStorage, "provision", err)
	}
	failures := 0
	shown := "" // the operation OnProvisioning was last given
	for {
		if !found || (!op.ExpiresAt.IsZero() && time.Now().After(op.ExpiresAt.Add(time.Minute))) {
			if op, err = c.createOperation(ctx); err != nil {
				var se *Error
				if errors.As(err, &se) || ctx.Err() != nil {
					return nil, err
				}
				failures++
				c.log.Warn("create provisioning operation", "err", err)
				if err := sleep(ctx, backoff(c.opts.MinBackoff, c.opts.MaxBackoff, failures)); err != nil {
					return nil, newError(KindProvisioningFailed, "provision", err)
				}
				continue
			}
			found = true
			if err := c.st.putJSON(keyProvisioningOp, op); err != nil {
				return nil, newError(KindStorage, "provision", err)
			}
			shown = op.ID
			c.opts.OnProvisioning(op)
		} else if shown != op.ID {
			shown = op.ID
			c.opts.OnProvisioning(op) // resumed after a restart: shown once
		}
		status, cr, err := c.pollOperation(ctx, op)
		switch {
		case errors.Is(err, errOperationGone):
			c.log.Warn("provisioning operation unknown to the hub, starting a new one", "operation", op.ID)
			found = false
			if err := c.st.deleteKey(keyProvisioningOp); err != nil {
				return nil, newError(KindStorage, "provision", err)
			}
			continue
		case err != nil:
			var se *Error
			if errors.As(err, &se) {
				return nil, err
			}
			failures++
			c.log.Warn("poll provisioning operation", "operation", op.ID, "err", err)
			if err := sleep(ctx, backoff(c.opts.MinBackoff, c.opts.MaxBackoff, failures)); err != nil {
				return nil, newError(KindProvisioningFailed, "provision", err)
			}
			continue
		}
		failures = 0
		switch status {
		case "approved":
			if err := cr.check(); err != nil {
				return nil, newError(KindProvisioningFailed, "provision", err)
			}
			err := c.st.write(func(tx *bolt.Tx) error {
				m := tx.Bucket(bucketMeta)
				if err := m.Delete(keyProvisioningOp); err != nil {
					return err
				}
				if err := m.Delete(keyRevoked); err != nil {
					return err
				}
				return putJSON(tx, keyCredentials, cr)
			})
			if err != nil {
				return nil, newError(KindStorage, "provision", err)
			}
			c.log.Info("device provisioned", "device_id", cr.DeviceID)
			return cr, nil
		case "rejected", "expired":
			if err := c.st.deleteKey(keyProvisioningOp); err != nil {
				return nil, newError(KindStorage, "provision", err)
			}
			kind := KindProvisioningRejected
			if status == "expired" {
				kind = KindProvisioningExpired
			}
			return nil, &Error{Kind: kind, Op: "provision", Reason: "operation " + op.ID + " " + status}
		case "pending", "":
		default:
			c.log.Warn("unknown provisioning status", "status", status)
		}
		if !op.ExpiresAt.IsZero() && time.Now().After(op.ExpiresAt.Add(time.Minute)) {
			// The hub should have said "expired" by now.
			if err := c.st.deleteKey(keyProvisioningOp); err != nil {
				return nil, newError(KindStorage, "provision", err)
			}
			return nil, &Error{Kind: KindProvisioningExpired, Op: "provision", Reason: "operation " + op.ID + " expired at " + op.ExpiresAt.Format(time.RFC3339)}
		}
		if err := sleep(ctx, c.opts.ProvisioningPoll); err != nil {
			return nil, newError(KindProvisioningFailed, "provision", err)
		}
	}
}

var errOperationGone = errors.New("provisioning operation not found")

// maxProvisioningResponse bounds a response body of the provisioning API.
const maxProvisioningResponse = 64 << 10

func (c *Client) createOperation(ctx context.Context) (ProvisioningOperation, error) {
	var op ProvisioningOperation
	body, _ := json.Marshal(map[string]string{"token": c.opts.ProvisioningToken, "device_id": c.opts.DeviceID})
	code, b, err := c.httpDo(ctx, http.MethodPost, "/api/v1/provisioning/operations", "", body)
	if err != nil {
		return op, err
	}
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return op, &Error{Kind: KindProvisioningFailed, Op: "provision", Reason: fmt.Sprintf("the hub refused the provisioning token (%d): %s", code, apiMessage(b))}
	case code >= 400 && code < 500 && code != http.StatusTooManyRequests && code != http.StatusRequestTimeout:
		return op, &Error{Kind: KindProvisioningFailed, Op: "provision", Reason: fmt.Sprintf("status %d: %s", code, apiMessage(b))}
	case code/100 != 2:
		return op, fmt.Errorf("create provisioning operation: status %d: %s", code, apiMessage(b))
	}
	if err := json.Unmarshal(b, &op); err != nil || op.ID == "" || op.Secret == "" {
		return op, &Error{Kind: KindProvisioningFailed, Op: "provision", Reason: "malformed operation from the hub", Err: err}
	}
	return op, nil
}

func (c *Client) pollOperation(ctx context.Context, op ProvisioningOperation) (string, *Credentials, error) {
	code, b, err := c.httpDo(ctx, http.MethodGet, "/api/v1/provisioning/operations/"+url.PathEscape(op.ID), op.Secret, nil)
	if err != nil {
		return "", nil, err
	}
	switch {
	case code == http.StatusNotFound || code == http.StatusGone:
		return "", nil, errOperationGone
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return "", nil, &Error{Kind: KindProvisioningFailed, Op: "provision", Reason: fmt.Sprintf("the hub refused the operation secret (%d): %s", code, apiMessage(b))}
	case code/100 != 2:
		return "", nil, fmt.Errorf("poll provisioning operation: status %d: %s", code, apiMessage(b))
	}
	var out struct {
		Status      string       `json:"status"`
		Credentials *Credentials `json:"credentials"`
		flatCredentials
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", nil, fmt.Errorf("poll provisioning operation: %w", err)
	}
	cr := out.Credentials
	if cr != nil && cr.DeviceID == "" {
		cr.DeviceID = out.DeviceID // the hub names the device beside its credentials
	}
	if cr == nil && out.MQTTUsername != "" {
		cr = &Credentials{DeviceID: out.DeviceID, MQTTUsername: out.MQTTUsername, MQTTPassword: out.MQTTPassword, APIKey: out.APIKey}
	}
	if out.Status == "approved" && cr == nil {
		return "", nil, &Error{Kind: KindProvisioningFailed, Op: "provision", Reason: "approved operation without credentials (fetched before?)"}
	}
	return strings.ToLower(out.Status), cr, nil
}

// flatCredentials accepts credentials at the top level of a poll response.
type flatCredentials struct {
	DeviceID     string `json:"device_id"`
	MQTTUsername string `json:"mqtt_username"`
	MQTTPassword string `json:"mqtt_password"`
	APIKey       string `json:"api_key"`
}

func (c *Client) httpDo(ctx context.Context, method, path, bearer string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.opts.Server, "/")+path, r)
	if err != nil {
		return 0, nil, &Error{Kind: KindInvalidOptions, Op: "provision", Err: err}
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxProvisioningResponse))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// apiMessage picks the message out of an API error body.
func apiMessage(b []byte) string {
	var e struct {
		Error   any    `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &e) == nil {
		if e.Message != "" {
			return e.Message
		}
		if s, ok := e.Error.(string); ok {
			return s
		}
		if m, ok := e.Error.(map[string]any); ok {
			if s, ok := m["message"].(string); ok {
				return s
			}
		}
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
