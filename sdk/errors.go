package sdk

import (
	"errors"
	"fmt"
)

// Kind classifies an *Error, so that a device program can decide what to do
// with a switch instead of matching messages.
type Kind int

// The kinds of errors the SDK reports.
const (
	// KindOther is any error not classified below.
	KindOther Kind = iota
	// KindInvalidOptions: Options are incomplete or contradictory.
	KindInvalidOptions
	// KindInvalidPayload: a message is not what the hub takes (not JSON,
	// not an object or array of objects).
	KindInvalidPayload
	// KindMessageTooLarge: a message is over Options.MaxMessageBytes, or the
	// hub refused it for its size.
	KindMessageTooLarge
	// KindRejected: the hub refused a message for good (validation, unknown
	// topic, ...); Reason says why.
	KindRejected
	// KindProvisioningRejected: an operator rejected the provisioning
	// operation.
	KindProvisioningRejected
	// KindProvisioningExpired: the provisioning operation expired before an
	// operator approved it.
	KindProvisioningExpired
	// KindProvisioningFailed: the provisioning endpoint refused the token
	// or could not be reached.
	KindProvisioningFailed
	// KindCredentialsRevoked: the hub no longer accepts the device's
	// credentials; the client stopped sending.
	KindCredentialsRevoked
	// KindStorage: the local database failed.
	KindStorage
	// KindClosed: the client was closed.
	KindClosed
)

var kindNames = [...]string{
	KindOther:                "other",
	KindInvalidOptions:       "invalid_options",
	KindInvalidPayload:       "invalid_payload",
	KindMessageTooLarge:      "message_too_large",
	KindRejected:             "rejected",
	KindProvisioningRejected: "provisioning_rejected",
	KindProvisioningExpired:  "provisioning_expired",
	KindProvisioningFailed:   "provisioning_failed",
	KindCredentialsRevoked:   "credentials_revoked",
	KindStorage:              "storage",
	KindClosed:               "closed",
}

// String returns the kind's stable name (snake_case).
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is the one error type of the SDK: every error a method returns is
// an *Error (use errors.As, or KindOf).
type Error struct {
	Kind Kind
	// Op is what the SDK was doing ("enqueue", "provision", "send", ...).
	Op string
	// Reason is the hub's explanation, when the hub gave one.
	Reason string
	// MessageID is the msg_id of the message concerned, if any.
	MessageID string
	// Err is the underlying error, if any.
	Err error
}

func (e *Error) Error() string {
	s := "sdk: " + e.Op + ": " + e.Kind.String()
	if e.MessageID != "" {
		s += " (msg_id " + e.MessageID + ")"
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, &Error{Kind: k}) match any *Error of kind k.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Op == "" && t.Err == nil && t.Reason == "" && t.MessageID == "" && t.Kind == e.Kind
}

// KindOf returns the kind of err if it is (or wraps) an *Error, KindOther
// otherwise.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindOther
}

func newError(kind Kind, op string, err error) *Error {
	return &Error{Kind: kind, Op: op, Err: err}
}
