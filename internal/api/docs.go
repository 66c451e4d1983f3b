package api

import (
	_ "embed"
	"net/http"
)

// docsPage is the API's documentation page: one self-contained HTML file
// whose small script renders /api/v1/openapi.json. It loads nothing from
// the internet, so that it works on a hub without one.
//
//go:embed static/docs.html
var docsPage []byte

func (a *API) docs(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(docsPage)
}
