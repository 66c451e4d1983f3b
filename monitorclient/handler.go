package monitorclient

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// HandlerOptions configure a webhook receiver.
type HandlerOptions struct {
	// Secrets are the monitor's signing secrets (whsec_…). A delivery
	// verifies if one of its signatures matches one of them. Empty Secrets
	// refuse every delivery: set AllowUnsigned to skip verification.
	Secrets       []string
	AllowUnsigned bool
	// Tolerance is how far a delivery's timestamp may be from now (default
	// 5 minutes), against replays of old deliveries.
	Tolerance time.Duration
	// MaxBodyBytes bounds the body as sent and inflated (default 64 MiB).
	MaxBodyBytes int64
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// NewHandler returns an http.Handler that verifies a delivery's signature
// and timestamp, inflates and decodes its body, and calls fn with the
// batch. fn returning nil answers 204, which acknowledges the batch; an
// error answers 500, and the hub sends the batch again later. A delivery
// that fails verification is answered 401, one that cannot be decoded 400.
func NewHandler(opts HandlerOptions, fn func(ctx context.Context, b *Batch) error) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &handler{opts: opts, fn: fn}
}

type handler struct {
	opts HandlerOptions
	fn   func(ctx context.Context, b *Batch) error
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if !h.opts.AllowUnsigned {
		if err := Verify(h.opts.Secrets, r.Header, body, h.opts.Tolerance, h.opts.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
	}
	format := r.Header.Get(HeaderFormat)
	if format == "" {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		format = FormatJSON
		if strings.HasSuffix(mt, "xml") {
			format = FormatXML
		}
	}
	compression := CompressionNone
	if enc := strings.ToLower(r.Header.Get("Content-Encoding")); enc == "deflate" {
		compression = CompressionZlib
	} else if enc != "" && enc != "identity" {
		http.Error(w, "unsupported content encoding "+enc, http.StatusUnsupportedMediaType)
		return
	}
	b, err := Decode(body, format, compression, h.opts.MaxBodyBytes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := h.fn(r.Context(), b); err != nil {
		http.Error(w, "receiver failed", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
