package proxy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// HTTPSOptions configures RequireHTTPS.
type HTTPSOptions struct {
	// Exempt selects requests served over plain HTTP as they are: the
	// /healthz and /readyz probes, which must never be redirected because
	// kubelet counts any 3xx as success and would mask a broken app.
	Exempt func(*http.Request) bool
	// IsAPI selects API calls. They are refused, never redirected (ASVS 5.0
	// 4.1.2): a silent redirect would hide that the client already sent its
	// credentials and payload in clear text, and the bug would never be fixed.
	IsAPI func(*http.Request) bool
}

// RequireHTTPS returns middleware for requests that did not arrive over
// HTTPS, as judged by the Info that Forwarded stored (so Forwarded must run
// first, or a TLS-terminating proxy's requests all look like plain HTTP):
//
//   - Exempt requests pass through.
//   - API requests get 403 problem+json; nothing of the request is processed.
//   - GET and HEAD get 301 to https://<host><path>?<query>, the same URL
//     over HTTPS (Django's SECURE_SSL_REDIRECT).
//   - Other methods get 403 problem+json: redirecting a POST would make the
//     browser re-send the body to a URL the user did not choose.
//
// The redirect's host is r.Host, which the client chose. That is safe only
// because AllowedHosts runs before this middleware and has already refused
// any host not in the allowlist; without it this would be an open redirect.
// As a second line of defence, a host that is not a plain hostname or IP
// literal (one containing '/', '\\', '@', whitespace, ...) gets 400 here.
// An explicit port 80 is dropped from the redirect, since it can only be
// wrong for HTTPS; any other port is kept as the client addressed it.
func RequireHTTPS(opts HTTPSOptions) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if FromRequest(r).Secure || (opts.Exempt != nil && opts.Exempt(r)) {
				next.ServeHTTP(w, r)
				return
			}
			if opts.IsAPI != nil && opts.IsAPI(r) {
				problem.Write(w, http.StatusForbidden, "HTTPS is required; this request was not processed.")
				return
			}
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				problem.Write(w, http.StatusForbidden, "HTTPS is required; resend this request over HTTPS.")
				return
			}
			host := r.Host
			if !validHost(host) {
				problem.Write(w, http.StatusBadRequest, "The request's Host is not valid.")
				return
			}
			if name, port, _ := splitHostPortStrict(host); port == "80" {
				host = name
			}
			http.Redirect(w, r, "https://"+host+redirectTarget(r.URL), http.StatusMovedPermanently)
		})
	}
}

// redirectTarget returns path?query for the HTTPS redirect. It uses the
// parsed URL, not r.RequestURI, so that an absolute-form request target
// ("GET http://evil/ HTTP/1.1") cannot put its authority into Location, and
// it falls back to "/" for targets that do not start with '/' (an opaque
// "GET http:evil.example" would otherwise be glued onto the host and name
// another domain).
func redirectTarget(u *url.URL) string {
	target := u.RequestURI()
	if u.Opaque != "" || !strings.HasPrefix(target, "/") {
		return "/"
	}
	return target
}
