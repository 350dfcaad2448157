// Package cors lets a fixed list of browser origins read API responses.
//
// It is deliberately narrower than general-purpose CORS libraries: origins
// are matched exactly and case-sensitively against a set (no wildcards, no
// patterns, no callback), so an Origin header that is not configured is never
// written back. Wildcard and reflection modes are where such libraries have
// shipped credentialed-origin-reflection bugs (rs/cors #197); there is
// nothing here to misconfigure into that.
//
// CORS governs which origins may READ responses. It is not access control
// and not CSRF protection; those are separate layers.
package cors

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// Options configures a Policy. New validates them.
type Options struct {
	// AllowedOrigins are exact origins as browsers serialise them:
	// scheme://host[:port], lowercase, no default port, no trailing slash.
	// Required; "*" and "null" are refused.
	AllowedOrigins []string
	// AllowCredentials sends Access-Control-Allow-Credentials: true, letting
	// allowed origins make cookie-authenticated requests.
	AllowCredentials bool
	// AllowedMethods a preflight may ask for; matched case-sensitively as
	// the Fetch standard does. Empty means GET, HEAD, POST.
	AllowedMethods []string
	// AllowedHeaders a preflight may ask for, matched case-insensitively.
	// Browsers list only non-safelisted headers, and a JSON Content-Type is
	// not safelisted: JSON APIs need at least "Content-Type" here.
	AllowedHeaders []string
	// ExposedHeaders lets scripts read these response headers
	// (Access-Control-Expose-Headers) beyond the safelisted ones.
	ExposedHeaders []string
	// MaxAge is how long a browser may cache a preflight result, in whole
	// seconds; zero omits the header (browsers then cache for 5 seconds).
	MaxAge time.Duration
}

// Policy is a validated CORS configuration. Its header values are built once
// in New, so a request costs map lookups and no string building.
type Policy struct {
	// origins maps each allowed origin to its prebuilt ACAO value, so the
	// value written is always the configured string, never request bytes.
	origins      map[string][]string
	methods      map[string]bool
	headers      map[string]bool // lowercase
	credentials  []string
	allowMethods []string
	allowHeaders []string
	expose       []string
	maxAge       []string
}

// Header values shared by every response; net/http only reads them.
var (
	varyOrigin = []string{"Origin"}
	credTrue   = []string{"true"}
)

// New validates o and builds the Policy. The config layer validates origins
// first; refusing bad ones again here keeps a wiring mistake from silently
// widening (or breaking) CORS.
func New(o Options) (*Policy, error) {
	if len(o.AllowedOrigins) == 0 {
		return nil, errors.New("cors: no allowed origins (an empty list must not mean \"any origin\")")
	}
	p := &Policy{
		origins: make(map[string][]string, len(o.AllowedOrigins)),
		methods: map[string]bool{},
		headers: map[string]bool{},
	}
	for _, origin := range o.AllowedOrigins {
		// The one origin rule of the env contract: exact, browser-spelled,
		// never "*" or "null". (Whether http is allowed is the contract's
		// production rule, applied when the settings load.)
		if err := config.CheckOrigin(origin, false); err != nil {
			return nil, fmt.Errorf("cors: %w", err)
		}
		p.origins[origin] = []string{origin}
	}

	methods := o.AllowedMethods
	if len(methods) == 0 {
		methods = []string{http.MethodGet, http.MethodHead, http.MethodPost}
	}
	for _, m := range methods {
		if !config.IsToken(m) || m == "*" {
			return nil, fmt.Errorf("cors: allowed method %q is not an HTTP token (\"*\" is not supported)", m)
		}
		p.methods[m] = true
	}
	p.allowMethods = []string{strings.Join(methods, ", ")}

	for _, h := range o.AllowedHeaders {
		if !config.IsToken(h) || h == "*" {
			return nil, fmt.Errorf("cors: allowed header %q is not a header name (\"*\" is not supported)", h)
		}
		p.headers[strings.ToLower(h)] = true
	}
	if len(o.AllowedHeaders) > 0 {
		p.allowHeaders = []string{strings.Join(o.AllowedHeaders, ", ")}
	}

	for _, h := range o.ExposedHeaders {
		if !config.IsToken(h) || h == "*" {
			return nil, fmt.Errorf("cors: exposed header %q is not a header name (\"*\" is not supported)", h)
		}
	}
	if len(o.ExposedHeaders) > 0 {
		p.expose = []string{strings.Join(o.ExposedHeaders, ", ")}
	}

	if o.MaxAge < 0 {
		return nil, fmt.Errorf("cors: negative max age %v", o.MaxAge)
	}
	if secs := int64(o.MaxAge / time.Second); secs > 0 {
		p.maxAge = []string{strconv.FormatInt(secs, 10)}
	}
	if o.AllowCredentials {
		p.credentials = credTrue
	}
	return p, nil
}

// Handler applies the policy in front of next.
//
// Every response carries Vary: Origin, because its CORS headers depend on
// the Origin header and a shared cache must not serve one origin's answer
// to another. A preflight (OPTIONS with Origin and
// Access-Control-Request-Method) is answered here and never reaches next:
// 204 when origin, method and every requested header are allowed, otherwise
// 403 problem+json without any CORS header. Other requests always reach
// next; an unlisted origin just gets no CORS headers, so the browser keeps
// the response from the page.
func (p *Policy) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Vary"] = append(h["Vary"], varyOrigin...)

		// More than one Origin header is not something a browser sends;
		// treat it as no match rather than pick one.
		var acao []string
		if origin := r.Header["Origin"]; len(origin) == 1 {
			acao = p.origins[origin[0]]
		}

		if r.Method == http.MethodOptions && r.Header["Origin"] != nil &&
			r.Header["Access-Control-Request-Method"] != nil {
			if acao == nil || !p.preflightAllowed(r) {
				problem.Write(w, http.StatusForbidden, "CORS preflight refused")
				return
			}
			h["Access-Control-Allow-Origin"] = acao
			if p.credentials != nil {
				h["Access-Control-Allow-Credentials"] = p.credentials
			}
			h["Access-Control-Allow-Methods"] = p.allowMethods
			if p.allowHeaders != nil {
				h["Access-Control-Allow-Headers"] = p.allowHeaders
			}
			if p.maxAge != nil {
				h["Access-Control-Max-Age"] = p.maxAge
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}

		if acao != nil {
			h["Access-Control-Allow-Origin"] = acao
			if p.credentials != nil {
				h["Access-Control-Allow-Credentials"] = p.credentials
			}
			if p.expose != nil {
				h["Access-Control-Expose-Headers"] = p.expose
			}
		}
		next.ServeHTTP(w, r)
	})
}

// preflightAllowed checks the requested method and headers.
func (p *Policy) preflightAllowed(r *http.Request) bool {
	methods := r.Header["Access-Control-Request-Method"]
	if len(methods) != 1 || !p.methods[methods[0]] {
		return false
	}
	for _, line := range r.Header["Access-Control-Request-Headers"] {
		for name := range strings.SplitSeq(line, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if !p.headers[strings.ToLower(name)] {
				return false
			}
		}
	}
	return true
}
