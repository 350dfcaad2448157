package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/ratelimit"
)

// The throttling policies. What happens when Redis is unreachable is
// decided per policy:
//   - login attempts fail closed (503): an attacker must not gain unlimited
//     password guesses by knocking Redis over;
//   - uploads fail closed: they are the most expensive requests;
//   - public reads and authenticated API calls degrade to a per-process
//     limiter with the same rate (N replicas then allow N times the rate):
//     open data stays available during a Redis outage.
const (
	PolicyLoginIP     = "login-ip"
	PolicyLoginUser   = "login-user"
	PolicyPublicAPI   = "public-api"
	PolicyAPIUser     = "api-user"
	PolicyUploadsUser = "uploads-user"
)

// LoginPath is the credential endpoint the per-IP login policy guards.
const LoginPath = AuthPrefix + "login"

// RatePolicies maps the contract's rates onto the limiter's policies.
func RatePolicies(s *config.Settings) []ratelimit.Policy {
	return []ratelimit.Policy{
		{Name: PolicyLoginIP, Rate: s.RateLimitLoginIP, OnRedisError: ratelimit.FailClosed},
		{Name: PolicyLoginUser, Rate: s.RateLimitLoginUser, OnRedisError: ratelimit.FailClosed},
		{Name: PolicyPublicAPI, Rate: s.RateLimitPublicAPI, OnRedisError: ratelimit.FailLocal},
		{Name: PolicyAPIUser, Rate: s.RateLimitAPIUser, OnRedisError: ratelimit.FailLocal},
		{Name: PolicyUploadsUser, Rate: s.RateLimitUploadUser, OnRedisError: ratelimit.FailClosed},
	}
}

// userKey keys a policy by the authenticated user; anonymous requests are
// not limited by it (they meet the per-IP policies instead).
func userKey(r *http.Request) (string, bool) {
	u, ok := identity.From(r.Context())
	if !ok {
		return "", false
	}
	return strconv.FormatInt(u.ID, 10), true
}

// throttle applies the right policies to each API request. It runs inside
// the session layer so that per-user policies see the user. A nil limiter
// limits nothing.
func throttle(next http.Handler, l *ratelimit.Limiter) http.Handler {
	if l == nil {
		return next
	}
	public := l.Middleware(PolicyPublicAPI, ratelimit.ClientIPKey)(next)
	login := l.Middleware(PolicyLoginIP, ratelimit.ClientIPKey)(next)
	uploads := l.Middleware(PolicyAPIUser, userKey)(l.Middleware(PolicyUploadsUser, userKey)(next))
	private := l.Middleware(PolicyAPIUser, userKey)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, PublicAPIPrefix):
			public.ServeHTTP(w, r)
		case p == LoginPath && r.Method == http.MethodPost:
			login.ServeHTTP(w, r)
		case strings.HasPrefix(p, UploadPrefix):
			uploads.ServeHTTP(w, r)
		default:
			private.ServeHTTP(w, r)
		}
	})
}
