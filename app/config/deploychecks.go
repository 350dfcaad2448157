package config

import (
	"errors"
	"fmt"
	"strings"
)

// DeployCheck is a rule over the loaded settings as a whole, in the spirit of
// Django's `check --deploy`. IDs mirror Django's where one exists (NBMS-W004
// is Django's security.W004) and use NBMS-Cnnn for checks Django lacks.
//
// Load applies every check that applies to the profile, so a production
// process cannot start with a failing one; predeploy-check lists them all
// with their results for the operator.
type DeployCheck struct {
	ID    string
	Title string
	// Vars are the variables the check is about; its failure is reported
	// against the first.
	Vars []string
	// AllProfiles checks are consistency rules that hold everywhere;
	// the others apply to production only.
	AllProfiles bool
	check       func(*Settings) error
}

// Run evaluates the check.
func (c DeployCheck) Run(s *Settings) error { return c.check(s) }

// AppliesTo reports whether the check is enforced in profile p.
func (c DeployCheck) AppliesTo(p Profile) bool { return c.AllProfiles || p == Prod }

// MinHSTSSeconds is the production floor for HSTS (one year; ASVS 5.0 3.4.1).
const MinHSTSSeconds = 31536000

// HostCookiePrefix makes a cookie host-only, Secure and Path=/ (RFC 6265bis).
const HostCookiePrefix = "__Host-"

var deployChecks = []DeployCheck{
	{
		ID: "NBMS-W004", Title: "HSTS max-age is at least one year", Vars: []string{"SECURE_HSTS_SECONDS"},
		check: func(s *Settings) error {
			if s.HSTSSeconds < MinHSTSSeconds {
				return fmt.Errorf("is %d; production needs at least %d", s.HSTSSeconds, MinHSTSSeconds)
			}
			return nil
		},
	},
	{
		ID: "NBMS-W005", Title: "HSTS covers subdomains", Vars: []string{"SECURE_HSTS_INCLUDE_SUBDOMAINS"},
		check: func(s *Settings) error {
			if !s.HSTSIncludeSubdomains {
				return errors.New("must be true in production")
			}
			return nil
		},
	},
	{
		ID: "NBMS-W008", Title: "plain-HTTP browser requests are redirected to HTTPS", Vars: []string{"SECURE_SSL_REDIRECT"},
		check: func(s *Settings) error {
			if !s.SSLRedirect {
				return errors.New("must be true in production")
			}
			return nil
		},
	},
	{
		ID: "NBMS-W009", Title: "the secret key is long and random", Vars: []string{"SECRET_KEY"},
		check: func(s *Settings) error { return CheckSecretKey(s.SecretKey) },
	},
	{
		ID: "NBMS-W025", Title: "retired secret keys are as strong as the current one", Vars: []string{"SECRET_KEY_PREVIOUS"},
		check: func(s *Settings) error {
			var errs []error
			for i, k := range s.SecretKeysPrevious {
				if err := CheckSecretKey(k); err != nil {
					errs = append(errs, fmt.Errorf("entry %d %w", i+1, err))
				}
				if k == s.SecretKey {
					errs = append(errs, fmt.Errorf("entry %d equals SECRET_KEY", i+1))
				}
			}
			return errors.Join(errs...)
		},
	},
	{
		ID: "NBMS-W012", Title: "cookies are Secure", Vars: []string{"SESSION_COOKIE_SECURE"},
		check: func(s *Settings) error {
			if !s.SessionCookieSecure {
				return errors.New("must be true in production")
			}
			return nil
		},
	},
	{
		ID: "NBMS-C001", Title: "the session cookie is host-only (__Host- prefix)", Vars: []string{"SESSION_COOKIE_NAME"},
		check: func(s *Settings) error {
			if !strings.HasPrefix(s.SessionCookieName, HostCookiePrefix) {
				return fmt.Errorf("%q must start with %s in production", s.SessionCookieName, HostCookiePrefix)
			}
			return nil
		},
	},
	{
		ID: "NBMS-C002", Title: "a __Host- cookie is also Secure", Vars: []string{"SESSION_COOKIE_SECURE", "SESSION_COOKIE_NAME"}, AllProfiles: true,
		check: func(s *Settings) error {
			if strings.HasPrefix(s.SessionCookieName, HostCookiePrefix) && !s.SessionCookieSecure {
				return errors.New("must be true when SESSION_COOKIE_NAME has the __Host- prefix (browsers drop the cookie otherwise)")
			}
			return nil
		},
	},
	{
		ID: "NBMS-W018", Title: "no debug mode", Vars: []string{"LOG_LEVEL"},
		check: func(s *Settings) error {
			if s.LogLevel == "debug" {
				return errors.New("debug logging is not allowed in production")
			}
			return nil
		},
	},
	{
		ID: "NBMS-W020", Title: "allowed hosts are listed", Vars: []string{"ALLOWED_HOSTS"},
		check: func(s *Settings) error {
			if len(s.AllowedHosts) == 0 {
				return errors.New("must list at least one host name")
			}
			return nil
		},
	},
	{
		ID: "NBMS-C003", Title: "the content security policy is enforced", Vars: []string{"SECURE_CSP_REPORT_ONLY"},
		check: func(s *Settings) error {
			if s.CSPReportOnly {
				return errors.New("must be false in production: a report-only policy blocks nothing")
			}
			return nil
		},
	},
	{
		ID: "NBMS-C004", Title: "the app knows its reverse proxy", Vars: []string{"TRUSTED_PROXY_CIDRS"},
		check: func(s *Settings) error {
			if s.SSLRedirect && len(s.TrustedProxies) == 0 {
				return errors.New("must name the reverse proxy's network in production: without it every request looks like plain HTTP behind a TLS-terminating proxy")
			}
			return nil
		},
	},
	{
		ID: "NBMS-C008", Title: "rate limiting is on", Vars: []string{"RATE_LIMIT_ENABLED"},
		check: func(s *Settings) error {
			if !s.RateLimitEnabled {
				return errors.New("must be true in production: login and API throttling protect accounts and capacity")
			}
			return nil
		},
	},
	{
		// The variables are checked one by one as they load; this catches
		// the combinations the server would refuse at start-up (a report
		// path next to a CSP that has its own report-uri, preload with a
		// short max-age, ...), so predeploy-check and start-up agree.
		ID: "NBMS-C009", Title: "the response header settings make a servable policy", AllProfiles: true,
		Vars: []string{"SECURE_CSP", "SECURE_CSP_REPORT_PATH", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD",
			"SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_CSP_REPORT_ONLY", "SECURE_REFERRER_POLICY",
			"SECURE_CROSS_ORIGIN_OPENER_POLICY", "SECURE_CROSS_ORIGIN_RESOURCE_POLICY"},
		check: func(s *Settings) error { return s.HeaderPolicy().Validate() },
	},
	{
		ID: "NBMS-C005", Title: "the upload limit is not below the body limit", Vars: []string{"MAX_UPLOAD_BYTES", "MAX_REQUEST_BODY_BYTES"}, AllProfiles: true,
		check: func(s *Settings) error {
			if s.MaxUploadBytes < s.MaxRequestBodyBytes {
				return fmt.Errorf("is %d, below MAX_REQUEST_BODY_BYTES (%d)", s.MaxUploadBytes, s.MaxRequestBodyBytes)
			}
			return nil
		},
	},
	{
		ID: "NBMS-C006", Title: "the pool minimum does not exceed its maximum", Vars: []string{"DB_MIN_CONNS", "DB_MAX_CONNS"}, AllProfiles: true,
		check: func(s *Settings) error {
			if s.DBMinConns > s.DBMaxConns {
				return fmt.Errorf("is %d, above DB_MAX_CONNS (%d)", s.DBMinConns, s.DBMaxConns)
			}
			return nil
		},
	},
	{
		ID: "NBMS-C007", Title: "the idle timeout is shorter than the session lifetime", Vars: []string{"SESSION_IDLE_TIMEOUT", "SESSION_LIFETIME"}, AllProfiles: true,
		check: func(s *Settings) error {
			if s.SessionIdleTimeout > s.SessionLifetime {
				return fmt.Errorf("is %s, longer than SESSION_LIFETIME (%s)", s.SessionIdleTimeout, s.SessionLifetime)
			}
			return nil
		},
	},
}

// DeployChecks returns every deploy check in order.
func DeployChecks() []DeployCheck {
	out := make([]DeployCheck, len(deployChecks))
	copy(out, deployChecks)
	return out
}
