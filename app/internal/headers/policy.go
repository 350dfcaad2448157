// Package headers sets the security response headers every NBMS response
// carries, and receives the CSP violation reports browsers send back.
//
// Middleware must be the outermost handler (outside CORS, body limits, rate
// limiting, panic recovery and the router): it sets every header before
// calling the next handler, so 404, 405, 413, 429, 500 and CORS preflight
// responses carry them too, not just the happy path.
package headers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Policy describes the security headers to send. An empty string field omits
// its header. DefaultPolicy is the production baseline; start from it and
// change fields rather than building a Policy from scratch.
//
// Some headers are not configurable because no NBMS surface needs another
// value: X-Content-Type-Options: nosniff, X-Permitted-Cross-Domain-Policies:
// none, and Cache-Control: no-store (a default that handlers may override).
type Policy struct {
	// HSTSMaxAge is the Strict-Transport-Security max-age, in whole
	// seconds. Zero omits the header (plain-HTTP development only). The
	// header is sent whether or not the request arrived over TLS, because
	// TLS usually terminates at the proxy and browsers ignore it over HTTP.
	HSTSMaxAge time.Duration
	// HSTSIncludeSubdomains adds includeSubDomains: only when every
	// subdomain is HTTPS-only.
	HSTSIncludeSubdomains bool
	// HSTSPreload adds preload. Hard to undo (browser preload lists);
	// requires includeSubDomains and a max-age of at least one year.
	HSTSPreload bool

	// CSP is the Content-Security-Policy, directives separated by ";".
	// Required.
	CSP string
	// CSPReportOnly sends CSP as Content-Security-Policy-Report-Only
	// instead, which enforces nothing. Use it only to trial a policy for an
	// HTML surface next to an enforced one: the HTTP Observatory scores a
	// report-only policy alone as no policy (-25).
	CSPReportOnly bool
	// CSPReportPath, when set, is the path CSPReportHandler is mounted on.
	// The CSP then gains "report-uri <path>; report-to csp-endpoint" and a
	// Reporting-Endpoints header is sent, so that both older (report-uri)
	// and current (Reporting API) browsers report violations.
	CSPReportPath string

	// FrameOptions is X-Frame-Options: DENY or SAMEORIGIN. Obsolete next to
	// CSP frame-ancestors, but still checked by Django W019 and Observatory.
	FrameOptions string
	// ReferrerPolicy is a comma-separated list of Referrer-Policy tokens.
	ReferrerPolicy string
	// CrossOriginOpenerPolicy is same-origin, same-origin-allow-popups or
	// unsafe-none.
	CrossOriginOpenerPolicy string
	// CrossOriginEmbedderPolicy is require-corp, credentialless or
	// unsafe-none.
	CrossOriginEmbedderPolicy string
	// CrossOriginResourcePolicy is same-origin, same-site or cross-origin.
	CrossOriginResourcePolicy string
	// PermissionsPolicy is the Permissions-Policy structured-field value.
	PermissionsPolicy string
}

// reportEndpointName names the Reporting-Endpoints entry the CSP reports to.
const reportEndpointName = "csp-endpoint"

// DefaultCSP is the enforced policy for a JSON API: nothing may load,
// nothing may frame it. base-uri, form-action and frame-ancestors do not
// fall back to default-src, so they are spelled out.
const DefaultCSP = "default-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// AttachmentCSP is the policy of an uploaded file's download, whoever sends
// it (the app, or the edge proxy after the app's X-Accel-Redirect). An
// upload is whatever its uploader made it: if a browser renders it despite
// Content-Disposition: attachment, it loads nothing and runs in a sandbox
// (no script, a unique origin, so no access to the site's cookies or API).
const AttachmentCSP = "default-src 'none'; sandbox"

// DefaultHSTSMaxAge is two years (OWASP's recommendation).
const DefaultHSTSMaxAge = 63072000 * time.Second

// DefaultPolicy returns the strict baseline for a JSON API: nothing may be
// loaded, framed, or submitted from a response; no referrer leaks; the
// response is isolated from other origins. (See app-hardening-anchors §2.6.)
func DefaultPolicy() Policy {
	return Policy{
		HSTSMaxAge:                DefaultHSTSMaxAge,
		HSTSIncludeSubdomains:     true,
		CSP:                       DefaultCSP,
		FrameOptions:              "DENY",
		ReferrerPolicy:            "no-referrer",
		CrossOriginOpenerPolicy:   "same-origin",
		CrossOriginEmbedderPolicy: "require-corp",
		CrossOriginResourcePolicy: "same-origin",
		// OWASP Secure Headers Project list, verbatim (ci/headers_add.json).
		PermissionsPolicy: "accelerometer=(), autoplay=(), camera=(), cross-origin-isolated=(), display-capture=(), encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), keyboard-map=(), magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), publickey-credentials-get=(), screen-wake-lock=(), sync-xhr=(self), usb=(), web-share=(), xr-spatial-tracking=(), clipboard-read=(), clipboard-write=(), gamepad=(), hid=(), idle-detection=(), interest-cohort=(), serial=(), unload=()",
	}
}

// The valid values of the cross-origin policy headers; the env contract
// offers exactly these.
var (
	// Django check security.E024.
	COOPValues = []string{"same-origin", "same-origin-allow-popups", "unsafe-none"}
	CORPValues = []string{"same-origin", "same-site", "cross-origin"}
)

var (
	// Django check security.E023.
	referrerTokens = set("no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
		"same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url")
	coopValues    = set(COOPValues...)
	coepValues    = set("require-corp", "credentialless", "unsafe-none")
	corpValues    = set(CORPValues...)
	frameValues   = set("DENY", "SAMEORIGIN")
	minPreloadAge = 365 * 24 * time.Hour
)

func set(values ...string) map[string]bool {
	m := make(map[string]bool, len(values))
	for _, v := range values {
		m[v] = true
	}
	return m
}

// Validate reports every problem with p at once, so a misconfigured
// deployment fails at startup with the complete list.
func (p Policy) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("headers: "+format, args...)) }

	switch {
	case p.HSTSMaxAge < 0:
		add("HSTS max-age %v is negative", p.HSTSMaxAge)
	case p.HSTSMaxAge%time.Second != 0:
		add("HSTS max-age %v is not a whole number of seconds", p.HSTSMaxAge)
	case p.HSTSMaxAge == 0 && (p.HSTSIncludeSubdomains || p.HSTSPreload):
		add("HSTS includeSubDomains/preload set but max-age is zero (no HSTS header is sent)")
	}
	if p.HSTSPreload && (!p.HSTSIncludeSubdomains || p.HSTSMaxAge < minPreloadAge) {
		add("HSTS preload requires includeSubDomains and a max-age of at least one year")
	}

	directives, err := parseCSP(p.CSP)
	if err != nil {
		errs = append(errs, err)
	}
	if p.CSPReportPath != "" {
		if !validReportPath(p.CSPReportPath) {
			add("CSP report path %q must be an absolute path without spaces, quotes, commas or semicolons", p.CSPReportPath)
		}
		for _, d := range directives {
			if d.name == "report-uri" || d.name == "report-to" {
				add("CSP already has %s; leave it out when CSPReportPath is set", d.name)
			}
		}
	}

	if p.ReferrerPolicy != "" {
		if err := CheckReferrerPolicy(p.ReferrerPolicy); err != nil {
			errs = append(errs, err)
		}
	}
	checkOneOf := func(header, value string, allowed map[string]bool) {
		if value != "" && !allowed[value] {
			add("%s value %q is not valid", header, value)
		}
	}
	checkOneOf("Cross-Origin-Opener-Policy", p.CrossOriginOpenerPolicy, coopValues)
	checkOneOf("Cross-Origin-Embedder-Policy", p.CrossOriginEmbedderPolicy, coepValues)
	checkOneOf("Cross-Origin-Resource-Policy", p.CrossOriginResourcePolicy, corpValues)
	checkOneOf("X-Frame-Options", p.FrameOptions, frameValues)
	if !isHeaderText(p.PermissionsPolicy) {
		add("Permissions-Policy contains control or non-ASCII characters")
	}
	return errors.Join(errs...)
}

// CheckReferrerPolicy says why v is not a valid Referrer-Policy value
// (comma-separated tokens).
func CheckReferrerPolicy(v string) error {
	for token := range strings.SplitSeq(v, ",") {
		if !referrerTokens[strings.TrimSpace(token)] {
			return fmt.Errorf("headers: Referrer-Policy token %q is not valid", strings.TrimSpace(token))
		}
	}
	return nil
}

// CheckCSP says why csp is not a policy this package can serve.
func CheckCSP(csp string) error {
	_, err := parseCSP(csp)
	return err
}

// directive is one parsed CSP directive; name is lowercase.
type directive struct{ name, value string }

// parseCSP splits a serialized policy into directives, refusing what
// browsers would misread: a comma (which starts a second policy), control
// characters, malformed or duplicate directive names (browsers ignore every
// repeat, so a duplicate is always a mistake).
func parseCSP(csp string) ([]directive, error) {
	if !isHeaderText(csp) {
		return nil, errors.New("headers: CSP contains control or non-ASCII characters")
	}
	if strings.Contains(csp, ",") {
		return nil, errors.New("headers: CSP contains a comma, which browsers read as a second policy")
	}
	var directives []directive
	seen := map[string]bool{}
	for part := range strings.SplitSeq(csp, ";") {
		fields := strings.Fields(part)
		if len(fields) == 0 {
			continue
		}
		name := strings.ToLower(fields[0])
		if !isDirectiveName(name) {
			return nil, fmt.Errorf("headers: CSP directive name %q is not valid", fields[0])
		}
		if seen[name] {
			return nil, fmt.Errorf("headers: CSP directive %q appears twice", name)
		}
		seen[name] = true
		directives = append(directives, directive{name: name, value: strings.Join(fields[1:], " ")})
	}
	if len(directives) == 0 {
		return nil, errors.New("headers: CSP is empty")
	}
	return directives, nil
}

// serializeCSP writes directives back in canonical form.
func serializeCSP(directives []directive) string {
	var b strings.Builder
	for i, d := range directives {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(d.name)
		if d.value != "" {
			b.WriteByte(' ')
			b.WriteString(d.value)
		}
	}
	return b.String()
}

func isDirectiveName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return s != ""
}

// isHeaderText reports whether s is printable ASCII (space included): a
// value that cannot inject a header line or be mangled in transit.
func isHeaderText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validReportPath accepts an absolute path that is safe both as a CSP
// source-expression and inside a quoted structured-field string.
func validReportPath(path string) bool {
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") || !isHeaderText(path) {
		return false
	}
	return !strings.ContainsAny(path, " ;,\"\\")
}

// hstsValue renders Strict-Transport-Security, or "" when disabled.
func (p Policy) hstsValue() string {
	if p.HSTSMaxAge == 0 {
		return ""
	}
	v := "max-age=" + strconv.FormatInt(int64(p.HSTSMaxAge/time.Second), 10)
	if p.HSTSIncludeSubdomains {
		v += "; includeSubDomains"
	}
	if p.HSTSPreload {
		v += "; preload"
	}
	return v
}
