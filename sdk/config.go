package sdk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// Config is a configuration the hub rendered for the device (issue 12):
// the bytes of GET /api/v1/device/config, whose SHA-256 the SDK checked
// against the checksum before handing them over.
type Config struct {
	// Checksum is the SHA-256 (hex) of Data.
	Checksum string
	// Backend is the format of Data: json, yaml, env or the name of a
	// text/template backend of the hub.
	Backend string
	// Data is the rendered configuration.
	Data []byte
}

// configNotice is what the hub publishes, retained, on devices/{id}/config.
type configNotice struct {
	Checksum string `json:"checksum"`
	URL      string `json:"url"`
	Backend  string `json:"backend"`
}

// configState is what the SDK remembers of configurations: the last notice
// it handled and the checksum it last gave to OnConfig.
type configState struct {
	Notice  string `json:"notice"`
	Handled string `json:"handled"`
}

// maxConfigBytes bounds a downloaded configuration.
const maxConfigBytes = 16 << 20

// storeConfigNotice keeps the latest configuration notice until it is
// handled (a cleared retained message clears nothing: the configuration
// stays what it was).
func (c *Client) storeConfigNotice(payload []byte) error {
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil
	}
	var n configNotice
	if err := json.Unmarshal(payload, &n); err != nil || n.Checksum == "" {
		c.log.Warn("ignoring malformed configuration notice", "err", err)
		return nil
	}
	if err := c.st.putJSON(keyConfigNotice, n); err != nil {
		return err
	}
	c.pokeConfig()
	return nil
}

func (c *Client) pokeConfig() {
	select {
	case c.cfgWake <- struct{}{}:
	default:
	}
}

// errConfigRetry is a download that failed for now (network, hub busy, a
// body that does not match its checksum): the notice is handled again
// after a backoff.
var errConfigRetry = errors.New("configuration download failed")

// configs hands each new configuration the hub announces to OnConfig and
// queues its report in the outbox, until ctx is done. A notice is stored
// before it is acknowledged, and the report is queued in the transaction
// that marks the notice handled, so that a crash makes the SDK apply a
// configuration again (at least once) rather than forget to report it.
func (c *Client) configs(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		var n configNotice
		var st configState
		found, err := c.st.getJSON(keyConfigNotice, &n)
		if err == nil {
			_, err = c.st.getJSON(keyConfigState, &st)
		}
		if err != nil {
			c.log.Error("read configuration state", "err", err)
		}
		if err == nil && found && n.Checksum != st.Notice {
			if err := c.handleConfig(ctx, n, st); err != nil {
				failures++
				c.log.Warn("configuration not handled yet", "checksum", n.Checksum, "err", err)
				t := time.NewTimer(backoff(c.opts.MinBackoff, c.opts.MaxBackoff, failures))
				select {
				case <-t.C:
				case <-c.cfgWake:
				case <-ctx.Done():
				}
				t.Stop()
				continue
			}
			failures = 0
			continue
		}
		select {
		case <-c.cfgWake:
		case <-ctx.Done():
		}
	}
}

// handleConfig downloads the configuration of notice n, verifies it, gives
// it to OnConfig and queues the report. The configuration downloaded may
// be newer than the notice (the hub changed it since): it is applied with
// its own checksum, and its own notice is then already handled.
func (c *Client) handleConfig(ctx context.Context, n configNotice, st configState) error {
	cfg, err := c.downloadConfig(ctx, n)
	if errors.Is(err, errNoConfig) {
		// Deactivated or removed since the notice: nothing to apply.
		return c.st.putJSON(keyConfigState, configState{Notice: n.Checksum, Handled: st.Handled})
	}
	if err != nil {
		return err
	}
	next := configState{Notice: n.Checksum, Handled: cfg.Checksum}
	if cfg.Checksum == st.Handled {
		return c.st.putJSON(keyConfigState, next)
	}
	report := map[string]string{"checksum": cfg.Checksum, "status": "applied"}
	if aerr := c.callOnConfig(*cfg); aerr != nil {
		report["status"], report["error"] = "error", truncate(aerr.Error(), 4096)
	}
	b, err := marshalJSON(report)
	if err != nil {
		return err
	}
	p, id, err := withMsgID(b, "", c.nextMsgID)
	if err != nil {
		return err
	}
	e := entry{kind: kindConfigStatus, topic: "devices/" + c.creds.DeviceID + "/config/status", contentType: contentTypeJSON, msgID: id, payload: p}
	es := []entry{e}
	if err := c.st.write(func(tx *bolt.Tx) error {
		if err := appendEntries(tx, es); err != nil {
			return err
		}
		return putJSON(tx, keyConfigState, next)
	}); err != nil {
		return newError(KindStorage, "report configuration", err)
	}
	c.added(es)
	return nil
}

// callOnConfig calls the application, turning a panic into an error.
func (c *Client) callOnConfig(cfg Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("OnConfig panicked: %v", r)
		}
	}()
	return c.opts.OnConfig(cfg)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

var errNoConfig = errors.New("the device has no configuration")

// downloadConfig fetches the configuration of notice n over HTTP with the
// device's API key and checks the SHA-256 of the bytes against the
// checksum the hub gives with them.
func (c *Client) downloadConfig(ctx context.Context, n configNotice) (*Config, error) {
	if c.creds.APIKey == "" {
		return nil, fmt.Errorf("%w: the credentials have no api_key", errConfigRetry)
	}
	u, err := c.configURL(n.URL)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.PublishTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.creds.APIKey)
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errConfigRetry, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, errNoConfig
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: GET %s: HTTP %d", errConfigRetry, u, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %v", errConfigRetry, err)
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%w: over %d bytes", errConfigRetry, maxConfigBytes)
	}
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	want := resp.Header.Get("X-Config-Checksum")
	if want == "" {
		want = strings.Trim(strings.TrimPrefix(resp.Header.Get("ETag"), "W/"), `"`)
	}
	if want == "" {
		want = n.Checksum
	}
	if sum != want {
		return nil, fmt.Errorf("%w: the bytes' SHA-256 %s is not the checksum %s", errConfigRetry, sum, want)
	}
	return &Config{Checksum: sum, Backend: n.Backend, Data: data}, nil
}

// configURL resolves the notice's URL (a path on the hub by default)
// against Options.Server.
func (c *Client) configURL(ref string) (string, error) {
	if ref == "" {
		ref = "/api/v1/device/config"
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("configuration notice url %q: %w", ref, err)
	}
	if r.IsAbs() {
		return r.String(), nil
	}
	if c.opts.Server == "" {
		return "", fmt.Errorf("%w: Options.Server is needed to download %s", errConfigRetry, ref)
	}
	base, err := url.Parse(c.opts.Server)
	if err != nil {
		return "", fmt.Errorf("options: server %q: %w", c.opts.Server, err)
	}
	return base.ResolveReference(r).String(), nil
}
