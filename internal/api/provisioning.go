package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/provisioning"
)

// registerProvisioning registers provisioning tokens (admin), operations
// (created and polled by devices, decided by operators) and
// self-registration (devices, with the shared secret).
func (a *API) registerProvisioning() {
	register(a, permAdmin, huma.Operation{
		OperationID: "createProvisioningToken", Method: http.MethodPost, Path: "/api/v1/provisioning/tokens", Tags: []string{"provisioning"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Create a provisioning token",
		Description: "Devices create provisioning operations with the token. Its secret (token) is answered only this once. " +
			"max_uses 0 is unlimited; without expires_at it lives 7 days; with auto_approve its operations are approved as they are created.",
	}, a.createProvisioningToken)
	register(a, permAdmin, huma.Operation{
		OperationID: "listProvisioningTokens", Method: http.MethodGet, Path: "/api/v1/provisioning/tokens", Tags: []string{"provisioning"},
		Summary: "List provisioning tokens", Description: "Every token, revoked and expired ones included; never their secrets.",
	}, a.listProvisioningTokens)
	register(a, permAdmin, huma.Operation{
		OperationID: "revokeProvisioningToken", Method: http.MethodDelete, Path: "/api/v1/provisioning/tokens/{id}", Tags: []string{"provisioning"},
		Summary: "Revoke a provisioning token", Description: "It admits no more operations; those it admitted stay as they are.",
	}, a.revokeProvisioningToken)

	schemas := a.huma.OpenAPI().Components.Schemas
	// Device-facing bodies are read by provisioning's decoders, which
	// ignore unknown keys (newer firmware may send more): the document
	// says so.
	jsonBody := func(t reflect.Type, name, desc string) *huma.RequestBody {
		ref := schemas.Schema(t, true, name)
		if s := schemas.SchemaFromRef(ref.Ref); s != nil {
			s.AdditionalProperties = true
		}
		return &huma.RequestBody{Required: true, Description: desc, Content: map[string]*huma.MediaType{
			"application/json": {Schema: ref},
		}}
	}
	register(a, permSecret, huma.Operation{
		OperationID: "createProvisioningOperation", Method: http.MethodPost, Path: "/api/v1/provisioning/operations", Tags: []string{"provisioning", "device"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Start provisioning (device)",
		Description: "A device starts provisioning with a provisioning token (in the body; no bearer token), optionally naming the " +
			"device id it would like. It gets the operation's id, a verification code to show, an expiry and a secret to poll " +
			"GET /api/v1/provisioning/operations/{id} with. An unknown token is 401 invalid_token; an expired or revoked one 401 " +
			"token_expired or token_revoked; one used up 403 token_exhausted. Unknown body keys are ignored.",
		MaxBodyBytes:     provisioning.MaxRequestBytes,
		RequestBody:      jsonBody(reflect.TypeOf(CreateOperationRequest{}), "CreateOperationRequest", "The provisioning token and the wished device id."),
		SkipValidateBody: true,
	}, a.createOperation)
	register(a, permOperatorOrSecret, huma.Operation{
		OperationID: "getProvisioningOperation", Method: http.MethodGet, Path: "/api/v1/provisioning/operations/{id}", Tags: []string{"provisioning", "device"},
		Summary: "Poll a provisioning operation",
		Description: "With the operation's secret as the bearer (the device): its status (pending, approved, rejected with the " +
			"reason, expired) and, in the first answer after approval only, its credentials; later polls are 410 already_delivered. " +
			"With an operator token: the operation as operators see it, never credentials.",
	}, a.getOperation)
	register(a, permOperator, huma.Operation{
		OperationID: "listProvisioningOperations", Method: http.MethodGet, Path: "/api/v1/provisioning/operations", Tags: []string{"provisioning"},
		Summary: "List provisioning operations", Description: "Newest first, with their verification codes; status=pending lists those waiting for an operator.",
	}, a.listOperations)
	register(a, permOperator, huma.Operation{
		OperationID: "approveProvisioningOperation", Method: http.MethodPost, Path: "/api/v1/provisioning/operations/{id}/approve", Tags: []string{"provisioning"},
		Summary: "Approve a provisioning operation",
		Description: "Provisions the device with the token's type, group and tags, under device_id, or the id the device asked " +
			"for, or one the hub picks; the device's next poll gets its credentials. 409 already_exists if the id is taken; " +
			"410 operation_expired; 409 operation_decided or operation_busy.",
	}, a.approveOperation)
	register(a, permOperator, huma.Operation{
		OperationID: "rejectProvisioningOperation", Method: http.MethodPost, Path: "/api/v1/provisioning/operations/{id}/reject", Tags: []string{"provisioning"},
		Summary: "Reject a provisioning operation", Description: "The device's next poll gets status rejected and the reason.",
	}, a.rejectOperation)
	register(a, permSecret, huma.Operation{
		OperationID: "registerDevice", Method: http.MethodPost, Path: "/api/v1/device/register", Tags: []string{"device"},
		Summary: "Register a device with the shared secret (device)",
		Description: "Self-registration: a device sends the hub's shared secret (no bearer token) and its stable hardware key. " +
			"A new key creates a device (is_new true); a known key registers its device again, as after a factory reset " +
			"(is_new false): new credentials, the old ones stop working, id, type, name, group and tags stay. 403 " +
			"registration_disabled when the hub has no shared secret; 401 bad_shared_secret. Unknown body keys are ignored.",
		MaxBodyBytes:     provisioning.MaxRequestBytes,
		RequestBody:      jsonBody(reflect.TypeOf(RegisterRequest{}), "RegisterRequest", "The shared secret, the hardware key and what a new device should be."),
		SkipValidateBody: true,
	}, a.registerDevice)
}

// ProvisioningToken is a provisioning token as the API shows it: never its
// secret, but in the answer of its creation.
type ProvisioningToken struct {
	ID          string     `json:"id" example:"pt_3f2a9c1b7d4e5f60"`
	Name        string     `json:"name,omitempty"`
	DeviceType  string     `json:"device_type" example:"WeatherStation"`
	Group       string     `json:"group,omitempty"`
	Tags        []string   `json:"tags,omitempty"`
	ExpiresAt   time.Time  `json:"expires_at"`
	MaxUses     int        `json:"max_uses" doc:"0: unlimited."`
	Uses        int        `json:"uses" doc:"How many operations the token created."`
	AutoApprove bool       `json:"auto_approve"`
	CreatedAt   time.Time  `json:"created_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	Secret      string     `json:"token,omitempty" doc:"The token's secret: only in the answer of its creation."`
}

func provisioningTokenOut(t *provisioning.Token) ProvisioningToken {
	return ProvisioningToken{ID: t.ID, Name: t.Name, DeviceType: t.DeviceType, Group: t.Group, Tags: t.Tags, ExpiresAt: t.ExpiresAt,
		MaxUses: t.MaxUses, Uses: t.Uses, AutoApprove: t.AutoApprove, CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt}
}

// CreateProvisioningTokenRequest is the body of POST
// /api/v1/provisioning/tokens.
type CreateProvisioningTokenRequest struct {
	Name        string     `json:"name,omitempty" maxLength:"256" doc:"What the token is for."`
	DeviceType  string     `json:"device_type" minLength:"1" doc:"The type of the devices it provisions." example:"WeatherStation"`
	Group       string     `json:"group,omitempty" maxLength:"128" doc:"The group of the devices it provisions."`
	Tags        []string   `json:"tags,omitempty" maxItems:"64" doc:"The tags of the devices it provisions."`
	ExpiresAt   *time.Time `json:"expires_at,omitempty" doc:"When it stops admitting operations; default in 7 days."`
	MaxUses     int        `json:"max_uses,omitempty" minimum:"0" doc:"How many operations it may create; 0 or absent: unlimited."`
	AutoApprove bool       `json:"auto_approve,omitempty" doc:"Approve its operations as they are created."`
}

type createProvisioningTokenInput struct {
	Body CreateProvisioningTokenRequest
}

type provisioningTokenOutput struct{ Body ProvisioningToken }

func (a *API) createProvisioningToken(ctx context.Context, in *createProvisioningTokenInput) (*provisioningTokenOutput, error) {
	if a.deps.ProvisioningTokens == nil {
		return nil, errNotImplemented
	}
	b := in.Body
	req := provisioning.CreateTokenRequest{Name: b.Name, DeviceType: b.DeviceType, Group: b.Group, Tags: b.Tags,
		MaxUses: b.MaxUses, AutoApprove: b.AutoApprove}
	if b.ExpiresAt != nil {
		req.ExpiresAt = *b.ExpiresAt
	}
	res, err := a.deps.ProvisioningTokens.CreateToken(ctx, req)
	if err != nil {
		return nil, err
	}
	setTarget(ctx, res.ID)
	out := provisioningTokenOut(&res.Token)
	out.Secret = res.Secret
	return &provisioningTokenOutput{Body: out}, nil
}

// ProvisioningTokenList is the answer of GET /api/v1/provisioning/tokens.
type ProvisioningTokenList struct {
	Tokens []ProvisioningToken `json:"tokens"`
}

type provisioningTokenListOutput struct{ Body ProvisioningTokenList }

func (a *API) listProvisioningTokens(ctx context.Context, _ *struct{}) (*provisioningTokenListOutput, error) {
	if a.deps.ProvisioningTokens == nil {
		return nil, errNotImplemented
	}
	toks, err := a.deps.ProvisioningTokens.ListTokens(ctx)
	if err != nil {
		return nil, err
	}
	out := ProvisioningTokenList{Tokens: make([]ProvisioningToken, 0, len(toks))}
	for i := range toks {
		out.Tokens = append(out.Tokens, provisioningTokenOut(&toks[i]))
	}
	return &provisioningTokenListOutput{Body: out}, nil
}

// ProvisioningTokenAnswer is the answer of revoking a provisioning token.
type ProvisioningTokenAnswer struct {
	Token ProvisioningToken `json:"token"`
}

type provisioningTokenAnswerOutput struct{ Body ProvisioningTokenAnswer }

func (a *API) revokeProvisioningToken(ctx context.Context, in *TokenIDInput) (*provisioningTokenAnswerOutput, error) {
	if a.deps.ProvisioningTokens == nil {
		return nil, errNotImplemented
	}
	if err := a.deps.ProvisioningTokens.RevokeToken(ctx, in.ID); err != nil {
		return nil, err
	}
	toks, err := a.deps.ProvisioningTokens.ListTokens(ctx)
	if err != nil {
		return nil, err
	}
	for i := range toks {
		if toks[i].ID == in.ID {
			return &provisioningTokenAnswerOutput{Body: ProvisioningTokenAnswer{Token: provisioningTokenOut(&toks[i])}}, nil
		}
	}
	return nil, fmt.Errorf("revoked token %s: %w", in.ID, provisioning.ErrTokenNotFound)
}

// CreateOperationRequest documents the body of POST
// /api/v1/provisioning/operations (provisioning.DecodeCreateOperationRequest
// reads it).
type CreateOperationRequest struct {
	Token    string `json:"token" doc:"The provisioning token's secret."`
	DeviceID string `json:"device_id,omitempty" doc:"The device id the device would like."`
}

// CreatedOperation is the answer of POST /api/v1/provisioning/operations.
type CreatedOperation struct {
	ID               string    `json:"id" example:"op_5d1e0c4b9a7f3e2d1c0b9a8f"`
	VerificationCode string    `json:"verification_code" doc:"Show it: the operator compares it before approving." example:"K7MPQ2XH"`
	ExpiresAt        time.Time `json:"expires_at"`
	Secret           string    `json:"secret" doc:"Poll the operation with Authorization: Bearer <secret>."`
}

type inputRawBody struct {
	RawBody []byte
}

type createdOperationOutput struct{ Body CreatedOperation }

func (a *API) createOperation(ctx context.Context, in *inputRawBody) (*createdOperationOutput, error) {
	if a.deps.ProvisioningOps == nil {
		return nil, errNotImplemented
	}
	req, err := provisioning.DecodeCreateOperationRequest(bytes.Clone(in.RawBody))
	if err != nil {
		return nil, err
	}
	res, err := a.deps.ProvisioningOps.CreateOperation(ctx, req, infoFrom(ctx).remoteAddr())
	if err != nil {
		return nil, deviceCredentialErr{err}
	}
	return &createdOperationOutput{Body: CreatedOperation{ID: res.ID, VerificationCode: res.VerificationCode, ExpiresAt: res.ExpiresAt, Secret: res.Secret}}, nil
}

// remoteAddr is the request's remote address ("" outside a request).
func (i *reqInfo) remoteAddr() string {
	if i.r == nil {
		return ""
	}
	return i.r.RemoteAddr
}

// ProvisioningOperation is a provisioning operation: as a device polling
// it sees it (its status, its device, its credentials once), or as an
// operator sees it (with the verification code, never credentials).
type ProvisioningOperation struct {
	ID                string       `json:"id"`
	Status            string       `json:"status" enum:"pending,approved,delivered,rejected,expired"`
	VerificationCode  string       `json:"verification_code,omitempty" doc:"Operators only."`
	TokenID           string       `json:"token_id,omitempty" doc:"Operators only."`
	RequestedDeviceID string       `json:"requested_device_id,omitempty" doc:"The id the device asked for (operators only)."`
	DeviceID          string       `json:"device_id,omitempty" doc:"The device's id, once approved."`
	DeviceType        string       `json:"device_type,omitempty"`
	Group             string       `json:"group,omitempty"`
	Tags              []string     `json:"tags,omitempty"`
	Reason            string       `json:"reason,omitempty" doc:"Why it was rejected."`
	RemoteAddr        string       `json:"remote_addr,omitempty" doc:"Where the device asked from (operators only)."`
	CreatedAt         *time.Time   `json:"created_at,omitempty"`
	ExpiresAt         time.Time    `json:"expires_at" doc:"Until when it waits for approval, or, approved, for the device to fetch its credentials."`
	DecidedAt         *time.Time   `json:"decided_at,omitempty"`
	Credentials       *Credentials `json:"credentials,omitempty" doc:"In the device's first poll after approval only: its credentials."`
}

func operationOut(op *provisioning.Operation) ProvisioningOperation {
	created := op.CreatedAt
	return ProvisioningOperation{ID: op.ID, Status: op.Status, VerificationCode: op.VerificationCode, TokenID: op.TokenID,
		RequestedDeviceID: op.RequestedDeviceID, DeviceID: op.DeviceID, DeviceType: op.DeviceType, Group: op.Group, Tags: op.Tags,
		Reason: op.Reason, RemoteAddr: op.RemoteAddr, CreatedAt: &created, ExpiresAt: op.ExpiresAt, DecidedAt: op.DecidedAt}
}

// OperationIDInput is the operation id in an operation's path.
type OperationIDInput struct {
	ID string `path:"id" doc:"Provisioning operation id."`
}

type operationOutput struct{ Body ProvisioningOperation }

// getOperation answers a device polling with its operation's secret, or an
// operator: the bearer is tried as the operation's secret first (which has
// no effect when it is not), then as an operator token.
func (a *API) getOperation(ctx context.Context, in *OperationIDInput) (*operationOutput, error) {
	info := infoFrom(ctx)
	bearer, ok := bearerToken(info.r)
	if !ok {
		return nil, access.ErrUnauthorized
	}
	if a.deps.ProvisioningOps == nil {
		return nil, errNotImplemented
	}
	st, err := a.deps.ProvisioningOps.PollOperation(ctx, in.ID, bearer)
	switch {
	case err == nil, errors.Is(err, provisioning.ErrOperationRejected), errors.Is(err, provisioning.ErrOperationExpired):
		// Rejected and expired are statuses the device reads, not errors.
		out := ProvisioningOperation{ID: st.ID, Status: st.Status, DeviceID: st.DeviceID, DeviceType: st.DeviceType,
			ExpiresAt: st.ExpiresAt, Reason: st.Reason}
		if c := st.Credentials; c != nil {
			out.Credentials = &Credentials{DeviceID: st.DeviceID, MQTTUsername: c.MQTTUsername, MQTTPassword: c.MQTTPassword, APIKey: c.APIKey}
		}
		return &operationOutput{Body: out}, nil
	case !errors.Is(err, provisioning.ErrBadSecret):
		return nil, err
	}
	tok, err := a.authorize(info.r, permOperatorOrSecret.role())
	info.token = tok
	if err != nil {
		return nil, err
	}
	op, err := a.deps.ProvisioningOps.GetOperation(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &operationOutput{Body: operationOut(op)}, nil
}

// ListOperationsInput filters GET /api/v1/provisioning/operations.
type ListOperationsInput struct {
	Status string `query:"status" enum:"pending,approved,delivered,rejected" doc:"Only operations with this status; pending: those waiting for an operator."`
	Limit  int    `query:"limit" minimum:"1" maximum:"1000" doc:"At most this many; default 100."`
}

// OperationList is the answer of GET /api/v1/provisioning/operations.
type OperationList struct {
	Operations []ProvisioningOperation `json:"operations"`
}

type operationListOutput struct{ Body OperationList }

func (a *API) listOperations(ctx context.Context, in *ListOperationsInput) (*operationListOutput, error) {
	if a.deps.ProvisioningOps == nil {
		return nil, errNotImplemented
	}
	ops, err := a.deps.ProvisioningOps.ListOperations(ctx, in.Status, in.Limit)
	if err != nil {
		return nil, err
	}
	out := OperationList{Operations: make([]ProvisioningOperation, 0, len(ops))}
	for i := range ops {
		out.Operations = append(out.Operations, operationOut(&ops[i]))
	}
	return &operationListOutput{Body: out}, nil
}

// ApproveRequest is the optional body of an approval.
type ApproveRequest struct {
	DeviceID string `json:"device_id,omitempty" maxLength:"128" doc:"The device id to provision, overriding the one the device asked for."`
}

type approveInput struct {
	OperationIDInput
	Body *ApproveRequest
}

// OperationAnswer is the answer of approving or rejecting an operation.
type OperationAnswer struct {
	Operation ProvisioningOperation `json:"operation"`
}

type operationAnswerOutput struct{ Body OperationAnswer }

func (a *API) approveOperation(ctx context.Context, in *approveInput) (*operationAnswerOutput, error) {
	if a.deps.ProvisioningOps == nil {
		return nil, errNotImplemented
	}
	var req provisioning.ApproveRequest
	if in.Body != nil {
		req.DeviceID = in.Body.DeviceID
	}
	op, err := a.deps.ProvisioningOps.ApproveOperation(ctx, in.ID, req)
	if err != nil {
		return nil, err
	}
	return &operationAnswerOutput{Body: OperationAnswer{Operation: operationOut(op)}}, nil
}

// RejectRequest is the optional body of a rejection.
type RejectRequest struct {
	Reason string `json:"reason,omitempty" maxLength:"512" doc:"Why; the device reads it."`
}

type rejectInput struct {
	OperationIDInput
	Body *RejectRequest
}

func (a *API) rejectOperation(ctx context.Context, in *rejectInput) (*operationAnswerOutput, error) {
	if a.deps.ProvisioningOps == nil {
		return nil, errNotImplemented
	}
	var req provisioning.RejectRequest
	if in.Body != nil {
		req.Reason = in.Body.Reason
	}
	op, err := a.deps.ProvisioningOps.RejectOperation(ctx, in.ID, req)
	if err != nil {
		return nil, err
	}
	return &operationAnswerOutput{Body: OperationAnswer{Operation: operationOut(op)}}, nil
}

// RegisterRequest documents the body of POST /api/v1/device/register
// (provisioning.DecodeRegisterRequest reads it).
type RegisterRequest struct {
	SharedSecret    string `json:"shared_secret" doc:"The hub's registration.shared_secret."`
	Key             string `json:"key" doc:"The device's stable hardware key (e.g. a hash of its MAC address and serial number); 1 to 256 bytes."`
	DeviceID        string `json:"device_id,omitempty" doc:"The id a new device would like (default: derived from the key); a known key keeps its device's id."`
	Type            string `json:"type,omitempty" doc:"A new device's type (default: the hub's registration.default_type)."`
	Name            string `json:"name,omitempty"`
	FirmwareVersion string `json:"firmware_version,omitempty"`
	HardwareVersion string `json:"hardware_version,omitempty"`
}

// Registered is the answer of POST /api/v1/device/register.
type Registered struct {
	DeviceID    string      `json:"device_id"`
	Type        string      `json:"type"`
	IsNew       bool        `json:"is_new" doc:"true: a new device; false: a known key registered again (its old credentials stopped working)."`
	Credentials Credentials `json:"credentials" doc:"The device's new credentials: shown only this once."`
}

type registeredOutput struct{ Body Registered }

func (a *API) registerDevice(ctx context.Context, in *inputRawBody) (*registeredOutput, error) {
	if a.deps.Registration == nil {
		return nil, errNotImplemented
	}
	req, err := provisioning.DecodeRegisterRequest(bytes.Clone(in.RawBody))
	if err != nil {
		return nil, err
	}
	res, err := a.deps.Registration.Register(ctx, req)
	if err != nil {
		return nil, err
	}
	return &registeredOutput{Body: Registered{DeviceID: res.DeviceID, Type: res.DeviceType, IsNew: res.IsNew,
		Credentials: Credentials{DeviceID: res.DeviceID, MQTTUsername: res.MQTTUsername, MQTTPassword: res.MQTTPassword, APIKey: res.APIKey}}}, nil
}
