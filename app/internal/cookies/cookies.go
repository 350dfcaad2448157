// Package cookies makes every cookie the app sets from one policy, so that
// no handler can forget Secure, HttpOnly or SameSite.
package cookies

import (
	"net/http"
	"strings"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
)

// Policy holds the cookie attributes the env contract decided.
type Policy struct {
	Secure   bool
	SameSite http.SameSite
}

// FromSettings builds the policy from the loaded contract.
func FromSettings(s *config.Settings) Policy {
	p := Policy{Secure: s.SessionCookieSecure, SameSite: http.SameSiteLaxMode}
	if s.SessionCookieSameSite == "Strict" {
		p.SameSite = http.SameSiteStrictMode
	}
	return p
}

// New returns a host-only cookie (no Domain, Path=/) that scripts cannot
// read. A name with the __Host- prefix is only valid on a Secure cookie;
// New forces Secure for it rather than emit a cookie browsers would drop.
func (p Policy) New(name, value string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		Secure:   p.Secure || strings.HasPrefix(name, config.HostCookiePrefix),
		HttpOnly: true,
		SameSite: p.SameSite,
	}
	if maxAge > 0 {
		c.MaxAge = int(maxAge / time.Second)
		c.Expires = time.Now().Add(maxAge).UTC()
	}
	return c
}

// Expired returns the cookie that makes a browser delete name.
func (p Policy) Expired(name string) *http.Cookie {
	c := p.New(name, "", 0)
	c.MaxAge = -1
	c.Expires = time.Unix(1, 0).UTC()
	return c
}
