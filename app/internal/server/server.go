// Package server assembles the NBMS HTTP handler: the routes and the
// middleware chain, in one place, in the order a request meets them.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/bodylimit"
	"github.com/nbms-deploy/nbms/app/internal/cors"
	"github.com/nbms-deploy/nbms/app/internal/csrf"
	"github.com/nbms-deploy/nbms/app/internal/headers"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/proxy"
	"github.com/nbms-deploy/nbms/app/internal/ratelimit"
	"github.com/nbms-deploy/nbms/app/internal/recovery"
)

// Route prefixes that decide which protections apply.
const (
	// APIPrefix routes answer JSON to programs; over plain HTTP they are
	// refused, never silently redirected (ASVS 5.0 4.1.2).
	APIPrefix = "/api/"
	// AuthPrefix routes handle credentials; treated like API routes.
	AuthPrefix = "/auth/"
	// PublicAPIPrefix routes are anonymous open data, readable cross-origin
	// by the allowlisted origins without credentials (and cacheable at the
	// edge, which is why the prefix is declared in the contract).
	PublicAPIPrefix = config.PublicAPIPrefix
	// UploadPrefix routes accept bodies up to MAX_UPLOAD_BYTES.
	UploadPrefix = "/api/uploads/"
)

// Deps are the collaborators the handler needs. The caller owns their
// lifetimes (pools, clients) and closes them after the server stops.
type Deps struct {
	Settings *config.Settings
	Logger   *slog.Logger
	Health   *health.Health
	// OnPanic receives recovered panics (the error tracker); may be nil.
	OnPanic func(r *http.Request, recovered any, stack []byte)
	// Mount registers the workflow routes on the API mux (/api/ and
	// /auth/), behind the whole chain. Nil mounts none.
	Mount func(mux *http.ServeMux)
	// Session loads the session and the authenticated user for the API
	// routes (innermost, after CSRF). Nil leaves every request anonymous.
	Session func(http.Handler) http.Handler
	// Limiter throttles the API routes with the policies named in
	// limits.go. Nil limits nothing (RATE_LIMIT_ENABLED=false).
	Limiter *ratelimit.Limiter
}

// isProbe reports whether r is a health probe. Probes come from Docker or
// an orchestrator with an IP address as Host over plain HTTP, so the host
// allowlist and the HTTPS rule must not apply to them.
func isProbe(r *http.Request) bool {
	return r.URL.Path == config.LivenessPath || r.URL.Path == config.ReadinessPath
}

// exposedHeaders are the response headers a cross-origin script may read
// beyond the safelisted ones: its request's ID and the rate limit state.
var exposedHeaders = []string{"X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy"}

func isAPI(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, APIPrefix) || strings.HasPrefix(r.URL.Path, AuthPrefix)
}

// New returns the complete handler. It fails when the settings cannot be
// turned into a policy (a bad trusted origin, a bad header value), so that
// a misconfiguration stops start-up instead of weakening a protection.
func New(d Deps) (http.Handler, error) {
	s := d.Settings
	if s == nil || d.Logger == nil || d.Health == nil {
		return nil, errors.New("server: Settings, Logger and Health are required")
	}

	hdrPolicy := s.HeaderPolicy()
	if err := hdrPolicy.Validate(); err != nil {
		return nil, fmt.Errorf("security headers: %w", err)
	}
	csrfProtection, err := csrf.New(s.CSRFTrustedOrigins, d.Logger)
	if err != nil {
		return nil, fmt.Errorf("CSRF_TRUSTED_ORIGINS: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET "+config.LivenessPath, d.Health.Liveness())
	mux.Handle("GET "+config.ReadinessPath, d.Health.Readiness())
	mux.Handle("GET /{$}", landingPage())
	if s.CSPReportPath != "" {
		mux.Handle("POST "+s.CSPReportPath, headers.CSPReportHandler(d.Logger, cspReportMaxBytes))
	}
	api := http.NewServeMux()
	api.Handle("GET "+PublicAPIPrefix+"{$}", publicAPIIndex())
	if d.Mount != nil {
		d.Mount(api)
	}
	// Two chains over the same routes, and the mux picks by prefix. The
	// public API is anonymous: it never loads a session, so a cookie
	// neither costs it a lookup nor varies its cacheable answer.
	public := throttle(api, d.Limiter)
	private := public
	if d.Session != nil {
		private = d.Session(private)
	}
	if len(s.CORSAllowedOrigins) > 0 {
		// Public open data: readable cross-origin, never with credentials.
		// The request headers API clients send (CORS_ALLOWED_HEADERS): a
		// portal's fetch with JSON headers must pass its preflight.
		publicCORS, err := cors.New(cors.Options{
			AllowedOrigins: s.CORSAllowedOrigins,
			AllowedMethods: []string{http.MethodGet, http.MethodHead},
			AllowedHeaders: s.CORSAllowedHeaders,
			ExposedHeaders: exposedHeaders,
			MaxAge:         s.CORSPreflightMaxAge,
		})
		if err != nil {
			return nil, fmt.Errorf("CORS_ALLOWED_ORIGINS: %w", err)
		}
		// Authenticated API: credentials only if the contract allows them.
		privateCORS, err := cors.New(cors.Options{
			AllowedOrigins:   s.CORSAllowedOrigins,
			AllowCredentials: s.CORSAllowCredentials,
			AllowedMethods:   []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
			AllowedHeaders:   s.CORSAllowedHeaders,
			ExposedHeaders:   exposedHeaders,
			MaxAge:           s.CORSPreflightMaxAge,
		})
		if err != nil {
			return nil, fmt.Errorf("CORS_ALLOWED_ORIGINS: %w", err)
		}
		public, private = publicCORS.Handler(public), privateCORS.Handler(private)
	}
	mux.Handle(PublicAPIPrefix, public)
	mux.Handle(APIPrefix, private)
	mux.Handle(AuthPrefix, private)

	// The chain, outermost first. Order matters:
	//   headers      first, so every response — errors, panics, refusals — carries them;
	//   request id   before anything logs;
	//   forwarded    before the access log and every rule that needs the client IP or scheme;
	//   access log   around everything that can refuse, so refusals are logged with status;
	//   recovery     inside the log, so a panic is logged as the 500 it became;
	//   hosts        before HTTPS, whose redirect is built from the (now allowed) host;
	//   body limit   before any handler reads a body;
	//   CSRF         before any state-changing handler.
	chain := []func(http.Handler) http.Handler{
		headers.Middleware(hdrPolicy),
		logging.RequestID,
		proxy.Forwarded(s.TrustedProxies),
		logging.AccessLog(d.Logger, clientIP),
		recovery.Middleware(d.Logger, d.OnPanic),
		proxy.AllowedHosts(s.AllowedHosts, isProbe, d.Logger),
	}
	if s.SSLRedirect {
		chain = append(chain, proxy.RequireHTTPS(proxy.HTTPSOptions{Exempt: isProbe, IsAPI: isAPI}))
	}
	chain = append(chain,
		bodylimit.Middleware(s.MaxRequestBodyBytes, bodylimit.Override{PathPrefix: UploadPrefix, Limit: s.MaxUploadBytes}),
		csrfProtection.Handler,
	)
	var h http.Handler = jsonErrors(mux)
	for i := len(chain) - 1; i >= 0; i-- {
		h = chain[i](h)
	}
	return h, nil
}

// cspReportMaxBytes caps one violation report; real ones are under 2 KiB.
const cspReportMaxBytes = 16 << 10

func clientIP(r *http.Request) string {
	if ip := proxy.ClientIP(r); ip.IsValid() {
		return ip.String()
	}
	return ""
}
