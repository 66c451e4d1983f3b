// Package web is the dashboard: server-rendered pages (html/template) with
// small hand-written JavaScript modules for what is live (the event stream,
// charts, forms), all embedded in the binary, no request to another host.
//
// The pages read through the same REST API the CLI uses: each request
// builds a client.Client whose transport calls the API's handler in the
// process with the visitor's session cookie, so the API authenticates the
// user and enforces its role exactly as for a token. The browser's scripts
// call /api/v1 themselves with the cookie and the session's CSRF token.
// Sign-in and sign-out are the only things this package does itself, with
// the accounts service.
package web

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/api"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Auth signs users in and out and authenticates their sessions
// (*accounts.Service).
type Auth interface {
	Login(ctx context.Context, name, password, remoteAddr string) (string, *accounts.Session, *accounts.User, error)
	Authenticate(ctx context.Context, secret string) (*accounts.User, *accounts.Session, error)
	Logout(ctx context.Context, secret string) error
}

// Options tune the dashboard.
type Options struct {
	// SecureCookie forces the Secure attribute on the session cookie;
	// it is set anyway when the request came over TLS.
	SecureCookie bool
}

// Dashboard serves the web dashboard. Create it with New.
type Dashboard struct {
	api    http.Handler
	auth   Auth
	opts   Options
	log    *slog.Logger
	pages  map[string]*template.Template
	static http.Handler
	mux    *http.ServeMux
}

// New returns the dashboard over the API's handler.
func New(apiHandler http.Handler, auth Auth, opts Options, log *slog.Logger) (*Dashboard, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	d := &Dashboard{api: apiHandler, auth: auth, opts: opts, log: log, pages: pages, mux: http.NewServeMux()}
	d.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	d.routes()
	return d, nil
}

// ServeHTTP serves the dashboard's pages and assets.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Everything the pages load comes from this origin; nothing may frame them.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	d.mux.ServeHTTP(w, r)
}

func (d *Dashboard) routes() {
	m := d.mux
	m.Handle("GET /static/", http.HandlerFunc(d.serveStatic))
	m.HandleFunc("GET /login", d.loginPage)
	m.HandleFunc("POST /login", d.login)
	m.HandleFunc("POST /logout", d.logout)
	m.HandleFunc("GET /{$}", d.page(d.overview))
	m.HandleFunc("GET /devices", d.page(d.devices))
	m.HandleFunc("GET /devices/{id}", d.page(d.device))
	m.HandleFunc("GET /provisioning", d.page(d.provisioning))
	m.HandleFunc("GET /groups", d.page(d.groups))
	m.HandleFunc("GET /types", d.page(d.types))
	m.HandleFunc("GET /tokens", d.page(d.tokens))
	m.HandleFunc("GET /audit", d.page(d.audit))
	m.HandleFunc("GET /alerts", d.page(d.alerts))
	m.HandleFunc("GET /firmware", d.page(d.firmware))
	m.HandleFunc("GET /firmware/rollouts/{id}", d.page(d.rollout))
	m.HandleFunc("GET /config", d.page(d.config))
	m.HandleFunc("GET /monitors", d.page(d.monitors))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "404 page not found", http.StatusNotFound)
	})
}

func (d *Dashboard) serveStatic(w http.ResponseWriter, r *http.Request) {
	// Assets change with the binary; an hour of caching keeps pages fast
	// and an upgrade visible soon.
	w.Header().Set("Cache-Control", "public, max-age=3600")
	d.static.ServeHTTP(w, r)
}

// session is the signed-in visitor of a request.
type session struct {
	user   *accounts.User
	secret string
	csrf   string
	api    *client.Client
}

// canWrite reports whether the user's role may change things.
func (s *session) canWrite() bool { return access.Allowed(s.user.Role, true) }

// pageFunc renders one page's data; it returns the template name and data.
type pageFunc func(w http.ResponseWriter, r *http.Request, s *session) (string, any, error)

// page wraps a page: it authenticates the session (or sends the visitor
// to the sign-in form), renders, and turns API errors into an error page.
func (d *Dashboard) page(fn pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := d.session(r)
		if !ok {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		name, data, err := fn(w, r, s)
		if err != nil {
			status := client.StatusOf(err)
			switch status {
			case http.StatusUnauthorized:
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			case 0:
				status = http.StatusInternalServerError
				d.log.Error("page failed", "path", r.URL.Path, "err", err)
			}
			w.WriteHeader(status)
			d.render(w, r, s, "error", "Error", map[string]any{"Status": status, "Message": err.Error()})
			return
		}
		if name == "" {
			return // the page answered itself
		}
		d.render(w, r, s, name, "", data)
	}
}

// layout is what every page's frame needs.
type layout struct {
	Title    string
	Nav      string
	User     *accounts.User
	CSRF     string
	CanWrite bool
	IsAdmin  bool
	Data     any
}

// titled lets a page's data name the page's title.
type titled interface{ PageTitle() string }

func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, s *session, name, title string, data any) {
	t := d.pages[name]
	if t == nil {
		http.Error(w, "no template "+name, http.StatusInternalServerError)
		return
	}
	if tt, ok := data.(titled); ok && title == "" {
		title = tt.PageTitle()
	}
	l := layout{Title: title, Nav: name, Data: data}
	if s != nil {
		l.User, l.CSRF, l.CanWrite, l.IsAdmin = s.user, s.csrf, s.canWrite(), s.user.Role == access.Admin
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", l); err != nil {
		d.log.Error("render page", "page", name, "err", err)
		http.Error(w, "render failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	_, _ = buf.WriteTo(w)
}

// session returns the request's signed-in session, if any.
func (d *Dashboard) session(r *http.Request) (*session, bool) {
	c, err := r.Cookie(api.SessionCookie)
	if err != nil || c.Value == "" {
		return nil, false
	}
	u, _, err := d.auth.Authenticate(r.Context(), c.Value)
	if err != nil {
		if !errors.Is(err, accounts.ErrBadLogin) {
			d.log.Error("authenticate session", "err", err)
		}
		return nil, false
	}
	s := &session{user: u, secret: c.Value, csrf: accounts.CSRFToken(c.Value)}
	s.api = client.New("http://devicehub", "", &http.Client{Transport: &inProcess{api: d.api, from: r, cookie: c.Value}})
	return s, true
}

// inProcess is an http.RoundTripper that serves a request with the API's
// handler in this process, as the visitor: with their session cookie and
// remote address, so that the API authenticates and audits them.
type inProcess struct {
	api    http.Handler
	from   *http.Request
	cookie string
}

func (t *inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: t.cookie})
	req.RemoteAddr = t.from.RemoteAddr
	req.RequestURI = req.URL.RequestURI()
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	t.api.ServeHTTP(rec, req)
	return &http.Response{
		Status: http.StatusText(rec.status), StatusCode: rec.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: rec.header, Body: io.NopCloser(&rec.body), ContentLength: int64(rec.body.Len()), Request: req,
	}, nil
}

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	header      http.Header
	body        bytes.Buffer
	status      int
	wroteHeader bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = status, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.body.Write(b)
}

// loginPage shows the sign-in form.
func (d *Dashboard) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := d.session(r); ok {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	d.render(w, r, nil, "login", "Sign in", map[string]string{"Next": safeNext(r.URL.Query().Get("next"))})
}

// loginBodyLimit bounds the sign-in form.
const loginBodyLimit = 8 << 10

// login checks the form and starts a session.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	// Login CSRF: a form posted from another site is refused. SameSite
	// keeps our cookie off such a post; this keeps theirs off ours.
	if !sameOrigin(r) {
		http.Error(w, "cross-site sign-in refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, loginBodyLimit)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	name, password := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	secret, sess, _, err := d.auth.Login(r.Context(), name, password, r.RemoteAddr)
	if err != nil {
		status, msg := http.StatusUnauthorized, "Wrong name or password."
		switch {
		case errors.Is(err, accounts.ErrThrottled):
			status, msg = http.StatusTooManyRequests, "Too many failed sign-ins. Try again later."
		case !errors.Is(err, accounts.ErrBadLogin):
			status, msg = http.StatusInternalServerError, "Sign-in failed: the hub could not check it."
			d.log.Error("sign in", "err", err)
		}
		w.WriteHeader(status)
		d.render(w, r, nil, "login", "Sign in", map[string]string{"Next": next, "Error": msg, "Name": name})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: api.SessionCookie, Value: secret, Path: "/", Expires: sess.ExpiresAt,
		MaxAge: int(time.Until(sess.ExpiresAt).Seconds()), HttpOnly: true,
		Secure: d.secure(r), SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the session; it needs the session's CSRF token.
func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, loginBodyLimit)
	_ = r.ParseForm()
	c, err := r.Cookie(api.SessionCookie)
	if err == nil && c.Value != "" {
		if !accounts.CheckCSRF(c.Value, r.PostFormValue("csrf")) {
			http.Error(w, "sign-out refused: missing or wrong CSRF token", http.StatusForbidden)
			return
		}
		if err := d.auth.Logout(r.Context(), c.Value); err != nil {
			d.log.Error("sign out", "err", err)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: api.SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: d.secure(r), SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// sameOrigin reports whether a form post comes from our own pages: its
// Origin (or, without one, its Referer) names this host. A request with
// neither (an old client, a script) is let through: it carries no cookie
// of a victim that SameSite would not have kept off already.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		ref := r.Header.Get("Referer")
		if ref == "" {
			return o == ""
		}
		o = ref
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// safeNext keeps a post-sign-in redirect on this site.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.HasPrefix(next, "/login") {
		return "/"
	}
	return next
}

// secure reports whether the session cookie must be Secure: under TLS,
// directly or behind a proxy that says so.
func (d *Dashboard) secure(r *http.Request) bool {
	return d.opts.SecureCookie || r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}
