package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/throttle"
)

// Guessing secrets.
//
// Every operation that takes a secret (an operator token or a dashboard
// session, a device's API key, a provisioning token, an operation secret,
// the registration shared secret) is guarded in one place, guard: an
// attempt whose source address (or, for an operation secret, operation)
// failed too often lately is answered 429 throttled without being
// checked; an answer 401 to an attempt that presented a secret counts as
// a failure, in metrics (devicehub_auth_failures_total) and a sampled log
// line, never with the guess. A request that presents no secret at all
// is not a guess: it is counted (devicehub_api_unauthenticated_total)
// and logged sampled, not throttled. Neither is written to the audit
// trail: the trail is what authenticated callers asked, and refusals of
// unknown callers must not let anyone grow it.

// defaultSourceLimit is throttle's default failures per source.
const defaultSourceLimit = 20

// secretGuards are the API's throttles, one per kind of secret.
type secretGuards struct {
	token     *throttle.Guard // operator tokens and dashboard sessions
	deviceKey *throttle.Guard // devices' API keys
	secret    *throttle.Guard // provisioning tokens, operation secrets, the shared secret

	anonymous     *prometheus.CounterVec
	anonymousLogs throttle.Sampler
	log           *slog.Logger
	now           func() time.Time
}

func newSecretGuards(o throttle.Options, log *slog.Logger, reg prometheus.Registerer) *secretGuards {
	// Many devices may share one address (a site behind NAT): one of
	// them with a wrong key must not lock the others out soon.
	devices := o
	devices.SourceLimit = max(o.SourceLimit, 10*defaultSourceLimit)
	g := &secretGuards{
		token:     throttle.NewGuard("api_token", o, log, reg),
		deviceKey: throttle.NewGuard("device_api_key", devices, log, reg),
		secret:    throttle.NewGuard("provisioning_secret", o, log, reg),
		anonymous: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_api_unauthenticated_total",
			Help: "API requests refused because they presented no credentials, by operation.",
		}, []string{"operation"}),
		log: log,
		now: o.Now,
	}
	if g.now == nil {
		g.now = time.Now
	}
	if reg != nil {
		reg.MustRegister(g.anonymous)
	}
	return g
}

// forPerm is the guard of an operation's secret, whether the request
// presents one, and whether the path's id is the target of the guess (an
// operation whose secret is tried) rather than what a token acts on; nil
// for public operations. A session cookie is not counted: its secret
// cannot be guessed, sign-in is throttled itself (accounts), and an
// expired one must not lock its user's address out.
func (g *secretGuards) forPerm(p perm, r *http.Request) (guard *throttle.Guard, presented, targeted bool) {
	_, bearer := bearerToken(r)
	switch p {
	case permViewer, permOperator, permAdmin:
		return g.token, bearer, false
	case permDevice:
		return g.deviceKey, bearer, false
	case permSecret, permOperatorOrSecret:
		// The secret is in the body or the bearer: a refusal of one is
		// a failed secret either way.
		return g.secret, true, true
	}
	return nil, false, false
}

// refusedAnonymous counts and logs (sampled) a request refused because
// it presented no credentials.
func (g *secretGuards) refusedAnonymous(opID, remote string) {
	g.anonymous.WithLabelValues(opID).Inc()
	if n, ok := g.anonymousLogs.Tick(g.now()); ok {
		g.log.Info("request without credentials refused", "op", opID, "source", throttle.Host(remote), "lines", n)
	}
}

// writeThrottled answers an attempt the guard refused: 429 with
// Retry-After.
func (a *API) writeThrottled(w http.ResponseWriter, r *http.Request, err error) int {
	var t *throttle.Throttled
	if errors.As(err, &t) {
		w.Header().Set("Retry-After", strconv.Itoa(int(t.RetryAfter(a.secrets.now()).Seconds())))
	}
	return a.writeError(w, r, err)
}
