// Package proxy decides where a request really came from and refuses
// requests addressed to the wrong host or sent over plain HTTP.
//
// The app runs behind a TLS-terminating reverse proxy, so the TCP peer, the
// scheme and the Host it sees are the proxy's, not the user's. The proxy
// reports the originals in X-Forwarded-* headers, but any client can send
// those headers too; they are believed only when the direct peer is a
// configured trusted proxy (ASVS 5.0 4.1.3).
//
// The middlewares must be chained in this order, outermost first:
//
//	Forwarded(trusted)      // resolves client IP, scheme and public host; rewrites r.Host
//	AllowedHosts(...)       // refuses hosts not in the allowlist
//	RequireHTTPS(...)       // redirects or refuses plain HTTP; builds Location from r.Host
//	http.CrossOriginProtection and the rest
//
// The RFC 7239 Forwarded header is deliberately ignored, from every peer:
// supporting two header families doubles the ways a proxy and a client can
// disagree, and the common proxies (nginx, Traefik, Caddy, cloud load
// balancers) all emit X-Forwarded-*. Configure the proxy to send those.
package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// Info is what the app should believe about a request's origin.
type Info struct {
	// ClientIP is the address of the user agent: the TCP peer, or, behind
	// trusted proxies, the right-most untrusted X-Forwarded-For hop. It is
	// unmapped (never ::ffff:a.b.c.d) and carries no IPv6 zone. It is the
	// zero Addr only when r.RemoteAddr is not an IP (e.g. a unix socket).
	ClientIP netip.Addr
	// Scheme is "http" or "https" as the client used it.
	Scheme string
	// Host is host[:port] as the client addressed it.
	Host string
	// Secure reports whether the client's connection used HTTPS.
	Secure bool
	// ViaTrustedProxy reports whether the direct peer is a trusted proxy,
	// i.e. whether X-Forwarded-* headers were believed.
	ViaTrustedProxy bool
}

// Resolve works out Info for r. It reads X-Forwarded-For, -Proto, -Host and
// -Port only when r.RemoteAddr is inside one of the trusted prefixes and
// ignores them completely otherwise. It never fails: headers that cannot be
// parsed are ignored and the connection's own values are used instead.
//
// Client IP: X-Forwarded-For (all header lines, in order) is walked from the
// right, skipping hops inside trusted prefixes; the first untrusted hop is
// the client. If every hop is trusted, the left-most one is. The left-most
// value is otherwise never used, because a client can put anything there.
// An entry that is not an IP address (garbage, "unknown", an empty entry)
// stops the walk: the client is then the last trusted hop reached (the
// peer, if the garbage is right-most), since that is the nearest address a
// trusted proxy actually vouched for.
//
// Proto, Host and Port: only the right-most value counts (the one written
// by the trusted peer itself; values to its left may come from the client).
// A proto other than http/https, a malformed host or port is ignored.
// X-Forwarded-Port replaces the port of the host; the scheme's default port
// is then dropped so that Host matches the Origin a browser sends.
func Resolve(r *http.Request, trusted []netip.Prefix) Info {
	peer := peerAddr(r.RemoteAddr)
	info := Info{
		ClientIP: peer,
		Scheme:   "http",
		Host:     r.Host,
	}
	if r.TLS != nil {
		info.Scheme = "https"
	}
	if peer.IsValid() && contains(trusted, peer) {
		info.ViaTrustedProxy = true
		info.ClientIP = clientFromXFF(r.Header.Values("X-Forwarded-For"), peer, trusted)
		if proto, ok := lastValue(r.Header, "X-Forwarded-Proto"); ok {
			if p := strings.ToLower(proto); p == "http" || p == "https" {
				info.Scheme = p
			}
		}
		if host, ok := lastValue(r.Header, "X-Forwarded-Host"); ok && validHost(host) {
			info.Host = host
		}
		if port, ok := lastValue(r.Header, "X-Forwarded-Port"); ok && validPort(port) {
			if name, _, ok := splitHostPortStrict(info.Host); ok && name != "" {
				if defaultPort(info.Scheme) != port {
					name += ":" + port
				}
				info.Host = name
			}
		}
	}
	info.Secure = info.Scheme == "https"
	return info
}

type infoKey struct{}

// Forwarded returns middleware that resolves Info once per request (see
// Resolve), stores it for FromRequest and ClientIP, and sets r.Host to the
// effective public host, so that later code comparing against r.Host
// (AllowedHosts, http.CrossOriginProtection's Origin check) sees the host
// the browser used rather than the proxy's upstream name.
func Forwarded(trusted []netip.Prefix) func(http.Handler) http.Handler {
	// Copy so later changes to the caller's slice cannot widen trust.
	trusted = append([]netip.Prefix(nil), trusted...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := Resolve(r, trusted)
			r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
			r.Host = info.Host
			next.ServeHTTP(w, r)
		})
	}
}

// FromRequest returns the Info stored by Forwarded. If Forwarded did not
// run, it resolves r trusting no proxy, which is the safe reading.
func FromRequest(r *http.Request) Info {
	if info, ok := r.Context().Value(infoKey{}).(Info); ok {
		return info
	}
	return Resolve(r, nil)
}

// ClientIP returns FromRequest(r).ClientIP: the address to use for rate
// limiting, audit and access logs.
func ClientIP(r *http.Request) netip.Addr {
	return FromRequest(r).ClientIP
}

// errNoAddr marks an X-Forwarded-For entry that is not an IP address.
var errNoAddr = errors.New("not an IP address")

// clientFromXFF applies the right-most-untrusted rule documented on Resolve.
func clientFromXFF(lines []string, peer netip.Addr, trusted []netip.Prefix) netip.Addr {
	client := peer
	for i := len(lines) - 1; i >= 0; i-- {
		rest := lines[i]
		for {
			entry := rest
			comma := strings.LastIndexByte(rest, ',')
			if comma >= 0 {
				entry, rest = rest[comma+1:], rest[:comma]
			}
			hop, err := parseHop(entry)
			if err != nil {
				return client
			}
			client = hop
			if !contains(trusted, hop) {
				return client
			}
			if comma < 0 {
				break
			}
		}
	}
	return client
}

// parseHop parses one X-Forwarded-For entry. Proxies write bare addresses,
// but some add a port ("1.2.3.4:5678", "[::1]:5678") or brackets ("[::1]").
func parseHop(s string) (netip.Addr, error) {
	s = strings.Trim(s, " \t")
	a, err := netip.ParseAddr(s)
	if err != nil {
		if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
			a, err = netip.ParseAddr(s[1 : len(s)-1])
		} else {
			var ap netip.AddrPort
			ap, err = netip.ParseAddrPort(s)
			a = ap.Addr()
		}
	}
	if err != nil || !a.IsValid() {
		return netip.Addr{}, errNoAddr
	}
	return normalize(a), nil
}

// peerAddr parses r.RemoteAddr, which net/http sets to "ip:port"; a bare IP
// is accepted for callers that build requests by hand.
func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return normalize(ap.Addr())
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return normalize(a)
	}
	return netip.Addr{}
}

// normalize makes an address comparable with prefixes and usable as a key:
// ::ffff:10.0.0.1 is 10.0.0.1, and zones are dropped because
// netip.Prefix.Contains never matches a zoned address.
func normalize(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

func contains(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// lastValue returns the right-most comma-separated value of header key
// across all its lines, trimmed.
func lastValue(h http.Header, key string) (string, bool) {
	lines := h.Values(key)
	if len(lines) == 0 {
		return "", false
	}
	last := lines[len(lines)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	last = strings.Trim(last, " \t")
	return last, last != ""
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

func validPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}
