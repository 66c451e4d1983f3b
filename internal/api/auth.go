package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/registry"
)

// perm is who may call an operation.
type perm int

// The permissions of operations. Roles nest: an admin may do what an
// operator may, an operator what a viewer may.
const (
	permPublic   perm = iota // anyone
	permViewer               // an operator token of any role: reads
	permOperator             // operator or admin: device operations
	permAdmin                // admin only: tokens, audit
	permDevice               // a device's API key
	// permSecret: a device-facing operation that authenticates the
	// caller itself with a secret in the request body (a provisioning
	// token, the registration shared secret); operator tokens give
	// nothing. Not audited: the operation logs what it does.
	permSecret
	// permOperatorOrSecret: an operator token, or the operation's own
	// secret as the bearer (a device polling its provisioning operation);
	// the handler decides which (see pollOperation).
	permOperatorOrSecret
)

// role is the least role of a permission; "" for public and device ones.
func (p perm) role() access.Role {
	switch p {
	case permViewer:
		return access.Viewer
	case permOperator, permOperatorOrSecret:
		return access.Operator
	case permAdmin:
		return access.Admin
	}
	return ""
}

// The security schemes of the OpenAPI document.
const (
	schemeBearer    = "bearer"
	schemeDevice    = "deviceKey"
	schemeOperation = "operationSecret"
)

// metaPerm is the operation metadata key holding its perm.
const metaPerm = "devicehub.perm"

// RoleExtension is the OpenAPI extension on each operation that names the
// least role it needs (viewer, operator, admin), or "device" (a device's
// API key), or "secret" (a secret in the request body; no token).
const RoleExtension = "x-devicehub-role"

// register adds an operation: huma validates its input and documents it;
// p says who may call it, enforced by guard. To add an operation, write
// its input and output types and a handler, and call register from the
// registerXxx method of its file:
//
//	register(a, permOperator, huma.Operation{
//		OperationID: "disableDevice", Method: http.MethodPost,
//		Path: "/api/v1/devices/{id}/disable", Summary: "Disable a device", Tags: []string{"devices"},
//	}, a.disableDevice)
//
// Handler errors go through httpError; a change (any method but GET) is
// written to the audit trail with the handler's target (see setTarget).
func register[I, O any](a *API, p perm, op huma.Operation, h func(context.Context, *I) (*O, error)) {
	describe(&op, p)
	if op.MaxBodyBytes == 0 {
		op.MaxBodyBytes = a.opts.MaxBodyBytes
	}
	huma.Register(a.huma, op, func(ctx context.Context, in *I) (*O, error) {
		out, err := h(ctx, in)
		if err != nil {
			return nil, a.toResponse(ctx, err)
		}
		return out, nil
	})
}

// describe sets an operation's permission metadata and documents it.
func describe(op *huma.Operation, p perm) {
	if op.Metadata == nil {
		op.Metadata = map[string]any{}
	}
	op.Metadata[metaPerm] = p
	if op.Extensions == nil {
		op.Extensions = map[string]any{}
	}
	switch p {
	case permViewer, permOperator, permAdmin:
		op.Security = []map[string][]string{{schemeBearer: {}}}
		op.Extensions[RoleExtension] = string(p.role())
		op.Description += "\n\nNeeds a token with role " + string(p.role()) + " or above."
	case permDevice:
		op.Security = []map[string][]string{{schemeDevice: {}}}
		op.Extensions[RoleExtension] = "device"
	case permSecret:
		op.Security = []map[string][]string{}
		op.Extensions[RoleExtension] = "secret"
	case permOperatorOrSecret:
		op.Security = []map[string][]string{{schemeOperation: {}}, {schemeBearer: {}}}
		op.Extensions[RoleExtension] = string(p.role())
		op.Description += "\n\nNeeds the operation's secret, or a token with role " + string(p.role()) + " or above."
	}
}

// reqInfo is what guard knows of a request, shared with the handler
// through the context.
type reqInfo struct {
	r                  *http.Request
	opID, method, path string
	token              *access.Token
	device             deviceIdentity
	target             string
	detail             string
}

type reqInfoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	if info, ok := ctx.Value(reqInfoKey{}).(*reqInfo); ok {
		return info
	}
	return &reqInfo{}
}

// setAuditDetail says, for the audit trail, what the request changed.
func setAuditDetail(ctx context.Context, detail string) {
	infoFrom(ctx).detail = detail
}

// setTarget names what the request changes (a device id, a token id) for
// the audit trail.
func setTarget(ctx context.Context, target string) {
	infoFrom(ctx).target = target
}

type deviceIdentity struct{ id, typ string }

// guard is the one place that enforces who may call what: it
// authenticates the bearer token (or the device's API key), checks the
// operation's permission, and writes every change asked of the API,
// allowed or refused, to the audit trail.
func (a *API) guard(ctx huma.Context, next func(huma.Context)) {
	op := ctx.Operation()
	p, _ := op.Metadata[metaPerm].(perm)
	r, w := humago.Unwrap(ctx)
	info := &reqInfo{r: r, opID: op.OperationID, method: r.Method, path: r.URL.Path, target: r.PathValue("id")}
	ctx = huma.WithValue(ctx, reqInfoKey{}, info)

	status, finished := 0, false
	audited := p != permPublic && p != permDevice && p != permSecret && r.Method != http.MethodGet && r.Method != http.MethodHead
	guard, presented, targeted := a.secrets.forPerm(p, r)
	target := ""
	if targeted {
		target = info.target
	}
	start := time.Now()
	defer func() {
		switch {
		case status != 0:
		case !finished: // the handler panicked; recoverer answers 500
			status = http.StatusInternalServerError
		default:
			status = ctx.Status()
		}
		// A refusal of a caller that is not authenticated is counted and
		// logged (secrets.go), not written to the audit trail.
		unknown := info.token == nil && (status == http.StatusUnauthorized || status == http.StatusTooManyRequests)
		switch {
		case guard == nil:
		case status == http.StatusUnauthorized && presented:
			guard.Failed(r.RemoteAddr, target, info.opID)
		case status == http.StatusUnauthorized:
			a.secrets.refusedAnonymous(info.opID, r.RemoteAddr)
		}
		if audited && !unknown {
			a.recordAudit(r, info, status, start)
		}
	}()
	if guard != nil && presented {
		if err := guard.Check(r.RemoteAddr, target); err != nil {
			status = a.writeThrottled(w, r, err)
			return
		}
	}

	switch p {
	case permPublic, permSecret, permOperatorOrSecret:
	case permDevice:
		if a.deps.DeviceAuth == nil || a.deps.DeviceData == nil {
			status = a.writeError(w, r, errNotImplemented)
			return
		}
		key, ok := bearerToken(r)
		if !ok {
			status = a.writeError(w, r, registry.ErrUnauthorized)
			return
		}
		id, typ, err := a.deps.DeviceAuth.AuthenticateAPIKey(key)
		if err != nil {
			status = a.writeError(w, r, err)
			return
		}
		info.device = deviceIdentity{id: id, typ: typ}
	default:
		tok, err := a.authorize(r, p.role())
		info.token = tok
		if err != nil {
			status = a.writeError(w, r, err)
			return
		}
	}
	if err := unknownQuery(op, r); err != nil {
		status = a.writeError(w, r, err)
		return
	}
	next(ctx)
	finished = true
}

// unknownQuery refuses a query parameter the operation does not declare:
// a misspelt option (?wiat=10s) must not be silently ignored.
func unknownQuery(op *huma.Operation, r *http.Request) error {
	if r.URL.RawQuery == "" {
		return nil
	}
	for name := range r.URL.Query() {
		known := false
		for _, p := range op.Parameters {
			if p.In == "query" && p.Name == name {
				known = true
				break
			}
		}
		if known {
			continue
		}
		var names []string
		for _, p := range op.Parameters {
			if p.In == "query" {
				names = append(names, p.Name)
			}
		}
		takes := "no query parameters"
		if len(names) > 0 {
			slices.Sort(names)
			takes = "only " + strings.Join(names, ", ")
		}
		return &Error{Status: http.StatusBadRequest, Code: "unknown_parameter", Field: name,
			Message: fmt.Sprintf("unknown query parameter %q: %s %s takes %s", name, op.Method, op.Path, takes)}
	}
	return nil
}

// authorize authenticates r's bearer token and checks that its role is at
// least need. It returns the token whenever it is valid, even when its
// role falls short, so that the refusal can be audited.
func (a *API) authorize(r *http.Request, need access.Role) (*access.Token, error) {
	bearer, ok := bearerToken(r)
	if !ok {
		if c, err := r.Cookie(SessionCookie); err == nil && a.deps.Sessions != nil {
			return a.authorizeSession(r, c.Value, need)
		}
		return nil, access.ErrUnauthorized
	}
	if a.deps.Tokens == nil {
		return nil, errNotImplemented
	}
	tok, err := a.deps.Tokens.Verify(r.Context(), bearer)
	if err != nil {
		return nil, err
	}
	if !tok.Role.Permits(need) {
		return tok, access.ErrForbidden
	}
	return tok, nil
}

// auditTimeout bounds writing one audit entry.
const auditTimeout = 5 * time.Second

// recordAudit writes one entry of the audit trail. It runs after the
// answer and does not fail the request; a failure is logged.
func (a *API) recordAudit(r *http.Request, info *reqInfo, status int, at time.Time) {
	if a.deps.Audit == nil {
		return
	}
	if status == 0 {
		status = http.StatusOK
	}
	e := access.AuditEntry{
		Time: at.UTC(), Method: r.Method, Path: r.URL.Path, OperationID: info.opID,
		Target: info.target, Status: status, RemoteAddr: r.RemoteAddr, Detail: info.detail,
	}
	if info.token != nil {
		e.TokenID, e.TokenName, e.Role = info.token.ID, info.token.Name, info.token.Role
	}
	// The entry is written even when the client has gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	var err error
	if a.audits != nil {
		err = a.audits.append(ctx, e)
	} else {
		_, err = a.deps.Audit.AppendAudit(ctx, e)
	}
	if err != nil {
		a.log.Error("write audit entry", "op", info.opID, "path", e.Path, "status", status, "err", err)
	}
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !equalFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return h[len(prefix):], true
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// SessionCookie is the name of the dashboard's session cookie. The API
// accepts it instead of a bearer token, with the same roles; a change
// (any method but GET and HEAD) must then carry the session's CSRF token
// in the CSRFHeader header.
const SessionCookie = "devicehub_session"

// CSRFHeader is the request header holding a session's CSRF token.
const CSRFHeader = "X-CSRF-Token"

// errCSRF refuses a change made with a session cookie but without the
// session's CSRF token.
var errCSRF = &Error{Status: http.StatusForbidden, Code: "csrf_failed", Message: "missing or wrong " + CSRFHeader + " header for a signed-in session"}

// authorizeSession authenticates a dashboard user by the session cookie's
// secret. The user acts as a token named after it ("user:NAME"), so that
// the audit trail names the person.
func (a *API) authorizeSession(r *http.Request, secret string, need access.Role) (*access.Token, error) {
	u, _, err := a.deps.Sessions.Authenticate(r.Context(), secret)
	if errors.Is(err, accounts.ErrBadLogin) {
		return nil, access.ErrUnauthorized
	}
	if err != nil {
		return nil, err
	}
	tok := &access.Token{ID: UserTokenPrefix + u.Name, Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !accounts.CheckCSRF(secret, r.Header.Get(CSRFHeader)) {
		return tok, errCSRF
	}
	if !tok.Role.Permits(need) {
		return tok, access.ErrForbidden
	}
	return tok, nil
}

// UserTokenPrefix starts the token id of a signed-in user in the audit
// trail: "user:alice".
const UserTokenPrefix = "user:"
