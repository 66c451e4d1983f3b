package monitors

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors of the package.
var (
	// ErrInvalid is wrapped by every error about a bad monitor definition
	// or condition (see FieldError).
	ErrInvalid = errors.New("invalid monitor")
	// ErrNotFound: no monitor has this id.
	ErrNotFound = errors.New("monitor not found")
	// ErrPrivateTarget: an HTTP monitor's URL reaches a loopback,
	// link-local or private address and monitors.allow_private_targets is
	// off.
	ErrPrivateTarget = errors.New("monitor target is a private address")
	// ErrBadToken: a stream connection's monitor id and token do not match.
	ErrBadToken = errors.New("unknown monitor or bad token")
	// ErrNotStream: a stream connection for a monitor of another transport.
	ErrNotStream = errors.New("not a tcp monitor")
	// ErrClosed: the service stopped.
	ErrClosed = errors.New("monitor service stopped")
)

// FieldError is a bad value of one field of a definition. It wraps
// ErrInvalid.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Transports.
const (
	TransportHTTP = "http"
	TransportTCP  = "tcp"
)

// Status is where a monitor stands (the seed's status machine).
type Status string

// Statuses.
const (
	// Connecting: an HTTP monitor trying its first delivery (after it was
	// created, enabled again, or the hub started).
	Connecting Status = "CONNECTING"
	// Active: delivering.
	Active Status = "ACTIVE"
	// Inactive: not connected (a stream without a receiver, a failing
	// HTTP monitor without replay); events meanwhile are not kept.
	Inactive Status = "INACTIVE"
	// Suspended: not connected, with auto_replay_on_connect: the monitor's
	// cursor stays, and the events after it are delivered once the
	// receiver is back.
	Suspended Status = "SUSPENDED"
	// Disabled: an HTTP monitor that delivered nothing for the disable
	// period (monitors.disable_after, default 24h) or whose receiver
	// answered 410 Gone. Events are not kept; enable it again through the
	// API.
	Disabled Status = "DISABLED"
)

// Ack modes of a stream monitor.
const (
	AckOff      = "off"      // a batch is acknowledged when it is written
	AckExplicit = "explicit" // the receiver acknowledges each batch
)

// Limits of a definition.
const (
	MaxBatchSize     = 10000
	MaxBatchDuration = 3600 // seconds
	MaxTopics        = 64
	MaxDescription   = 1024
	DefaultTimeoutMS = 5000
	MaxTimeoutMS     = 600000
)

// Spec is what an operator defines of a monitor. The zero values of the
// optional fields take the seed's defaults (see Normalize).
type Spec struct {
	// Topics are the events the monitor receives (see ParseTopic), e.g.
	// "device_*", "config_*[group=north]", "*".
	Topics    []string `json:"topics"`
	Transport string   `json:"transport"` // http or tcp
	// HTTP transport.
	URL    string `json:"url,omitempty"`
	Method string `json:"method,omitempty"` // PUT (default) or POST
	// BasicAuth is "user:pass" for HTTP basic authentication, or "".
	BasicAuth         string `json:"basic_auth,omitempty"`
	ConnectTimeoutMS  int    `json:"connect_timeout_ms,omitempty"`  // 0: 5000
	ResponseTimeoutMS int    `json:"response_timeout_ms,omitempty"` // 0: 5000
	// Ack is the TCP acknowledgement mode: off (default) or explicit.
	Ack string `json:"ack,omitempty"`
	// BatchSize bounds the events of one delivery (default 100);
	// BatchDuration bounds the seconds an event waits for its batch to
	// fill (default 10; fractions allowed; 0 after normalising means "send
	// what is there").
	BatchSize     int      `json:"batch_size,omitempty"`
	BatchDuration *float64 `json:"batch_duration,omitempty"`
	Compression   string   `json:"compression,omitempty"` // none (default) or zlib; gzip means zlib
	Format        string   `json:"format,omitempty"`      // json (default) or xml
	// AutoReplayOnConnect keeps the events a disconnected monitor missed
	// and delivers them first when it is back.
	AutoReplayOnConnect bool   `json:"auto_replay_on_connect,omitempty"`
	Description         string `json:"description,omitempty"`
}

// Duration is BatchDuration as a time.Duration (after Normalize).
func (s *Spec) Duration() time.Duration {
	if s.BatchDuration == nil {
		return 10 * time.Second
	}
	return time.Duration(*s.BatchDuration * float64(time.Second))
}

// Normalize checks s and fills its defaults. Its error names the field
// (a *FieldError).
func (s *Spec) Normalize() error {
	if len(s.Topics) == 0 {
		return fieldErr("topics", "at least one topic is required")
	}
	if len(s.Topics) > MaxTopics {
		return fieldErr("topics", "at most %d topics", MaxTopics)
	}
	seen := map[string]bool{}
	for i, t := range s.Topics {
		tp, err := ParseTopic(t)
		if err != nil {
			return fieldErr(fmt.Sprintf("topics[%d]", i), "%v", err)
		}
		s.Topics[i] = tp.String()
		if seen[s.Topics[i]] {
			return fieldErr(fmt.Sprintf("topics[%d]", i), "duplicate topic %q", s.Topics[i])
		}
		seen[s.Topics[i]] = true
	}
	s.Transport = strings.ToLower(strings.TrimSpace(s.Transport))
	switch s.Transport {
	case TransportHTTP:
		if s.URL == "" {
			return fieldErr("url", "required for the http transport")
		}
		u, err := url.Parse(s.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
			return fieldErr("url", "must be an absolute http or https URL, got %q", s.URL)
		}
		if u.User != nil {
			return fieldErr("url", "must not carry credentials: use basic_auth")
		}
		if u.Fragment != "" {
			return fieldErr("url", "must not have a fragment")
		}
		s.Method = strings.ToUpper(strings.TrimSpace(s.Method))
		switch s.Method {
		case "":
			s.Method = "PUT"
		case "PUT", "POST":
		default:
			return fieldErr("method", "must be PUT or POST, got %q", s.Method)
		}
		if s.BasicAuth != "" {
			if u, _, ok := strings.Cut(s.BasicAuth, ":"); !ok || u == "" {
				return fieldErr("basic_auth", "must be user:password")
			}
			if strings.ContainsAny(s.BasicAuth, "\r\n") {
				return fieldErr("basic_auth", "must not contain line breaks")
			}
		}
		for _, f := range []struct {
			name string
			v    *int
		}{{"connect_timeout_ms", &s.ConnectTimeoutMS}, {"response_timeout_ms", &s.ResponseTimeoutMS}} {
			if *f.v < 0 || *f.v > MaxTimeoutMS {
				return fieldErr(f.name, "must be 0 (meaning %d) to %d milliseconds", DefaultTimeoutMS, MaxTimeoutMS)
			}
			if *f.v == 0 {
				*f.v = DefaultTimeoutMS
			}
		}
		if s.Ack != "" {
			return fieldErr("ack", "only for the tcp transport")
		}
	case TransportTCP:
		if s.URL != "" || s.Method != "" || s.BasicAuth != "" || s.ConnectTimeoutMS != 0 || s.ResponseTimeoutMS != 0 {
			field := "url"
			switch {
			case s.Method != "":
				field = "method"
			case s.BasicAuth != "":
				field = "basic_auth"
			case s.ConnectTimeoutMS != 0:
				field = "connect_timeout_ms"
			case s.ResponseTimeoutMS != 0:
				field = "response_timeout_ms"
			}
			return fieldErr(field, "only for the http transport")
		}
		s.Ack = strings.ToLower(strings.TrimSpace(s.Ack))
		switch s.Ack {
		case "":
			s.Ack = AckOff
		case AckOff, AckExplicit:
		default:
			return fieldErr("ack", "must be explicit or off, got %q", s.Ack)
		}
	case "":
		return fieldErr("transport", "required: http or tcp")
	default:
		return fieldErr("transport", "must be http or tcp, got %q", s.Transport)
	}
	switch {
	case s.BatchSize == 0:
		s.BatchSize = 100
	case s.BatchSize < 0 || s.BatchSize > MaxBatchSize:
		return fieldErr("batch_size", "must be 1 to %d, got %d", MaxBatchSize, s.BatchSize)
	}
	if s.BatchDuration == nil {
		d := 10.0
		s.BatchDuration = &d
	} else if d := *s.BatchDuration; math.IsNaN(d) || d < 0 || d > MaxBatchDuration {
		return fieldErr("batch_duration", "must be 0 to %d seconds, got %v", MaxBatchDuration, d)
	}
	s.Compression = strings.ToLower(strings.TrimSpace(s.Compression))
	switch s.Compression {
	case "", "none":
		s.Compression = "none"
	case "zlib", "gzip", "deflate":
		// The seed accepts gzip "for backwards compatibility": it always
		// meant deflate in a zlib stream, and so it does here.
		s.Compression = "zlib"
	default:
		return fieldErr("compression", "must be none or zlib (gzip is a synonym of zlib), got %q", s.Compression)
	}
	s.Format = strings.ToLower(strings.TrimSpace(s.Format))
	switch s.Format {
	case "":
		s.Format = "json"
	case "json", "xml":
	default:
		return fieldErr("format", "must be json or xml, got %q", s.Format)
	}
	if len(s.Description) > MaxDescription || !utf8.ValidString(s.Description) {
		return fieldErr("description", "at most %d bytes of UTF-8", MaxDescription)
	}
	return nil
}

// Monitor is a stored monitor: its definition and its state.
type Monitor struct {
	ID string `json:"id"`
	Spec
	Status Status `json:"status"`
	// StatusReason says why the monitor has its status ("" when Active).
	StatusReason string     `json:"status_reason,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	LastConnect  *time.Time `json:"last_connect,omitempty"`
	LastSent     *time.Time `json:"last_sent,omitempty"`
	// FailingSince is when the current run of failed deliveries began
	// (nil while deliveries succeed): DISABLED comes disable_after later.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	// Secret signs HTTP deliveries (whsec_…). After a rotation, PrevSecret
	// signs them too until PrevSecretUntil.
	Secret          string     `json:"-"`
	PrevSecret      string     `json:"-"`
	PrevSecretUntil *time.Time `json:"-"`
	// TokenHash is the SHA-256 of the stream token of a tcp monitor.
	TokenHash []byte `json:"-"`
	// Cursor is the Seq of the last event acknowledged (or skipped).
	Cursor int64 `json:"cursor"`
}
