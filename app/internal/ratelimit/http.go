package ratelimit

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/proxy"
)

// Middleware limits requests under the named policy, keyed by key(r).
// When key reports false the request is not limited by this policy (e.g.
// an anonymous request under a per-user policy).
//
// Every limited response carries the IETF fields of
// draft-ietf-httpapi-ratelimit-headers-10, e.g.
//
//	RateLimit-Policy: "public-api";q=120;w=60
//	RateLimit: "public-api";r=119;t=1
//
// added (not set), so that several policies on one route each get an item.
// A refused request gets 429 problem+json with Retry-After in whole seconds
// (at least 1), and t equal to it, as the draft asks. A FailClosed policy
// whose Redis is unreachable answers 503 with Retry-After.
//
// It panics if the policy was not given to New: a wiring mistake that must
// stop the process at startup. On a nil Limiter it returns next unchanged.
func (l *Limiter) Middleware(policy string, key func(*http.Request) (string, bool)) func(http.Handler) http.Handler {
	if l == nil {
		return func(next http.Handler) http.Handler { return next }
	}
	if _, ok := l.policies[policy]; !ok {
		panic(fmt.Sprintf("ratelimit: Middleware for unknown policy %q", policy))
	}
	if key == nil {
		panic("ratelimit: Middleware with a nil key function")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k, ok := key(r)
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			if l.decide(w, r, policy, k, true) {
				next.ServeHTTP(w, r)
			}
		})
	}
}

// Check counts one request for key under the named policy, for a handler
// that learns the key only after reading the body (the login handler's
// per-username policy). It returns true when the request may proceed;
// otherwise it has written the 429 or 503 response and the handler must
// return.
//
// Pass a canonical key (e.g. the username as stored, lower-cased if logins
// are case-insensitive), or one account gets several buckets.
//
// Unlike Middleware, Check sends the RateLimit fields only on the refusal:
// on an allowed login, r would tell anyone who types a username how many
// attempts others made on that account within the window (the draft's
// security considerations warn about exactly this).
//
// On a nil Limiter it returns true.
func (l *Limiter) Check(w http.ResponseWriter, r *http.Request, policy, key string) bool {
	if l == nil {
		return true
	}
	return l.decide(w, r, policy, key, false)
}

// decide runs Allow and, unless the request may proceed, writes the answer.
func (l *Limiter) decide(w http.ResponseWriter, r *http.Request, policy, key string, advertise bool) bool {
	d, err := l.Allow(r.Context(), policy, key)
	switch {
	case errors.Is(err, ErrUnknownPolicy):
		l.logger.Error("rate limit check for an unknown policy", slog.String("policy", policy))
		problem.Write(w, http.StatusInternalServerError, "The request could not be processed.")
		return false
	case err != nil:
		// Redis is unreachable under FailClosed, or the client went away
		// while we asked; either way the request does not proceed.
		w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(unavailableRetryAfter), 10))
		problem.Write(w, http.StatusServiceUnavailable, "Request limits cannot be checked right now; retry shortly.")
		return false
	}
	p := l.policies[policy]
	if d.Allowed {
		if advertise {
			writeFields(w.Header(), p, d.Remaining, ceilSeconds(d.ResetAfter))
		}
		return true
	}
	retry := max(ceilSeconds(d.RetryAfter), 1)
	writeFields(w.Header(), p, 0, retry)
	w.Header().Set("Retry-After", strconv.FormatInt(retry, 10))
	problem.Write(w, http.StatusTooManyRequests,
		fmt.Sprintf("Too many requests; retry in %d seconds.", retry))
	return false
}

// writeFields adds one item to RateLimit-Policy and to RateLimit.
func writeFields(h http.Header, p *policyState, remaining int, reset int64) {
	h.Add("RateLimit-Policy", p.headerVal)
	b := make([]byte, 0, len(p.Name)+32)
	b = strconv.AppendQuote(b, p.Name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	h.Add("RateLimit", string(b))
}

// ClientIPKey keys a request by its client IP as the trusted-proxy rule
// (proxy.ClientIP) determines it; wire proxy.Forwarded in front, or every
// client behind the reverse proxy shares the proxy's bucket. IPv4-mapped
// addresses count as IPv4. IPv6 clients are keyed by their /64, the
// smallest block a provider gives a subscriber: per address, one client
// would command 2^64 buckets.
//
// It reports false, leaving the request unlimited by the policy, only when
// the connection has no IP address (a Unix socket), never for a TCP client.
func ClientIPKey(r *http.Request) (string, bool) {
	return ipKey(proxy.ClientIP(r))
}

func ipKey(ip netip.Addr) (string, bool) {
	if !ip.IsValid() {
		return "", false
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String(), true
	}
	return netip.PrefixFrom(ip, 64).Masked().String(), true
}
