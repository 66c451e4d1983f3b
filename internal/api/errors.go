package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// Error is an error with its HTTP status and machine code, for the errors
// the API itself finds (bad arguments, bodies) and for tests.
type Error struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *Error) Error() string { return e.Message }

var (
	errNotImplemented = &Error{Status: http.StatusNotImplemented, Code: "not_implemented", Message: "not available on this hub"}
	errPanic          = errors.New("handler panic")
)

// invalidArg is a 400 invalid_argument naming the field.
func invalidArg(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid_argument", Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// errorBody is the JSON shape of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// httpError maps an error to its HTTP status and body. It is the only place
// that decides how internal errors look to API clients; an error it does not
// know is a 500 whose text is logged, never sent.
func httpError(err error) (int, errorDetail) {
	var e *Error
	if errors.As(err, &e) {
		return e.Status, errorDetail{Code: e.Code, Message: e.Message, Field: e.Field}
	}
	var rej Rejection
	if errors.As(err, &rej) {
		status := http.StatusUnprocessableEntity
		switch rej.RejectCode() {
		case "rate_limited":
			status = http.StatusTooManyRequests
		case "payload_too_large":
			status = http.StatusRequestEntityTooLarge
		}
		return status, errorDetail{Code: rej.RejectCode(), Message: rej.Error(), Field: rej.RejectField()}
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, errorDetail{Code: "payload_too_large", Message: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound, errorDetail{Code: "not_found", Message: err.Error()}
	case errors.Is(err, registry.ErrExists):
		return http.StatusConflict, errorDetail{Code: "already_exists", Message: err.Error(), Field: "id"}
	case errors.Is(err, registry.ErrInvalidID):
		return http.StatusBadRequest, errorDetail{Code: "invalid_argument", Message: err.Error(), Field: "id"}
	case errors.Is(err, devicetype.ErrUnknownType):
		return http.StatusBadRequest, errorDetail{Code: "unknown_device_type", Message: err.Error(), Field: "type"}
	case errors.Is(err, readings.ErrBadCursor):
		return http.StatusBadRequest, errorDetail{Code: "bad_cursor", Message: "bad cursor", Field: "cursor"}
	case errors.Is(err, access.ErrUnauthorized), errors.Is(err, registry.ErrUnauthorized):
		return http.StatusUnauthorized, errorDetail{Code: "unauthorized", Message: "missing, invalid or revoked bearer token"}
	case errors.Is(err, registry.ErrDisabled):
		return http.StatusForbidden, errorDetail{Code: "device_disabled", Message: "device disabled"}
	case errors.Is(err, access.ErrForbidden):
		return http.StatusForbidden, errorDetail{Code: "forbidden", Message: "the token's role may not do this"}
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		return 499, errorDetail{Code: "canceled", Message: "request canceled"}
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, errorDetail{Code: "timeout", Message: "timed out"}
	}
	return http.StatusInternalServerError, errorDetail{Code: "internal", Message: "internal error"}
}

// writeError answers r with err, logging errors the client cannot act on.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, d := httpError(err)
	if status >= 500 {
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devicehub"`)
	}
	writeJSON(w, status, errorBody{Error: d})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may have gone; nothing to do about it
}

// decodeBody reads a JSON request body of at most limit bytes into v,
// refusing unknown fields and trailing data, with errors that name the field.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &Error{Status: http.StatusBadRequest, Code: "invalid_argument", Message: "body: must hold a single JSON object"}
	}
	return nil
}

func bodyError(err error) error {
	var (
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
		maxErr  *http.MaxBytesError
	)
	switch {
	case errors.As(err, &maxErr):
		return err
	case errors.Is(err, io.EOF):
		return &Error{Status: http.StatusBadRequest, Code: "invalid_argument", Message: "body: empty, want a JSON object"}
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Code: "invalid_argument", Message: "body: invalid JSON: " + err.Error()}
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return &Error{Status: http.StatusBadRequest, Code: "invalid_argument", Message: "body: must be a JSON object"}
		}
		return invalidArg(field, "must be %s, got %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalidArg(field, "unknown field")
	}
	return &Error{Status: http.StatusBadRequest, Code: "invalid_argument", Message: "body: " + err.Error()}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "bool":
		return "a bool"
	}
	return "a " + goKind
}
