// Package csrf refuses cross-origin state-changing browser requests.
//
// It is a thin layer over net/http.CrossOriginProtection (Fetch Metadata
// plus an Origin/Host fallback), which needs no tokens or cookies:
//
//   - GET, HEAD and OPTIONS always pass, so handlers must never change state
//     on them (use method patterns such as "POST /api/...");
//   - Sec-Fetch-Site same-origin or none passes; same-site and cross-site
//     are refused unless Origin is one of the trusted origins (a SPA on a
//     sibling subdomain is same-site and must be listed);
//   - a request with neither Sec-Fetch-Site nor Origin passes: it is not
//     from a browser (or is same-origin from a very old one), and CSRF is a
//     browser attack. This is not authentication.
//
// What this package adds: trusted origins are validated strictly at startup,
// and refusals are uniform 403 problem+json responses logged as security
// events. Insecure bypass patterns are deliberately not exposed.
package csrf

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// maxLoggedOrigin bounds the attacker-controlled Origin value in logs.
const maxLoggedOrigin = 200

// Protection is a configured cross-origin request check.
type Protection struct {
	cop *http.CrossOriginProtection
}

// New returns a Protection that also accepts requests whose Origin is one of
// trustedOrigins. Each must be exactly what a browser sends
// (scheme://host[:port], lowercase, default port omitted), because the
// comparison is byte-for-byte and anything else would silently never match.
// The error names the offending origin. A nil logger means slog.Default().
func New(trustedOrigins []string, logger *slog.Logger) (*Protection, error) {
	if logger == nil {
		logger = slog.Default()
	}
	cop := http.NewCrossOriginProtection()
	for _, origin := range trustedOrigins {
		if err := cop.AddTrustedOrigin(origin); err != nil {
			return nil, fmt.Errorf("csrf: trusted origin %q: %w", origin, err)
		}
		// AddTrustedOrigin accepts spellings a browser never sends; the
		// contract's origin rule refuses them.
		if err := config.CheckOrigin(origin, false); err != nil {
			return nil, fmt.Errorf("csrf: trusted origin %q: %w", origin, err)
		}
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A refusal is either an attack or a misconfigured trusted origin;
		// both need to be visible to operators.
		logger.WarnContext(r.Context(), "csrf: cross-origin request refused",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.String("origin", truncate(r.Header.Get("Origin"), maxLoggedOrigin)),
			slog.String("sec_fetch_site", truncate(r.Header.Get("Sec-Fetch-Site"), 32)),
		)
		problem.Write(w, http.StatusForbidden, "cross-origin request refused")
	}))
	return &Protection{cop: cop}, nil
}

// truncate keeps at most n bytes of s.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Handler refuses cross-origin unsafe requests with 403 before they reach
// next.
func (p *Protection) Handler(next http.Handler) http.Handler {
	return p.cop.Handler(next)
}
