package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/deviceconfig"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/monitors"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/throttle"
	"github.com/devicehub/devicehub/internal/twin"
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

// deviceCredentialErr marks an error of a device-facing operation whose
// credentials are in the request (a provisioning token): there, an unknown
// token is a 401, not the 404 an operator gets for an unknown token id.
type deviceCredentialErr struct{ err error }

func (e deviceCredentialErr) Error() string { return e.err.Error() }
func (e deviceCredentialErr) Unwrap() error { return e.err }

// invalidArg is a 400 invalid_argument naming the field.
func invalidArg(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid_argument", Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// ErrorResponse is the JSON body of every error answer of the API:
// {"error": {"code", "message", "field"}}. It is also the huma error type,
// so that huma's own errors (validation, body limits) have the same shape.
type ErrorResponse struct {
	Detail ErrorDetail `json:"error"`
	status int
}

// ErrorDetail says what went wrong.
type ErrorDetail struct {
	Code    string `json:"code" doc:"Stable machine code: invalid_argument, not_found, unauthorized, forbidden, already_exists, payload_too_large, rate_limited, internal, device_disabled, invalid_token, token_expired, token_revoked, token_exhausted, csrf_failed, operation_expired, operation_rejected, operation_decided, operation_busy, already_delivered, registration_disabled, bad_shared_secret, import_refused, unknown_command, conflict, version_conflict, precondition_required, unknown_parameter, command_finished, private_target, or an ingest rejection code." example:"invalid_argument"`
	Message string `json:"message" doc:"What went wrong, for people." example:"limit: must be an integer from 1 to 1000"`
	Field   string `json:"field,omitempty" doc:"The request field at fault (body property, query or path parameter, header), if any." example:"limit"`
	// CurrentVersion is the version a stale write missed.
	CurrentVersion *int64 `json:"current_version,omitempty" doc:"With version_conflict: the current version of what the request meant to change; read it again and retry."`
}

func (e *ErrorResponse) Error() string { return e.Detail.Message }

// GetStatus returns the HTTP status (huma.StatusError).
func (e *ErrorResponse) GetStatus() int { return e.status }

// ContentType keeps error bodies application/json (huma would say
// application/problem+json).
func (e *ErrorResponse) ContentType(ct string) string { return ct }

// humaSettings sets, once, the two huma settings the API needs that huma
// keeps only at package level (it has no per-API option for them). New
// calls it, so that importing this package changes nothing by itself.
var humaSettings = sync.OnceFunc(func() {
	// huma builds every error it finds itself (validation, unreadable or
	// oversized bodies, content negotiation) with NewError; this makes them
	// the API's one error shape. Handler errors go through httpError.
	huma.NewError = humaError
	// The API always answers arrays, never null: say so in the document.
	huma.DefaultArrayNullable = false
})

// humaError turns an error huma found into an ErrorResponse. Validation
// failures (huma's 422) are the API's 400 invalid_argument naming the
// first field at fault; 422 is kept for device data the ingest rejects.
func humaError(status int, msg string, errs ...error) huma.StatusError {
	d := ErrorDetail{Message: msg}
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		status, d.Code = http.StatusBadRequest, "invalid_argument"
		for _, err := range errs {
			var ed *huma.ErrorDetail
			if errors.As(err, &ed) {
				d.Field, d.Message = locationField(ed.Location, ed.Message)
				break
			}
			if err != nil {
				d.Message = msg + ": " + err.Error()
				break
			}
		}
		if d.Message == "" {
			d.Message = "invalid request"
		}
	case http.StatusRequestEntityTooLarge:
		d.Code = "payload_too_large"
	case http.StatusUnsupportedMediaType:
		d.Code = "unsupported_media_type"
	case http.StatusNotAcceptable:
		d.Code = "not_acceptable"
	case http.StatusRequestTimeout:
		d.Code = "timeout"
	case http.StatusNotFound:
		d.Code = "not_found"
	default:
		if status >= 500 || status == 0 {
			if status == 0 {
				status = http.StatusInternalServerError
			}
			d.Code, d.Message = "internal", "internal error"
		} else {
			d.Code = strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_")
		}
	}
	if d.Message == "" {
		d.Message = http.StatusText(status)
	}
	return &ErrorResponse{Detail: d, status: status}
}

// locationField reads huma's location of a validation error ("body.tags",
// "query.limit", "path.stream", "body" for a missing property) and returns
// the field and a message that names it.
func locationField(loc, msg string) (string, string) {
	field := loc
	for _, p := range []string{"body.", "query.", "path.", "header.", "cookie."} {
		if strings.HasPrefix(field, p) {
			field = field[len(p):]
			break
		}
	}
	if field == "body" || field == "" {
		field = ""
		const req = "expected required property "
		if rest, ok := strings.CutPrefix(msg, req); ok {
			field, _, _ = strings.Cut(rest, " ")
			return field, field + ": required"
		}
		if msg == "unexpected property" {
			return "", "body: unknown field"
		}
		return "", "body: " + msg
	}
	if msg == "unexpected property" {
		return field, field + ": unknown field"
	}
	return field, field + ": " + msg
}

// httpError maps an error to its HTTP status and body. It is the only place
// that decides how internal errors look to API clients; an error it does not
// know is a 500 whose text is logged, never sent.
func httpError(err error) (int, ErrorDetail) {
	var e *Error
	if errors.As(err, &e) {
		return e.Status, ErrorDetail{Code: e.Code, Message: e.Message, Field: e.Field}
	}
	var er *ErrorResponse
	if errors.As(err, &er) {
		return er.status, er.Detail
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
		return status, ErrorDetail{Code: rej.RejectCode(), Message: rej.Error(), Field: rej.RejectField()}
	}
	var param *commands.ParamError
	if errors.As(err, &param) {
		field := "payload"
		if param.Param != "" {
			field += "." + param.Param
		}
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: param.Error(), Field: field}
	}
	var monField *monitors.FieldError
	if errors.As(err, &monField) {
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: monField.Error(), Field: monField.Field}
	}
	if status, d, ok := configError(err); ok {
		return status, d
	}
	if status, d, ok := firmwareError(err); ok {
		return status, d
	}
	if status, d, ok := alertsError(err); ok {
		return status, d
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, ErrorDetail{Code: "payload_too_large", Message: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
	case errors.Is(err, throttle.ErrThrottled):
		return http.StatusTooManyRequests, ErrorDetail{Code: "throttled", Message: err.Error()}
	case errors.As(err, new(deviceCredentialErr)) && errors.Is(err, provisioning.ErrTokenNotFound):
		return http.StatusUnauthorized, ErrorDetail{Code: "invalid_token", Message: "unknown provisioning token", Field: "token"}
	case errors.Is(err, provisioning.ErrTokenExpired):
		return http.StatusUnauthorized, ErrorDetail{Code: "token_expired", Message: "the provisioning token has expired", Field: "token"}
	case errors.Is(err, provisioning.ErrTokenRevoked):
		return http.StatusUnauthorized, ErrorDetail{Code: "token_revoked", Message: "the provisioning token was revoked", Field: "token"}
	case errors.Is(err, provisioning.ErrTokenExhausted):
		return http.StatusForbidden, ErrorDetail{Code: "token_exhausted", Message: "the provisioning token has been used as often as it may", Field: "token"}
	case errors.Is(err, provisioning.ErrTokenNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}
	case errors.Is(err, provisioning.ErrOperationNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: "provisioning operation not found"}
	case errors.Is(err, provisioning.ErrOperationExpired):
		return http.StatusGone, ErrorDetail{Code: "operation_expired", Message: "the provisioning operation has expired"}
	case errors.Is(err, provisioning.ErrOperationRejected):
		return http.StatusGone, ErrorDetail{Code: "operation_rejected", Message: err.Error()}
	case errors.Is(err, provisioning.ErrAlreadyDelivered):
		return http.StatusGone, ErrorDetail{Code: "already_delivered", Message: "the credentials were delivered already; they are delivered only once"}
	case errors.Is(err, provisioning.ErrOperationDecided):
		return http.StatusConflict, ErrorDetail{Code: "operation_decided", Message: err.Error()}
	case errors.Is(err, provisioning.ErrOperationBusy):
		return http.StatusConflict, ErrorDetail{Code: "operation_busy", Message: "the operation is being approved; try again later"}
	case errors.Is(err, provisioning.ErrBadSecret):
		return http.StatusUnauthorized, ErrorDetail{Code: "unauthorized", Message: "bad operation secret"}
	case errors.Is(err, provisioning.ErrRegistrationOff):
		return http.StatusForbidden, ErrorDetail{Code: "registration_disabled", Message: "self-registration is not enabled on this hub"}
	case errors.Is(err, provisioning.ErrBadSharedSecret):
		return http.StatusUnauthorized, ErrorDetail{Code: "bad_shared_secret", Message: "bad shared secret", Field: "shared_secret"}
	case errors.Is(err, provisioning.ErrDeviceRevoked):
		return http.StatusForbidden, ErrorDetail{Code: "device_revoked", Message: err.Error()}
	case errors.Is(err, provisioning.ErrKeyBoundElsewhere):
		return http.StatusConflict, ErrorDetail{Code: "already_exists", Message: err.Error(), Field: "device_id"}
	case errors.Is(err, provisioning.ErrDeviceTypeRequired):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: "type: a device type is required", Field: "type"}
	case errors.Is(err, provisioning.ErrInvalid), errors.Is(err, registry.ErrInvalid):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error()}
	case errors.Is(err, registry.ErrGroupNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}
	case errors.Is(err, registry.ErrGroupExists):
		return http.StatusConflict, ErrorDetail{Code: "already_exists", Message: err.Error(), Field: "id"}
	case errors.Is(err, registry.ErrImportRefused):
		return http.StatusUnprocessableEntity, ErrorDetail{Code: "import_refused", Message: err.Error()}
	case errors.Is(err, commands.ErrNotFound), errors.Is(err, commands.ErrDeviceNotFound), errors.Is(err, twin.ErrDeviceNotFound),
		errors.Is(err, commands.ErrJobNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}
	case errors.Is(err, commands.ErrFinished):
		return http.StatusConflict, ErrorDetail{Code: "command_finished", Message: err.Error()}
	case errors.Is(err, commands.ErrUnknownCommand):
		return http.StatusBadRequest, ErrorDetail{Code: "unknown_command", Message: err.Error(), Field: "command"}
	case errors.Is(err, commands.ErrInvalid), errors.Is(err, twin.ErrInvalid):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error()}
	case errors.Is(err, twin.ErrVersionConflict):
		d := ErrorDetail{Code: "version_conflict", Message: err.Error(), Field: "version"}
		var ve *twin.VersionError
		if errors.As(err, &ve) {
			d.CurrentVersion = &ve.Current
		}
		return http.StatusPreconditionFailed, d
	case errors.Is(err, twin.ErrBusy):
		return http.StatusConflict, ErrorDetail{Code: "conflict", Message: err.Error()}
	case errors.Is(err, monitors.ErrNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}
	case errors.Is(err, monitors.ErrPrivateTarget):
		return http.StatusBadRequest, ErrorDetail{Code: "private_target", Message: err.Error(), Field: "url"}
	case errors.Is(err, monitors.ErrInvalid):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error()}
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}
	case errors.Is(err, access.ErrNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}
	case errors.Is(err, registry.ErrExists):
		return http.StatusConflict, ErrorDetail{Code: "already_exists", Message: err.Error(), Field: "id"}
	case errors.Is(err, registry.ErrInvalidID):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error(), Field: "id"}
	case errors.Is(err, access.ErrInvalid):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error()}
	case errors.Is(err, devicetype.ErrUnknownType):
		return http.StatusBadRequest, ErrorDetail{Code: "unknown_device_type", Message: err.Error(), Field: "type"}
	case quotaExceeded(err):
		return http.StatusInsufficientStorage, ErrorDetail{Code: "storage_full", Message: err.Error()}
	case errors.Is(err, readings.ErrBadQuery):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: strings.TrimSuffix(err.Error(), ": "+readings.ErrBadQuery.Error()), Field: badQueryField(err)}
	case errors.Is(err, readings.ErrBadCursor):
		return http.StatusBadRequest, ErrorDetail{Code: "bad_cursor", Message: "bad cursor", Field: "cursor"}
	case errors.Is(err, accounts.ErrExists):
		return http.StatusConflict, ErrorDetail{Code: "already_exists", Message: err.Error(), Field: "name"}
	case errors.Is(err, accounts.ErrInvalid):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error()}
	case errors.Is(err, accounts.ErrNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}
	case errors.Is(err, access.ErrUnauthorized), errors.Is(err, registry.ErrUnauthorized):
		return http.StatusUnauthorized, ErrorDetail{Code: "unauthorized", Message: "missing, invalid or revoked bearer token"}
	case errors.Is(err, registry.ErrDisabled):
		return http.StatusForbidden, ErrorDetail{Code: "device_disabled", Message: "device disabled"}
	case errors.Is(err, access.ErrForbidden):
		return http.StatusForbidden, ErrorDetail{Code: "forbidden", Message: "the token's role may not do this"}
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		return 499, ErrorDetail{Code: "canceled", Message: "request canceled"}
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, ErrorDetail{Code: "timeout", Message: "timed out"}
	}
	return http.StatusInternalServerError, ErrorDetail{Code: "internal", Message: "internal error"}
}

// toResponse turns any error into the ErrorResponse huma writes, logging
// the ones the client cannot act on.
func (a *API) toResponse(ctx context.Context, err error) *ErrorResponse {
	status, d := httpError(err)
	if status >= 500 {
		info := infoFrom(ctx)
		a.log.Error("request failed", "op", info.opID, "method", info.method, "path", info.path, "status", status, "err", err)
	}
	return &ErrorResponse{Detail: d, status: status}
}

// writeError answers r with err outside huma (plain handlers, middleware),
// logging errors the client cannot act on. It returns the status written.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) int {
	status, d := httpError(err)
	if status >= 500 {
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devicehub"`)
	}
	writeJSON(w, status, ErrorResponse{Detail: d})
	return status
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may have gone; nothing to do about it
}

// configError maps the errors of configuration management.
func configError(err error) (int, ErrorDetail, bool) {
	var mv *deviceconfig.MissingVarsError
	switch {
	case errors.As(err, &mv):
		f := ""
		if len(mv.Names) > 0 {
			f = mv.Names[0]
		}
		return http.StatusUnprocessableEntity, ErrorDetail{Code: "render_failed", Message: err.Error(), Field: f}, true
	case errors.Is(err, deviceconfig.ErrRender):
		return http.StatusUnprocessableEntity, ErrorDetail{Code: "render_failed", Message: err.Error()}, true
	case errors.Is(err, deviceconfig.ErrStale):
		return http.StatusConflict, ErrorDetail{Code: "stale_checksum", Message: err.Error(), Field: "checksum"}, true
	case errors.Is(err, deviceconfig.ErrInvalid), errors.Is(err, deviceconfig.ErrUnknownBackend):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error()}, true
	case errors.Is(err, deviceconfig.ErrTemplateExists):
		return http.StatusConflict, ErrorDetail{Code: "already_exists", Message: err.Error(), Field: "id"}, true
	case errors.Is(err, deviceconfig.ErrRequired):
		return http.StatusConflict, ErrorDetail{Code: "template_required", Message: err.Error(), Field: "templates"}, true
	case errors.Is(err, deviceconfig.ErrInUse):
		return http.StatusConflict, ErrorDetail{Code: "template_in_use", Message: err.Error()}, true
	case errors.Is(err, deviceconfig.ErrDeactivated):
		return http.StatusConflict, ErrorDetail{Code: "config_deactivated", Message: err.Error()}, true
	case errors.Is(err, deviceconfig.ErrTemplateNotFound), errors.Is(err, deviceconfig.ErrNoConfig),
		errors.Is(err, deviceconfig.ErrDeviceNotFound), errors.Is(err, deviceconfig.ErrGroupNotFound),
		errors.Is(err, deviceconfig.ErrNotFoundHistory), errors.Is(err, deviceconfig.ErrJobNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}, true
	}
	return 0, ErrorDetail{}, false
}

// quotaExceeded reports an error that says the hub has no room to store
// (retention.FullError: the disk is nearly full).
func quotaExceeded(err error) bool {
	var q interface{ QuotaExceeded() bool }
	return errors.As(err, &q) && q.QuotaExceeded()
}
