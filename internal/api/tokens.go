package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/access"
)

func (a *API) registerTokens() {
	register(a, permAdmin, huma.Operation{
		OperationID: "createToken", Method: http.MethodPost, Path: "/api/v1/tokens", Tags: []string{"tokens"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Create a token",
		Description:   "Creates an operator token and answers its secret: the only time it is shown (only its hash is stored).",
	}, a.createToken)
	register(a, permAdmin, huma.Operation{
		OperationID: "listTokens", Method: http.MethodGet, Path: "/api/v1/tokens", Tags: []string{"tokens"},
		Summary: "List tokens", Description: "Every token, revoked ones included, oldest first; never their secrets.",
	}, a.listTokens)
	register(a, permAdmin, huma.Operation{
		OperationID: "getToken", Method: http.MethodGet, Path: "/api/v1/tokens/{id}", Tags: []string{"tokens"},
		Summary: "Get a token",
	}, a.getToken)
	register(a, permAdmin, huma.Operation{
		OperationID: "revokeToken", Method: http.MethodDelete, Path: "/api/v1/tokens/{id}", Tags: []string{"tokens"},
		Summary: "Revoke a token", Description: "The token stops working at once. Revoking a revoked token keeps its first revocation time.",
	}, a.revokeToken)
}

// Token is an operator token as the API shows it: never its secret.
type Token struct {
	ID        string     `json:"id" example:"3f2a9c1b7d4e5f60"`
	Name      string     `json:"name" example:"ci"`
	Role      string     `json:"role" enum:"admin,operator,viewer"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

func tokenOut(t *access.Token) Token {
	return Token{ID: t.ID, Name: t.Name, Role: string(t.Role), CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt}
}

// CreateTokenRequest is the body of POST /api/v1/tokens.
type CreateTokenRequest struct {
	Name string `json:"name" minLength:"1" maxLength:"128" doc:"What the token is for." example:"ci"`
	Role string `json:"role" enum:"admin,operator,viewer" doc:"viewer reads; operator also provisions devices; admin also manages tokens and reads the audit trail."`
}

// CreatedToken is the answer of POST /api/v1/tokens.
type CreatedToken struct {
	Token
	Secret string `json:"token" doc:"The bearer secret: shown only this once."`
}

type createTokenInput struct{ Body CreateTokenRequest }

type createTokenOutput struct{ Body CreatedToken }

func (a *API) createToken(ctx context.Context, in *createTokenInput) (*createTokenOutput, error) {
	secret, tok, err := a.deps.Tokens.Create(ctx, in.Body.Name, access.Role(in.Body.Role))
	if err != nil {
		return nil, err
	}
	setTarget(ctx, tok.ID)
	return &createTokenOutput{Body: CreatedToken{Token: tokenOut(&tok), Secret: secret}}, nil
}

// TokenList is the answer of GET /api/v1/tokens.
type TokenList struct {
	Tokens []Token `json:"tokens"`
}

type tokenListOutput struct{ Body TokenList }

func (a *API) listTokens(ctx context.Context, _ *struct{}) (*tokenListOutput, error) {
	toks, err := a.deps.Tokens.List(ctx)
	if err != nil {
		return nil, err
	}
	out := TokenList{Tokens: make([]Token, 0, len(toks))}
	for i := range toks {
		out.Tokens = append(out.Tokens, tokenOut(&toks[i]))
	}
	return &tokenListOutput{Body: out}, nil
}

// TokenIDInput is the token id in an operation's path.
type TokenIDInput struct {
	ID string `path:"id" doc:"Token id."`
}

// TokenAnswer is the answer of the operations on one token.
type TokenAnswer struct {
	Token Token `json:"token"`
}

type tokenOutput struct{ Body TokenAnswer }

func (a *API) getToken(ctx context.Context, in *TokenIDInput) (*tokenOutput, error) {
	return a.findToken(ctx, in.ID)
}

func (a *API) findToken(ctx context.Context, id string) (*tokenOutput, error) {
	toks, err := a.deps.Tokens.List(ctx)
	if err != nil {
		return nil, err
	}
	for i := range toks {
		if toks[i].ID == id {
			return &tokenOutput{Body: TokenAnswer{Token: tokenOut(&toks[i])}}, nil
		}
	}
	return nil, &Error{Status: http.StatusNotFound, Code: "not_found", Message: "token " + id + " not found"}
}

func (a *API) revokeToken(ctx context.Context, in *TokenIDInput) (*tokenOutput, error) {
	if err := a.deps.Tokens.Revoke(ctx, in.ID); err != nil {
		return nil, err
	}
	return a.findToken(ctx, in.ID)
}
