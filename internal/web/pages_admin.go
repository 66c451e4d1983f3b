package web

import (
	"net/http"
	"sort"
	"strconv"

	"github.com/devicehub/devicehub/client"
)

type provisioningPage struct {
	Pending []client.Operation
	Recent  []client.Operation
	Tokens  []client.ProvisioningToken
	Types   []string
	// TokensShown: the role may list provisioning tokens (admin).
	TokensShown bool
}

func (provisioningPage) PageTitle() string { return "Provisioning" }

func (d *Dashboard) provisioning(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	ctx := r.Context()
	p := provisioningPage{}
	if !s.canWrite() {
		// Operations are an operator's business: the API refuses a viewer.
		return "provisioning", p, nil
	}
	var err error
	if p.Pending, err = s.api.ListOperations(ctx, "pending"); err != nil {
		return "", nil, err
	}
	all, err := s.api.ListOperations(ctx, "")
	if err != nil {
		return "", nil, err
	}
	for _, op := range all {
		if op.Status != "pending" {
			p.Recent = append(p.Recent, op)
		}
		if len(p.Recent) == 50 {
			break
		}
	}
	if s.user.Role == "admin" {
		if p.Tokens, err = s.api.ListProvisioningTokens(ctx); err != nil {
			return "", nil, err
		}
		p.TokensShown = true
		types, err := s.api.DeviceTypes(ctx)
		if err != nil {
			return "", nil, err
		}
		for _, t := range types {
			p.Types = append(p.Types, t.Name)
		}
		sort.Strings(p.Types)
	}
	return "provisioning", p, nil
}

type groupsPage struct{ Groups []client.Group }

func (groupsPage) PageTitle() string { return "Groups" }

func (d *Dashboard) groups(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	g, err := s.api.ListGroups(r.Context())
	if err != nil {
		return "", nil, err
	}
	return "groups", groupsPage{Groups: g}, nil
}

type typesPage struct{ Types []client.DeviceType }

func (typesPage) PageTitle() string { return "Device types" }

func (d *Dashboard) types(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	t, err := s.api.DeviceTypes(r.Context())
	if err != nil {
		return "", nil, err
	}
	sort.Slice(t, func(i, j int) bool { return t[i].Name < t[j].Name })
	return "types", typesPage{Types: t}, nil
}

type tokensPage struct {
	Tokens []client.Token
	Users  []client.User
	Shown  bool
}

func (tokensPage) PageTitle() string { return "Tokens and users" }

func (d *Dashboard) tokens(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	p := tokensPage{}
	if s.user.Role != "admin" {
		return "tokens", p, nil
	}
	var err error
	if p.Tokens, err = s.api.ListTokens(r.Context()); err != nil {
		return "", nil, err
	}
	if p.Users, err = s.api.ListUsers(r.Context()); err != nil {
		return "", nil, err
	}
	p.Shown = true
	return "tokens", p, nil
}

type auditPage struct {
	Entries []client.AuditEntry
	Next    string
	Failed  bool
	Target  string
	Shown   bool
}

func (auditPage) PageTitle() string { return "Audit trail" }

func (d *Dashboard) audit(w http.ResponseWriter, r *http.Request, s *session) (string, any, error) {
	q := r.URL.Query()
	p := auditPage{Target: q.Get("target")}
	p.Failed, _ = strconv.ParseBool(q.Get("failed"))
	if s.user.Role != "admin" {
		return "audit", p, nil
	}
	page, err := s.api.Audit(r.Context(), client.AuditQuery{Target: p.Target, Failed: p.Failed, Cursor: q.Get("cursor"), Limit: 100})
	if err != nil {
		return "", nil, err
	}
	p.Entries, p.Next, p.Shown = page.Entries, page.Next, true
	return "audit", p, nil
}
