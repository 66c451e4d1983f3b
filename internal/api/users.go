package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
)

func (a *API) registerUsers() {
	register(a, permAdmin, huma.Operation{
		OperationID: "createUser", Method: http.MethodPost, Path: "/api/v1/users", Tags: []string{"users"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Add a dashboard user",
		Description:   "Creates an operator account that signs in to the dashboard with its name and password (stored as an argon2id hash). Its role is one of the API's.",
	}, a.createUser)
	register(a, permAdmin, huma.Operation{
		OperationID: "listUsers", Method: http.MethodGet, Path: "/api/v1/users", Tags: []string{"users"},
		Summary: "List dashboard users", Description: "By name; never their password hashes.",
	}, a.listUsers)
	register(a, permAdmin, huma.Operation{
		OperationID: "deleteUser", Method: http.MethodDelete, Path: "/api/v1/users/{name}", Tags: []string{"users"},
		Summary: "Remove a dashboard user", Description: "The account and its sessions go at once; answers the removed user.",
	}, a.deleteUser)
	register(a, permViewer, huma.Operation{
		OperationID: "whoami", Method: http.MethodGet, Path: "/api/v1/whoami", Tags: []string{"users"},
		Summary: "Who is calling", Description: "The caller's token or signed-in user and its role.",
	}, a.whoami)
}

// User is a dashboard user as the API shows it.
type User struct {
	Name      string    `json:"name" example:"alice"`
	Role      string    `json:"role" enum:"admin,operator,viewer"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateUserRequest is the body of POST /api/v1/users.
type CreateUserRequest struct {
	Name     string `json:"name" minLength:"1" maxLength:"64" pattern:"^[A-Za-z0-9._@-]+$" example:"alice"`
	Role     string `json:"role" enum:"admin,operator,viewer" doc:"What the user may do, as for tokens."`
	Password string `json:"password" minLength:"8" maxLength:"1024" doc:"Never stored: only its argon2id hash is."`
}

// UserAnswer is the answer of the operations on one user.
type UserAnswer struct {
	User User `json:"user"`
}

// UserList is the answer of GET /api/v1/users.
type UserList struct {
	Users []User `json:"users"`
}

type createUserInput struct{ Body CreateUserRequest }

type userOutput struct{ Body UserAnswer }

type userListOutput struct{ Body UserList }

func userOut(u *accounts.User) User {
	return User{Name: u.Name, Role: string(u.Role), CreatedAt: u.CreatedAt}
}

func (a *API) createUser(ctx context.Context, in *createUserInput) (*userOutput, error) {
	setTarget(ctx, UserTokenPrefix+in.Body.Name)
	if a.deps.Users == nil {
		return nil, errNotImplemented
	}
	u, err := a.deps.Users.AddUser(ctx, in.Body.Name, in.Body.Password, access.Role(in.Body.Role))
	if err != nil {
		return nil, err
	}
	return &userOutput{Body: UserAnswer{User: userOut(u)}}, nil
}

func (a *API) listUsers(ctx context.Context, _ *struct{}) (*userListOutput, error) {
	if a.deps.Users == nil {
		return nil, errNotImplemented
	}
	us, err := a.deps.Users.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := UserList{Users: make([]User, 0, len(us))}
	for i := range us {
		out.Users = append(out.Users, userOut(&us[i]))
	}
	return &userListOutput{Body: out}, nil
}

type userNameInput struct {
	Name string `path:"name" doc:"User name."`
}

func (a *API) deleteUser(ctx context.Context, in *userNameInput) (*userOutput, error) {
	setTarget(ctx, UserTokenPrefix+in.Name)
	if a.deps.Users == nil {
		return nil, errNotImplemented
	}
	us, err := a.deps.Users.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	var found *accounts.User
	for i := range us {
		if us[i].Name == in.Name {
			found = &us[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("delete user %s: %w", in.Name, accounts.ErrNotFound)
	}
	if err := a.deps.Users.DeleteUser(ctx, in.Name); err != nil {
		return nil, err
	}
	return &userOutput{Body: UserAnswer{User: userOut(found)}}, nil
}

// Whoami is the answer of GET /api/v1/whoami.
type Whoami struct {
	Name string `json:"name" doc:"The token's name, or the signed-in user's."`
	Kind string `json:"kind" enum:"token,user"`
	Role string `json:"role" enum:"admin,operator,viewer"`
}

type whoamiOutput struct{ Body Whoami }

func (a *API) whoami(ctx context.Context, _ *struct{}) (*whoamiOutput, error) {
	tok := infoFrom(ctx).token
	if tok == nil {
		return nil, access.ErrUnauthorized
	}
	kind := "token"
	if len(tok.ID) > len(UserTokenPrefix) && tok.ID[:len(UserTokenPrefix)] == UserTokenPrefix {
		kind = "user"
	}
	return &whoamiOutput{Body: Whoami{Name: tok.Name, Kind: kind, Role: string(tok.Role)}}, nil
}
