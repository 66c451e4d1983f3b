package sdk

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Update is a firmware update the hub sent (devices/{id}/firmware).
type Update struct {
	RolloutID  string `json:"rollout_id"`
	ArtifactID string `json:"artifact_id"`
	Version    string `json:"version"`
	URL        string `json:"url"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Signature  string `json:"signature"`
	Attempt    int    `json:"attempt"`
	// Path is the downloaded and verified file, given to OnFirmware.
	Path string `json:"path,omitempty"`
}

// fwJob is the update in progress, kept in the local database so that it
// survives a crash or the restart into the new firmware.
type fwJob struct {
	Update   Update    `json:"update"`
	Phase    string    `json:"phase"` // pending (download, verify, install) or installed (waiting for the restart and confirmation)
	Deadline time.Time `json:"deadline,omitempty"`
}

const (
	fwPending   = "pending"
	fwInstalled = "installed"
)

var (
	keyFirmwareJob  = []byte("firmware_job")
	keyFirmwareLast = []byte("firmware_last") // rollout id/attempt of the last update taken, against resent notices
)

// kindFirmware is an outbox entry: a firmware status report.
const kindFirmware byte = 5 // after store.go's kinds (1 to 4)

func (u *Update) key() string { return u.RolloutID + "/" + strconv.Itoa(u.Attempt) }

// storeFirmwareNotice keeps a notice of the hub until the update is done;
// a notice seen before (the hub resends while it waits) is ignored.
func (c *Client) storeFirmwareNotice(payload []byte) error {
	var n struct {
		Update
		Cancel bool `json:"cancel"`
	}
	if err := json.Unmarshal(payload, &n); err != nil || n.RolloutID == "" {
		c.log.Warn("ignoring malformed firmware notice", "err", err)
		return nil
	}
	var job fwJob
	has, err := c.st.getJSON(keyFirmwareJob, &job)
	if err != nil {
		return err
	}
	if n.Cancel {
		if has && job.Update.RolloutID == n.RolloutID && job.Phase == fwPending {
			c.fwCancel(n.RolloutID)
		}
		return nil
	}
	var last string
	if _, err := c.st.getJSON(keyFirmwareLast, &last); err != nil {
		return err
	}
	if last == n.Update.key() || (has && job.Update.key() == n.Update.key()) {
		return nil
	}
	if has && job.Phase == fwInstalled {
		c.log.Warn("firmware notice ignored: an installed update waits for its confirmation", "rollout", n.RolloutID)
		return nil
	}
	n.Update.Path = ""
	if err := c.st.putJSON(keyFirmwareJob, fwJob{Update: n.Update, Phase: fwPending}); err != nil {
		return err
	}
	if err := c.st.putJSON(keyFirmwareLast, n.Update.key()); err != nil {
		return err
	}
	c.pokeFirmware()
	return nil
}

func (c *Client) pokeFirmware() {
	select {
	case c.fwWake <- struct{}{}:
	default:
	}
}

// fwCancel stops the download of the rollout's update, if it runs.
func (c *Client) fwCancel(rolloutID string) {
	c.mu.Lock()
	if c.fwRunning == rolloutID && c.fwStop != nil {
		c.fwStop()
	}
	c.fwCanceled = rolloutID
	c.mu.Unlock()
	c.pokeFirmware()
}

// reportFirmware stores a status report in the outbox: of the update u
// (its rollout and attempt, so that the hub tells a late report of an
// earlier attempt from the current one), or of no update (nil: the
// versions at boot).
func (c *Client) reportFirmware(u *Update, status, version, message string, progress int) {
	r := map[string]any{"status": status}
	if u != nil && u.RolloutID != "" {
		r["rollout_id"] = u.RolloutID
		r["attempt"] = u.Attempt
	}
	if version != "" {
		r["version"] = version
	}
	if message != "" {
		if len(message) > 1000 {
			message = message[:1000]
		}
		r["message"] = message
	}
	if progress > 0 {
		r["progress"] = progress
	}
	if status == "" {
		delete(r, "status")
		if c.opts.HardwareVersion != "" {
			r["hardware_version"] = c.opts.HardwareVersion
		}
	}
	b, err := marshalJSON(r)
	if err == nil {
		var id string
		if b, id, err = withMsgID(b, "", c.nextMsgID); err == nil {
			// Written even while Close waits for this goroutine: an
			// application that restarts right after OnFirmware returned
			// must find the rebooting report in the outbox.
			es := []entry{{kind: kindFirmware, topic: "devices/" + c.creds.DeviceID + "/firmware/status", contentType: contentTypeJSON, msgID: id, payload: b}}
			if err = c.st.write(func(tx *bolt.Tx) error { return appendEntries(tx, es) }); err == nil {
				c.added(es)
			}
		}
	}
	if err != nil {
		c.log.Error("firmware status not stored", "status", status, "err", err)
	}
}

// firmwareLoop runs updates one at a time: download, verify, install; and
// after a restart into an installed update, its confirmation.
func (c *Client) firmwareLoop(ctx context.Context, booted bool) {
	if c.opts.FirmwareVersion != "" || c.opts.HardwareVersion != "" {
		c.reportFirmware(nil, "", c.opts.FirmwareVersion, "", 0)
	}
	for ctx.Err() == nil {
		var job fwJob
		has, err := c.st.getJSON(keyFirmwareJob, &job)
		if err != nil {
			c.log.Error("read firmware job", "err", err)
		}
		switch {
		case has && job.Phase == fwInstalled && booted:
			booted = false
			c.confirmFirmware(ctx, job)
			continue
		case has && job.Phase == fwPending:
			if c.runFirmware(ctx, job) {
				continue
			}
		}
		booted = false
		select {
		case <-ctx.Done():
		case <-c.fwWake:
		}
	}
}

// runFirmware works on a pending update; false when it must wait (a failed
// download is tried again later).
func (c *Client) runFirmware(ctx context.Context, job fwJob) bool {
	u := job.Update
	jctx, stop := context.WithCancel(ctx)
	defer stop()
	c.mu.Lock()
	canceled := c.fwCanceled == u.RolloutID
	c.fwRunning, c.fwStop = u.RolloutID, stop
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.fwRunning, c.fwStop = "", nil
		c.mu.Unlock()
	}()
	path := c.fwPath(u)
	if canceled {
		c.fwFinish(path, "")
		return true
	}
	fail := func(msg string) bool {
		c.reportFirmware(&u, "failed", "", msg, 0)
		c.fwFinish(path, "")
		return true
	}
	c.reportFirmware(&u, "downloading", "", "", 0)
	if err := c.download(jctx, u, path); err != nil {
		if ctx.Err() != nil {
			return true // closing: the download resumes at the next Start
		}
		c.mu.Lock()
		canceled = c.fwCanceled == u.RolloutID
		c.mu.Unlock()
		if canceled {
			c.fwFinish(path, "")
			return true
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return fail(err.Error())
		}
		c.log.Warn("firmware download interrupted; resuming later", "rollout", u.RolloutID, "err", err)
		c.fwRetry++
		select {
		case <-ctx.Done():
		case <-time.After(backoff(c.opts.MinBackoff, c.opts.MaxBackoff, c.fwRetry)):
		}
		return true
	}
	c.fwRetry = 0
	c.reportFirmware(&u, "downloaded", "", "", 100)
	c.reportFirmware(&u, "verifying", "", "", 0)
	if err := c.verify(u, path); err != nil {
		return fail(err.Error())
	}
	c.reportFirmware(&u, "installing", "", "", 0)
	u.Path = path
	var ierr error
	if c.opts.OnFirmware == nil {
		ierr = errors.New("this device installs no firmware (no OnFirmware handler)")
	} else {
		ierr = c.opts.OnFirmware(u)
	}
	if ierr != nil {
		return fail("install: " + ierr.Error())
	}
	job = fwJob{Update: u, Phase: fwInstalled, Deadline: time.Now().Add(c.opts.FirmwareConfirmWindow)}
	job.Update.Path = ""
	if err := c.st.putJSON(keyFirmwareJob, job); err != nil {
		c.log.Error("store installed firmware job", "err", err)
	}
	os.Remove(path)
	c.reportFirmware(&u, "rebooting", "", "", 0)
	return false // wait for the application's restart
}

// confirmFirmware runs after a restart into an installed update: the
// application confirms the new firmware within the window, or it is
// reported failed and the application is told to roll back.
func (c *Client) confirmFirmware(ctx context.Context, job fwJob) {
	u := job.Update
	c.reportFirmware(&u, "confirming", u.Version, "", 0)
	var err error
	if time.Now().After(job.Deadline) {
		err = fmt.Errorf("not confirmed within the window (deadline %s passed before the restart)", job.Deadline.Format(time.RFC3339))
	} else if c.opts.OnFirmwareConfirm != nil {
		cctx, cancel := context.WithDeadline(ctx, job.Deadline)
		done := make(chan error, 1)
		go func() { done <- c.opts.OnFirmwareConfirm(cctx, u) }()
		select {
		case err = <-done:
		case <-cctx.Done():
			if ctx.Err() != nil {
				cancel()
				return // closing: confirmed at the next Start
			}
			err = fmt.Errorf("not confirmed within %s", c.opts.FirmwareConfirmWindow)
		}
		cancel()
	}
	if err != nil {
		c.reportFirmware(&u, "failed", "", "confirmation: "+err.Error(), 0)
		c.fwFinish("", "")
		if c.opts.OnFirmwareRollback != nil {
			c.opts.OnFirmwareRollback(u, err)
		}
		return
	}
	c.reportFirmware(&u, "updated", u.Version, "", 100)
	c.fwFinish("", "")
}

// fwFinish ends the job: its file and its record go.
func (c *Client) fwFinish(path, _ string) {
	if path != "" {
		os.Remove(path)
	}
	if err := c.st.deleteKey(keyFirmwareJob); err != nil {
		c.log.Error("delete firmware job", "err", err)
	}
}

func (c *Client) fwPath(u Update) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, u.ArtifactID)
	return filepath.Join(c.opts.FirmwareDir, safe+".part")
}

// permanentError is a download failure that retrying does not cure.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// download fetches the artifact into path, resuming a partial file with a
// Range request.
func (c *Client) download(ctx context.Context, u Update, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return &permanentError{"download: " + err.Error()}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return &permanentError{"download: " + err.Error()}
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if u.Size > 0 && have >= u.Size {
		if have > u.Size {
			return f.Truncate(0) // not our file: start again
		}
		return nil
	}
	target, err := c.firmwareURL(u.URL)
	if err != nil {
		return &permanentError{err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return &permanentError{err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+c.creds.APIKey)
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
		req.Header.Set("If-Range", `"`+u.SHA256+`"`)
	}
	resp, err := c.fwHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	case http.StatusNotFound, http.StatusForbidden, http.StatusUnauthorized:
		return &permanentError{fmt.Sprintf("download: HTTP %d", resp.StatusCode)}
	default:
		return fmt.Errorf("download: HTTP %d", resp.StatusCode)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	return f.Sync()
}

func (c *Client) firmwareURL(ref string) (string, error) {
	r, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("firmware url %q: %w", ref, err)
	}
	if r.IsAbs() {
		return r.String(), nil
	}
	if c.opts.Server == "" {
		return "", errors.New("firmware url is relative and Options.Server is not set")
	}
	base, err := url.Parse(c.opts.Server)
	if err != nil {
		return "", fmt.Errorf("server %q: %w", c.opts.Server, err)
	}
	return base.ResolveReference(r).String(), nil
}

// verify checks the file's size, SHA-256 and the signature of the SHA-256
// with the public key the device was built with.
func (c *Client) verify(u Update, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	sum := h.Sum(nil)
	if u.Size > 0 && n != u.Size {
		return fmt.Errorf("verify: size %d, expected %d", n, u.Size)
	}
	if got := hex.EncodeToString(sum); got != strings.ToLower(u.SHA256) {
		return fmt.Errorf("verify: sha256 %s, expected %s", got, u.SHA256)
	}
	if len(c.opts.FirmwarePublicKey) != ed25519.PublicKeySize {
		return errors.New("verify: no firmware public key configured (Options.FirmwarePublicKey)")
	}
	sig, err := base64.StdEncoding.DecodeString(u.Signature)
	if err != nil || !ed25519.Verify(c.opts.FirmwarePublicKey, sum, sig) {
		return errors.New("verify: bad signature: the firmware is not signed by the key this device trusts")
	}
	return nil
}

// ParseFirmwarePublicKey reads a public key as `devicehub firmware key`
// prints it (base64 of the 32 bytes).
func ParseFirmwarePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, newError(KindInvalidOptions, "parse firmware public key", errors.New("not base64 of 32 bytes"))
	}
	return ed25519.PublicKey(b), nil
}
