package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/nbms-deploy/nbms/app/internal/headers"
)

// CheckOrigin is the one CORS/CSRF origin rule. The app calls it at start-up,
// the stack config calls it before registering resources, and the policy
// pack calls it on deployed containers; never copy it.
//
// An origin must be exactly scheme://host[:port]: no path, query, fragment,
// user info or wildcard. "*" and "null" are always refused ("null" is the
// origin of sandboxed iframes and file: pages, which anyone can produce). In
// production the scheme must be https.
func CheckOrigin(origin string, production bool) error {
	switch {
	case origin == "":
		return errors.New("empty origin")
	case origin == "*":
		return errors.New(`wildcard origin "*" is not allowed; list exact origins`)
	case strings.EqualFold(origin, "null"):
		return errors.New(`origin "null" is not allowed (any sandboxed page can send it)`)
	case strings.ContainsAny(origin, "*?"):
		return fmt.Errorf("origin %q contains a wildcard; list exact origins", origin)
	case strings.ContainsAny(origin, " \t\r\n"):
		return fmt.Errorf("origin %q contains whitespace", origin)
	}
	u, err := url.Parse(origin)
	if err != nil {
		return fmt.Errorf("origin %q is not a URL", origin)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("origin %q must use http or https", origin)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("origin %q has no host", origin)
	}
	if u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || strings.HasSuffix(origin, "?") || strings.HasSuffix(origin, "#") {
		return fmt.Errorf("origin %q must be scheme://host[:port] with nothing after it", origin)
	}
	if u.Scheme+"://"+u.Host != origin {
		return fmt.Errorf("origin %q must be scheme://host[:port] with nothing after it", origin)
	}
	if !isOriginHost(u.Hostname()) {
		return fmt.Errorf("origin %q has an invalid host (a DNS name or an IP address)", origin)
	}
	// Matching is byte-for-byte against what browsers send: lower case, no
	// default port. Any other spelling would silently never match.
	if origin != strings.ToLower(origin) {
		return fmt.Errorf("origin %q must be lower case, as browsers send it", origin)
	}
	if p := u.Port(); p != "" {
		if n, err := parsePort(p); err != nil || n == 0 {
			return fmt.Errorf("origin %q has an invalid port", origin)
		}
		if (u.Scheme == "https" && p == "443") || (u.Scheme == "http" && p == "80") {
			return fmt.Errorf("origin %q must omit the default port, as browsers do", origin)
		}
	}
	if production && u.Scheme != "https" {
		return fmt.Errorf("origin %q must use https in production", origin)
	}
	return nil
}

// isOriginHost reports whether host is a DNS name (ASCII: IDNs in the
// punycode form browsers send) or an IP address without a zone.
func isOriginHost(host string) bool {
	if addr, err := netip.ParseAddr(host); err == nil {
		return addr.Zone() == ""
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// CheckOrigins applies CheckOrigin to every entry and joins the failures.
func CheckOrigins(origins []string, production bool) error {
	var errs []error
	for _, o := range origins {
		if err := CheckOrigin(o, production); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func parsePort(p string) (int, error) {
	n := 0
	if len(p) > 5 {
		return 0, errors.New("port too long")
	}
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, errors.New("port not numeric")
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, errors.New("port out of range")
	}
	return n, nil
}

// Secret-key strength, after Django's W009 and W025 but stricter.
const (
	minSecretKeyLength      = 50
	minSecretKeyUniqueChars = 16
)

// devSecretKey is the dev/test default. Its prefix is on the placeholder
// list, so production refuses it even if copied verbatim.
const devSecretKey = "insecure-dev-only-key-0123456789abcdefghijklmnopqrstuvwxyz"

// placeholderFragments are substrings of keys copied from samples and docs.
var placeholderFragments = []string{
	"insecure", "changeme", "change-me", "change_me", "replace-me", "replaceme",
	"your-secret", "your_secret", "secret-key", "secret_key", "example", "placeholder",
	"django-insecure", "xxxxxxxx", "12345678", "password", "todo",
}

// CheckSecretKey says why key is not strong enough for production. It
// never includes the key in its message.
func CheckSecretKey(key string) error {
	if len(key) < minSecretKeyLength {
		return fmt.Errorf("must be at least %d characters (got %d); generate one with `openssl rand -base64 48`", minSecretKeyLength, len(key))
	}
	unique := map[rune]struct{}{}
	for _, r := range key {
		unique[r] = struct{}{}
	}
	if len(unique) < minSecretKeyUniqueChars {
		return fmt.Errorf("has only %d distinct characters; it does not look random (need at least %d)", len(unique), minSecretKeyUniqueChars)
	}
	lower := strings.ToLower(key)
	for _, frag := range placeholderFragments {
		if strings.Contains(lower, frag) {
			return errors.New("looks like a placeholder or sample value; generate a random one")
		}
	}
	return nil
}

// checkListenAddrVar accepts host:port or :port (port 0 picks a free one).
func checkListenAddrVar(v any, _ bool) error {
	host, port, err := net.SplitHostPort(v.(string))
	if err != nil {
		return fmt.Errorf("%q is not host:port or :port", v)
	}
	if _, err := parsePort(port); err != nil || port == "" {
		return fmt.Errorf("%q has an invalid port", v)
	}
	if strings.ContainsAny(host, "/@ ") {
		return fmt.Errorf("%q has an invalid host", v)
	}
	return nil
}

// checkCookieNameVar allows only RFC 6265 token characters, so the name can
// never smuggle an attribute into the Set-Cookie header.
func checkCookieNameVar(v any, _ bool) error {
	name := v.(string)
	if name == "" {
		return errors.New("must not be empty")
	}
	for _, c := range name {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return fmt.Errorf("%q contains %q, which is not allowed in a cookie name", name, c)
		}
	}
	return nil
}

func checkAllowedHostsVar(v any, _ bool) error {
	var errs []error
	for _, h := range v.([]string) {
		switch {
		case h == "*" || strings.Contains(h, "*"):
			errs = append(errs, fmt.Errorf("%q: wildcards are not allowed; list host names (a leading dot matches subdomains)", h))
		case strings.ContainsAny(h, "/@ \t:") && !strings.HasPrefix(h, "["):
			errs = append(errs, fmt.Errorf("%q is not a host name (no scheme, port, path or user info)", h))
		case h == ".":
			errs = append(errs, fmt.Errorf("%q matches nothing useful", h))
		}
	}
	return errors.Join(errs...)
}

func checkTrustedProxiesVar(v any, _ bool) error {
	for _, p := range v.([]netip.Prefix) {
		if err := checkTrustedProxy(p); err != nil {
			return fmt.Errorf("%s %w", p, err)
		}
	}
	return nil
}

// checkTrustedProxy refuses a network that trusts every address.
func checkTrustedProxy(p netip.Prefix) error {
	if p.Bits() == 0 {
		return errors.New("trusts every address: any client could forge X-Forwarded-For")
	}
	return nil
}

func checkOriginsVar(v any, production bool) error {
	return CheckOrigins(v.([]string), production)
}

// checkHeaderNamesVar accepts a list of HTTP header names (RFC 9110
// tokens), never "*": a wildcard would let any header through a preflight.
func checkHeaderNamesVar(v any, _ bool) error {
	names := v.([]string)
	if len(names) == 0 {
		return errors.New("is empty; list the header names, e.g. Content-Type")
	}
	for _, name := range names {
		if name == "*" {
			return errors.New(`"*" is not allowed; list the header names`)
		}
		if !IsToken(name) {
			return fmt.Errorf("%q is not a header name", clip(name))
		}
	}
	return nil
}

// IsToken reports whether s is an RFC 9110 token: what a method or a header
// name must be. The CORS policy checks its lists with it too.
func IsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// The header values are judged by the package that serves them.
func checkReferrerPolicyVar(v any, _ bool) error { return headers.CheckReferrerPolicy(v.(string)) }

func checkCSPVar(v any, _ bool) error { return headers.CheckCSP(v.(string)) }

func checkDatabaseURLVar(v any, _ bool) error {
	return checkServiceURL(v.(string), "postgres", "postgresql")
}

func checkRedisURLVar(v any, _ bool) error {
	return checkServiceURL(v.(string), "redis", "rediss", "unix")
}

// checkServiceURL validates a connection URL without ever echoing it: it
// usually carries a password.
func checkServiceURL(raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	for _, s := range schemes {
		if u.Scheme == s {
			if s != "unix" && u.Host == "" {
				return errors.New("has no host")
			}
			return nil
		}
	}
	return fmt.Errorf("must use the scheme %s", strings.Join(schemes, " or "))
}

func checkSentryDSNVar(v any, _ bool) error { return CheckSentryDSN(v.(string)) }

// CheckSentryDSN is the one rule for a Sentry DSN; the error tracker
// applies it too. Its message never contains the DSN (the key is a secret).
func CheckSentryDSN(dsn string) error {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.User == nil || u.User.Username() == "" || strings.Trim(u.Path, "/") == "" {
		return errors.New("is not a Sentry DSN (scheme://publickey@host/project-id)")
	}
	return nil
}
