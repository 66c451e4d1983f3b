// Package brokerauth lets an external MQTT broker ask the hub whether a
// device may connect (POST /broker/auth) and whether it may publish or
// subscribe to a topic (POST /broker/acl), with the rules and the code of
// the embedded broker: registry.Service.Authenticate (an in-memory view of
// credential hashes, no database query per connect),
// registry.ConnectIdentityOK and registry.TopicAllowed.
//
// Two request and response formats are understood:
//
//   - EMQX's HTTP authentication and authorization: a JSON body with
//     clientid, username, password (auth) or clientid, username, topic,
//     action ("publish" or "subscribe") (acl); the answer is 200 with
//     {"result": "allow" | "deny"}. Configure the templates with these
//     keys (${clientid}, ${username}, ${password}, ${topic}, ${action}).
//   - mosquitto-go-auth's HTTP backend: a JSON or form body with username,
//     password, clientid (getuser) or username, clientid, topic, acc (1
//     read, 2 write, 3 read and write, 4 subscribe) (aclcheck); the answer
//     is 200 to allow and 403 to deny, with {"ok": ...} for its json
//     response mode. Its superuser check (/broker/superuser) is always
//     denied: no device is a superuser.
//
// The format is told by the query parameter format=emqx, mosquitto or
// mosquitto-text (response mode text: the body "ok"); without it, a form
// body or an "acc" means mosquitto-go-auth and an "action" means EMQX. An
// auth request that says neither is answered so that both brokers read it
// right and a refusal never reads as allow: 200 with result allow, or 403
// with result deny (EMQX reads a 403 as "ignore", which ends in a refusal
// when no other authenticator allows the client).
//
// A successful authentication fires device_connected through Presence, off
// the request path: Run delivers them, so that a reconnect storm is
// answered at memory speed and not at commit speed.
package brokerauth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/throttle"
)

// Authenticator checks credentials and device state (registry.Service).
type Authenticator interface {
	Authenticate(clientID, username string, password []byte) (deviceType string, err error)
	// Active reports whether the device may use the hub now.
	Active(deviceID string) error
}

// Presence is told about connections (presence.Tracker).
type Presence interface {
	Connected(ctx context.Context, deviceID, deviceType string, gen uint64, remoteAddr string)
}

// Options tune the handler.
type Options struct {
	// QueueSize bounds the device_connected notifications waiting for
	// Run (default 16384); beyond it they are dropped and counted (the
	// device's next activity still brings it online).
	QueueSize int
	// Workers deliver notifications (default 4).
	Workers int
	// Guessing throttles failed passwords per device and per the
	// device's address (the broker's peerhost; many devices may share
	// one, so its limit is ten times the default); zero values take
	// throttle's defaults.
	Guessing throttle.Options
}

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 16 << 10

// genBase starts the generations of external-broker connections far above
// the embedded broker's, so that the two never collide in presence.
const genBase = 1 << 62

// Handler answers the auth and ACL requests of external brokers. Mount it
// at /broker/ (it serves /broker/auth, /broker/acl and /broker/superuser;
// any path ending in those works). Run delivers device_connected.
type Handler struct {
	auth     Authenticator
	presence Presence
	opts     Options
	log      *slog.Logger
	q        chan connected
	gen      atomic.Uint64

	requests *prometheus.CounterVec
	counters map[[2]string]prometheus.Counter // resolved once: no label lookup per request
	dropped  prometheus.Counter
	guesses  *throttle.Guard
}

type connected struct {
	id, typ, remote string
	gen             uint64
}

// New returns a handler. reg may be nil.
func New(auth Authenticator, presence Presence, opts Options, log *slog.Logger, reg prometheus.Registerer) *Handler {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 16384
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	h := &Handler{
		auth: auth, presence: presence, opts: opts, log: log,
		q: make(chan connected, opts.QueueSize),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_brokerauth_requests_total",
			Help: "Auth and ACL requests of external brokers, by check and result.",
		}, []string{"check", "result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_brokerauth_connected_dropped_total",
			Help: "device_connected notifications dropped because the queue was full.",
		}),
	}
	guessing := opts.Guessing
	guessing.SourceLimit = max(guessing.SourceLimit, 200)
	h.guesses = throttle.NewGuard("broker_auth", guessing, log, reg)
	h.gen.Store(genBase)
	h.counters = map[[2]string]prometheus.Counter{}
	for _, check := range []string{"auth", "acl", "superuser"} {
		for _, result := range []string{"allow", "deny"} {
			h.counters[[2]string{check, result}] = h.requests.WithLabelValues(check, result)
		}
	}
	if reg != nil {
		reg.MustRegister(h.requests, h.dropped)
	}
	return h
}

// Run delivers device_connected for successful authentications until ctx
// is done.
func (h *Handler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range h.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case c := <-h.q:
					h.presence.Connected(ctx, c.id, c.typ, c.gen, c.remote)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// Request is an auth, ACL or superuser request in either format.
type Request struct {
	ClientID string `json:"clientid"`
	Username string `json:"username"`
	Password string `json:"password"`
	Topic    string `json:"topic"`
	// Action is EMQX's: "publish" or "subscribe".
	Action string `json:"action"`
	// Acc is mosquitto-go-auth's: 1 read, 2 write, 3 read and write, 4
	// subscribe; 0 when absent.
	Acc      int    `json:"-"`
	PeerHost string `json:"peerhost"`
	// Form: the body was a form (only mosquitto-go-auth sends one).
	Form bool `json:"-"`
}

// ErrBadRequest: the body could not be read.
var ErrBadRequest = errors.New("bad broker auth request")

// DecodeRequest parses a request body of the given content type: a form,
// or a JSON object (acc may be a number or a string).
func DecodeRequest(contentType string, body []byte) (Request, error) {
	if len(body) > MaxBodyBytes {
		return Request{}, ErrBadRequest
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/x-www-form-urlencoded" {
		v, err := url.ParseQuery(string(body))
		if err != nil {
			return Request{}, ErrBadRequest
		}
		r := Request{ClientID: v.Get("clientid"), Username: v.Get("username"), Password: v.Get("password"),
			Topic: v.Get("topic"), Action: v.Get("action"), PeerHost: v.Get("peerhost"), Form: true}
		if a := v.Get("acc"); a != "" {
			if r.Acc, err = strconv.Atoi(a); err != nil || r.Acc <= 0 {
				return Request{}, ErrBadRequest
			}
		}
		return r, nil
	}
	var w struct {
		Request
		ClientIDAlt string          `json:"client_id"`
		Acc         json.RawMessage `json:"acc"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return Request{}, ErrBadRequest
	}
	r := w.Request
	if r.ClientID == "" {
		r.ClientID = w.ClientIDAlt
	}
	if len(w.Acc) > 0 && string(w.Acc) != "null" {
		s := strings.Trim(string(w.Acc), `"`)
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return Request{}, ErrBadRequest
		}
		r.Acc = n
	}
	return r, nil
}

// format is how the broker wants its answer.
type format int

const (
	formatAuto format = iota
	formatEMQX
	formatMosquitto
	formatMosquittoText
)

func formatOf(q url.Values, r Request) format {
	switch q.Get("format") {
	case "emqx":
		return formatEMQX
	case "mosquitto":
		return formatMosquitto
	case "mosquitto-text":
		return formatMosquittoText
	}
	switch {
	case r.Form || r.Acc != 0:
		return formatMosquitto
	case r.Action != "":
		return formatEMQX
	}
	return formatAuto
}

// ServeHTTP answers POST .../auth, .../acl and .../superuser.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var check string
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/auth"):
		check = "auth"
	case strings.HasSuffix(p, "/acl"):
		check = "acl"
	case strings.HasSuffix(p, "/superuser"):
		check = "superuser"
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		h.answer(w, check, formatOf(r.URL.Query(), Request{}), false, "unreadable body", http.StatusBadRequest)
		return
	}
	req, err := DecodeRequest(r.Header.Get("Content-Type"), body)
	f := formatOf(r.URL.Query(), req)
	if err != nil {
		h.answer(w, check, f, false, err.Error(), http.StatusBadRequest)
		return
	}
	var allow bool
	var why string
	switch check {
	case "auth":
		allow, why = h.authenticate(req, r.RemoteAddr)
	case "acl":
		allow, why = h.authorize(req)
	default:
		why = "no device is a superuser"
	}
	h.answer(w, check, f, allow, why, 0)
}

// authenticate is the embedded broker's CONNECT check. An unknown
// device, a wrong password and revoked credentials are answered alike
// ("bad credentials": the answer tells nothing of which devices exist);
// the hub logs which it was. Failures are throttled per device and per
// the device's address (peerhost; the broker's own address is not one
// device's).
func (h *Handler) authenticate(req Request, remote string) (bool, string) {
	if !registry.ConnectIdentityOK(req.ClientID, req.Username) {
		return false, "client id must be the device id and equal the username"
	}
	if err := h.guesses.Check(req.PeerHost, req.ClientID); err != nil {
		return false, "too many failed attempts, try again later"
	}
	typ, err := h.auth.Authenticate(req.ClientID, req.Username, []byte(req.Password))
	if err != nil {
		why := reasonOf(err)
		if errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrUnauthorized) || errors.Is(err, registry.ErrRevoked) {
			h.guesses.Failed(req.PeerHost, req.ClientID, why)
			return false, "bad credentials"
		}
		return false, why
	}
	h.guesses.Succeeded(req.ClientID)
	if req.PeerHost != "" {
		remote = req.PeerHost
	}
	select {
	case h.q <- connected{id: req.ClientID, typ: typ, remote: remote, gen: h.gen.Add(1)}:
	default:
		h.dropped.Inc()
	}
	return true, ""
}

// authorize is the embedded broker's ACL check, plus the device's state:
// the hub cannot close a connection on an external broker, so a disabled
// or revoked device is stopped here.
func (h *Handler) authorize(req Request) (bool, string) {
	if req.Username != "" && req.Username != req.ClientID {
		return false, "username and client id differ"
	}
	var write bool
	switch {
	case req.Acc != 0:
		switch req.Acc {
		case 1, 4:
		case 2, 3:
			write = true
		default:
			return false, "unknown acc"
		}
	case req.Action == "subscribe":
	case req.Action == "publish", req.Action == "all":
		write = true
	default:
		return false, "unknown action"
	}
	if err := h.auth.Active(req.ClientID); err != nil {
		return false, reasonOf(err)
	}
	if !registry.TopicAllowed(req.ClientID, req.Topic, write) {
		return false, "a device may use only topics under devices/{its id}/"
	}
	return true, ""
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return "unknown device"
	case errors.Is(err, registry.ErrDisabled):
		return "device disabled"
	case errors.Is(err, registry.ErrRevoked):
		return "credentials revoked"
	case errors.Is(err, registry.ErrUnauthorized):
		return "bad credentials"
	}
	return "error"
}

var (
	allowJSON = []byte(`{"result":"allow","is_superuser":false,"ok":true}` + "\n")
	okText    = []byte("ok")
)

// answer writes the verdict in the broker's format. status, if not zero,
// overrides the status of a refusal.
func (h *Handler) answer(w http.ResponseWriter, check string, f format, allow bool, why string, status int) {
	result := "deny"
	if allow {
		result = "allow"
	}
	h.counters[[2]string{check, result}].Inc()
	if f == formatMosquittoText {
		w.Header().Set("Content-Type", "text/plain")
		if allow {
			_, _ = w.Write(okText)
			return
		}
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, why)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if allow {
		_, _ = w.Write(allowJSON)
		return
	}
	if status == 0 {
		status = http.StatusForbidden
		if f == formatEMQX {
			// EMQX reads any status but 200 and 204 as "ignore".
			status = http.StatusOK
		}
	}
	w.WriteHeader(status)
	b, _ := json.Marshal(struct {
		Result string `json:"result"`
		OK     bool   `json:"ok"`
		Error  string `json:"error"`
	}{result, false, why})
	_, _ = w.Write(append(b, '\n'))
}
