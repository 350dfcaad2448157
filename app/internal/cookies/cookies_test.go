package cookies

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
)

// setCookieFrom serves one response that sets c and returns the raw header.
func setCookieFrom(t *testing.T, c *http.Cookie) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.SetCookie(w, c) }))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer res.Body.Close()
	return res.Header.Get("Set-Cookie")
}

func TestProductionCookieAttributes(t *testing.T) {
	s, err := config.Parse(map[string]string{
		"NBMS_ENV": "prod", "SECRET_KEY": "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj",
		"DATABASE_URL": "postgres://u:p@db/nbms", "REDIS_URL": "redis://cache:6379/0",
		"ALLOWED_HOSTS": "nbms.example.org", "CSRF_TRUSTED_ORIGINS": "https://nbms.example.org",
		"TRUSTED_PROXY_CIDRS": "172.30.0.0/24", "SESSION_COOKIE_SAMESITE": "Strict",
	})
	require.NoError(t, err)
	raw := setCookieFrom(t, FromSettings(s).New(s.SessionCookieName, "abc", time.Hour))
	assert.True(t, strings.HasPrefix(raw, "__Host-nbms_session=abc;"), raw)
	for _, attr := range []string{"Path=/", "Max-Age=3600", "HttpOnly", "Secure", "SameSite=Strict"} {
		assert.Contains(t, raw, attr)
	}
	assert.NotContains(t, raw, "Domain=")
}

func TestHostPrefixForcesSecure(t *testing.T) {
	raw := setCookieFrom(t, Policy{Secure: false, SameSite: http.SameSiteLaxMode}.New("__Host-x", "v", 0))
	assert.Contains(t, raw, "Secure")
	assert.Contains(t, raw, "SameSite=Lax")
	assert.NotContains(t, raw, "Max-Age", "a session cookie without lifetime")

	raw = setCookieFrom(t, Policy{Secure: false, SameSite: http.SameSiteLaxMode}.New("dev_session", "v", 0))
	assert.NotContains(t, raw, "Secure", "dev over plain HTTP")
	assert.Contains(t, raw, "HttpOnly")
}

func TestExpiredDeletesTheCookie(t *testing.T) {
	raw := setCookieFrom(t, Policy{Secure: true, SameSite: http.SameSiteLaxMode}.Expired("__Host-nbms_session"))
	assert.Contains(t, raw, "Max-Age=0")
	assert.Contains(t, raw, "__Host-nbms_session=;")
}
