package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"time"
)

// Command is a command from the hub (topic devices/{id}/commands/{id}).
type Command struct {
	ID        string          // the command id of the topic
	Name      string          // "command" of the payload
	Payload   json.RawMessage // "payload" of the payload, as sent
	ExpiresAt time.Time       // zero when the command does not expire
}

// Result is what a command handler returns; it is sent to
// devices/{id}/commands/{command_id}/result through the outbox.
type Result struct {
	// Status is "succeeded" or "failed" ("succeeded" when empty).
	Status string `json:"status"`
	// Result is any JSON-encodable value.
	Result any `json:"result,omitempty"`
}

// DesiredProperties are the device's desired properties at a version.
type DesiredProperties struct {
	Version int64          `json:"version"`
	Values  map[string]any `json:"values"`
}

func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(buf.Bytes()), nil
}

// storeDesired keeps desired properties newer than those known.
func (c *Client) storeDesired(payload []byte) error {
	var d DesiredProperties
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil // a cleared retained message
	}
	if err := json.Unmarshal(payload, &d); err != nil {
		c.log.Warn("ignoring malformed desired properties", "err", err)
		return nil
	}
	c.mu.Lock()
	newer := !c.desiredKnown || d.Version > c.desired.Version
	c.mu.Unlock()
	if !newer {
		return nil
	}
	if err := c.st.putJSON(keyDesired, d); err != nil {
		return err
	}
	c.mu.Lock()
	if !c.desiredKnown || d.Version > c.desired.Version {
		c.desired, c.desiredKnown = d, true
	}
	c.mu.Unlock()
	c.pokeInbound()
	return nil
}

// storeCommand keeps a command until the application handled it.
func (c *Client) storeCommand(id, topic string, payload []byte) error {
	added, err := c.st.addInbound(inbound{Topic: topic, Command: id, Payload: json.RawMessage(bytes.Clone(payload))})
	if err != nil {
		return err
	}
	if added {
		c.pokeInbound()
	}
	return nil
}

func (c *Client) pokeInbound() {
	select {
	case c.inWake <- struct{}{}:
	default:
	}
}

// dispatch hands stored commands and desired properties to the application,
// one at a time. A command leaves the database, and its result enters the
// outbox, in one transaction after the handler returned.
func (c *Client) dispatch(ctx context.Context) {
	var delivered int64 = -1 // version last given to OnDesiredProperties by this client
	for ctx.Err() == nil {
		c.mu.Lock()
		d, known := c.desired, c.desiredKnown
		c.mu.Unlock()
		if known && d.Version > delivered && c.opts.OnDesiredProperties != nil {
			c.opts.OnDesiredProperties(d)
			delivered = d.Version
			if err := c.st.putJSON(keyDesiredDelivered, d.Version); err != nil {
				c.log.Error("store desired version delivered", "err", err)
			}
		}
		seq, in, ok, err := c.st.nextInbound()
		if err != nil {
			c.log.Error("read inbox", "err", err)
		}
		if ok && err == nil {
			c.handleCommand(seq, in)
			continue
		}
		select {
		case <-c.inWake:
		case <-ctx.Done():
		}
	}
}

func (c *Client) handleCommand(seq uint64, in inbound) {
	var body struct {
		Command   string          `json:"command"`
		Payload   json.RawMessage `json:"payload"`
		ExpiresAt *time.Time      `json:"expires_at"`
	}
	cmd := Command{ID: in.Command}
	var res Result
	if err := json.Unmarshal(in.Payload, &body); err != nil {
		res = Result{Status: "failed", Result: map[string]string{"error": "malformed command: " + err.Error()}}
	} else {
		cmd.Name, cmd.Payload = body.Command, body.Payload
		if body.ExpiresAt != nil {
			cmd.ExpiresAt = *body.ExpiresAt
		}
		switch {
		case !cmd.ExpiresAt.IsZero() && time.Now().After(cmd.ExpiresAt):
			res = Result{Status: "failed", Result: map[string]string{"error": "expired before it was handled"}}
		case c.opts.OnCommand == nil:
			res = Result{Status: "failed", Result: map[string]string{"error": errNoHandler.Error()}}
		default:
			res = c.opts.OnCommand(cmd)
		}
	}
	if res.Status == "" {
		res.Status = "succeeded"
	}
	b, err := marshalJSON(res)
	if err != nil {
		b, _ = marshalJSON(Result{Status: "failed", Result: map[string]string{"error": "result is not JSON: " + err.Error()}})
	}
	e := entry{kind: kindResult, topic: in.Topic + "/result", contentType: contentTypeJSON, msgID: "cmd-" + in.Command, payload: b}
	es := []entry{e}
	if err := c.st.finishInbound(seq, in.Command, es); err != nil {
		c.log.Error("finish command", "command_id", in.Command, "err", err)
		return
	}
	c.added(es)
}

// DesiredProperties returns the latest desired properties known (version 0
// and no values before the hub sent any).
func (c *Client) DesiredProperties() DesiredProperties {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.desired
}

// DesiredPropertiesIfNewer returns the latest desired properties if their
// version is above version.
func (c *Client) DesiredPropertiesIfNewer(version int64) (DesiredProperties, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.desiredKnown || c.desired.Version <= version {
		return DesiredProperties{}, false
	}
	return c.desired, true
}

// UpdateReportedProperties stores a patch of reported properties and sends
// it to devices/{id}/twin/reported when possible, in order with the other
// messages. It returns once the patch is on disk.
func (c *Client) UpdateReportedProperties(patch map[string]any) error {
	b, err := marshalJSON(patch)
	if err != nil {
		return newError(KindInvalidPayload, "update reported properties", err)
	}
	p, id, err := withMsgID(b, "", c.nextMsgID)
	if err != nil {
		return newError(KindInvalidPayload, "update reported properties", err)
	}
	e := entry{kind: kindReported, topic: "devices/" + c.creds.DeviceID + "/twin/reported", contentType: contentTypeJSON, msgID: id, payload: p}
	if _, err := c.enqueueEntry(e); err != nil {
		return err
	}
	return nil
}

// PendingReportedProperties reports whether some reported properties
// patches were not yet acknowledged by the hub.
func (c *Client) PendingReportedProperties() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pendingRepd > 0
}
