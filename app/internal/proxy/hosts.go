package proxy

import (
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// maxLoggedHost bounds how much of an attacker-chosen Host reaches the logs.
const maxLoggedHost = 255

// AllowedHosts returns middleware that answers 400 (problem+json) to any
// request whose r.Host is not in hosts, and logs the refusal at warn level.
// It is the defence against Host-header attacks (poisoned absolute URLs,
// password-reset links, cache keys) and what makes RequireHTTPS's redirect
// safe, so it must run after Forwarded (which sets r.Host to the public
// host) and before RequireHTTPS.
//
// Matching follows Django's ALLOWED_HOSTS: case-insensitive, port and a
// trailing dot ignored; an entry starting with "." matches that domain and
// every subdomain (".example.org" matches "example.org" and
// "a.b.example.org"). IPv6 literals are written with brackets ("[::1]").
// There is no wildcard: "*" matches nothing here, and the config layer
// refuses it. A Host that is not syntactically a hostname or IP literal
// with an optional port is refused whatever the list says.
//
// Requests for which exempt returns true skip the check; the server exempts
// the /healthz and /readyz probes because kubelet and Docker address them
// by pod IP. A nil exempt exempts nothing; a nil logger means slog.Default.
func AllowedHosts(hosts []string, exempt func(*http.Request) bool, logger *slog.Logger) func(http.Handler) http.Handler {
	allowed := make([]string, 0, len(hosts))
	for _, h := range hosts {
		allowed = append(allowed, strings.ToLower(h))
	}
	if logger == nil {
		logger = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if exempt != nil && exempt(r) {
				next.ServeHTTP(w, r)
				return
			}
			if !hostAllowed(r.Host, allowed) {
				logger.WarnContext(r.Context(), "request host not allowed",
					slog.String("event", "host.rejected"),
					slog.String("host", sanitizeForLog(r.Host, maxLoggedHost)),
					slog.String("client_ip", ClientIP(r).String()),
					slog.String("method", sanitizeForLog(r.Method, 16)),
					slog.String("path", sanitizeForLog(r.URL.Path, 256)),
				)
				problem.Write(w, http.StatusBadRequest, "The request's Host is not served here.")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func hostAllowed(host string, allowed []string) bool {
	if !validHost(host) {
		return false
	}
	name, _, _ := splitHostPortStrict(host)
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for _, entry := range allowed {
		if name == entry {
			return true
		}
		if len(entry) > 1 && entry[0] == '.' && (name == entry[1:] || strings.HasSuffix(name, entry)) {
			return true
		}
	}
	return false
}

// validHost reports whether s is a hostname, an IPv4 address or a bracketed
// IPv6 address, optionally followed by ":port". It admits only the
// characters of DNS names (letters, digits, '.', '-'), so a value that
// passes can be placed after "https://" without changing the URL's
// authority: no '/', '\\', '@', '?', '#', whitespace or control characters.
func validHost(s string) bool {
	name, port, ok := splitHostPortStrict(s)
	if !ok || (port != "" && !validPort(port)) {
		return false
	}
	if strings.HasPrefix(name, "[") {
		a, err := netip.ParseAddr(name[1 : len(name)-1])
		return err == nil && a.Is6() && a.Zone() == ""
	}
	if name == "" || len(name) > 254 {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// splitHostPortStrict splits "name:port" or "[v6]:port", keeping IPv6
// brackets so names compare against allowlist entries such as "[::1]".
// ok is false when a colon is present but the port is empty, or when the
// shape is neither form (e.g. an unbracketed IPv6 address).
func splitHostPortStrict(s string) (name, port string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false
		}
		name, rest := s[:end+1], s[end+1:]
		if rest == "" {
			return name, "", true
		}
		if rest[0] != ':' || len(rest) == 1 {
			return "", "", false
		}
		return name, rest[1:], true
	}
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return s, "", true
	}
	if i == len(s)-1 || strings.IndexByte(s[i+1:], ':') >= 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// sanitizeForLog truncates s to at most limit bytes (on a rune boundary) and
// escapes control characters and invalid UTF-8, so an attacker-chosen value
// cannot forge log lines or smuggle terminal escapes, whatever handler
// formats the record.
func sanitizeForLog(s string, limit int) string {
	truncated := false
	if len(s) > limit {
		cut := limit
		// Back up to a rune start so the cut does not split a character.
		for cut > 0 && cut > limit-4 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		s, truncated = s[:cut], true
	}
	q := strconv.Quote(s)
	q = q[1 : len(q)-1]
	if truncated {
		q += "…"
	}
	return q
}
