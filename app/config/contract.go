// Package config is the NBMS environment contract: the one place that names
// every environment variable the app reads.
//
// Everything else derives from the declaration in this file: the app loads
// its Settings from it, the infra program builds the app container's
// environment from it, the policy pack checks deployed containers against
// it, and docs/production_hardening/secure_settings_reference.md is generated
// from it. Adding a variable means adding one entry to [contract] and one
// field to [Settings]; nothing else may read the environment.
package config

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/nbms-deploy/nbms/app/internal/headers"
)

// Profile selects defaults and how strict validation is.
type Profile string

// The profiles. Production is never a silent default: NBMS_ENV has no default.
const (
	Dev  Profile = "dev"
	Test Profile = "test"
	Prod Profile = "prod"
)

// Profiles lists every profile in documentation order.
var Profiles = []Profile{Dev, Test, Prod}

// Requirement says in which profiles a variable must be set and non-empty.
type Requirement int

const (
	// Optional variables may be unset; their default applies.
	Optional Requirement = iota
	// RequiredInProd variables must be set explicitly in production (a
	// default may still apply in dev and test).
	RequiredInProd
	// Always required, in every profile.
	Always
)

// Settings is the typed result of loading the contract.
type Settings struct {
	Profile Profile

	// Environment file
	ReadDotenv bool
	DotenvPath string

	// Secrets
	SecretKey          string
	SecretKeysPrevious []string

	// Listener and server timeouts
	HTTPAddr          string
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	DrainDelay        time.Duration

	// Hosts, proxies and HTTPS
	AllowedHosts          []string
	TrustedProxies        []netip.Prefix
	SSLRedirect           bool
	HSTSSeconds           int
	HSTSIncludeSubdomains bool
	HSTSPreload           bool

	// Browser policies
	CSP                       string
	CSPReportOnly             bool
	CSPReportPath             string
	ReferrerPolicy            string
	CrossOriginOpenerPolicy   string
	CrossOriginResourcePolicy string
	CSRFTrustedOrigins        []string
	CORSAllowedOrigins        []string
	CORSAllowCredentials      bool
	CORSAllowedHeaders        []string
	CORSPreflightMaxAge       time.Duration

	// Cookies
	SessionCookieName     string
	SessionCookieSecure   bool
	SessionCookieSameSite string
	SessionIdleTimeout    time.Duration
	SessionLifetime       time.Duration

	// Request limits
	MaxRequestBodyBytes int64
	MaxUploadBytes      int64

	// Throttling (Redis)
	RateLimitEnabled    bool
	RateLimitLoginIP    Rate
	RateLimitLoginUser  Rate
	RateLimitPublicAPI  Rate
	RateLimitAPIUser    Rate
	RateLimitUploadUser Rate

	// PostgreSQL
	DatabaseURL         string
	DBMaxConns          int
	DBMinConns          int
	DBConnMaxAge        time.Duration
	DBConnMaxIdle       time.Duration
	DBConnectTimeout    time.Duration
	DBPgBouncerMode     bool
	ReadinessTimeout    time.Duration
	RedisURL            string
	StaticRoot          string
	MediaRoot           string
	MediaXAccelRedirect bool
	LogLevel            string
	SentryDSN           string
	SentryEnvironment   string
	SentryRelease       string

	// One-shot commands
	OneShotTimeout time.Duration

	// Migrations: the session of `nbms migrate up`
	MigrateLockTimeout      time.Duration
	MigrateStatementTimeout time.Duration
}

// Var declares one environment variable.
type Var struct {
	Name string
	// Group orders the generated reference; variables of a group are
	// documented together.
	Group string
	Doc   string
	// Rules are go-playground/validator tags applied to the decoded value
	// in every profile (e.g. "oneof=debug info").
	Rules    string
	Required Requirement
	// Secret variables are never echoed in errors or logs and must be
	// delivered as secrets by the deployment.
	Secret bool
	// Default applies in every profile unless overridden by DevDefault
	// (dev and test) or ProdDefault (prod).
	Default     string
	DevDefault  *string
	ProdDefault *string
	// Stack says how a deployment stack (the infra program's nbms:* config,
	// package stacks) sets the variable:
	//   - "" (the zero value): the operator tunes it by name with
	//     StackEnvKey (`pulumi config set --path 'nbms:appEnv.NAME' value`),
	//     validated by this contract before anything deploys; unset, its
	//     default applies. A new variable is tunable from the stack with no
	//     other edit. Secret variables never are: they reach the container
	//     as secrets only.
	//   - a typed stack key, such as "nbms:app.logLevel": the program
	//     derives the variable from that key, and StackEnvKey refuses it.
	//   - ProgramOwned: the program decides it (listen address, paths, the
	//     generated secrets and URLs); the stack cannot set it.
	Stack string
	// check, when set, is the variable's semantic rule; production says
	// whether the prod profile is loading.
	check func(value any, production bool) error
	// field binds the variable to its Settings field.
	field func(*Settings) any
}

// DefaultFor returns the default value the variable takes in profile p.
func (v Var) DefaultFor(p Profile) string {
	switch {
	case p == Prod && v.ProdDefault != nil:
		return *v.ProdDefault
	case p != Prod && v.DevDefault != nil:
		return *v.DevDefault
	}
	return v.Default
}

// StackEnvKey is the stack config key under which an operator sets the
// contract's stack-tunable variables by name (a map NAME -> value).
const StackEnvKey = "nbms:appEnv"

// ProgramOwned is the Stack of a variable the infra program decides.
const ProgramOwned = "program"

// StackTunable reports whether an operator sets the variable by name under
// StackEnvKey.
func (v Var) StackTunable() bool { return v.Stack == "" && !v.Secret }

// StackKey is the stack config key that sets the variable: its typed key,
// StackEnvKey.NAME when it is stack-tunable, or "" when no stack key sets
// it (the program decides it, or it is a secret without a typed key).
func (v Var) StackKey() string {
	switch {
	case v.StackTunable():
		return StackEnvKey + "." + v.Name
	case v.Stack == ProgramOwned:
		return ""
	}
	return v.Stack
}

// RequiredIn reports whether the variable must be set explicitly in p.
func (v Var) RequiredIn(p Profile) bool {
	return v.Required == Always || (v.Required == RequiredInProd && p == Prod)
}

func str(s string) *string { return &s }

// DefaultCSP is the headers package's policy for a JSON API.
const DefaultCSP = headers.DefaultCSP

// AttachmentCSP is the policy of an evidence file's download, sent by the
// app and by the edge proxy's protected media location alike.
const AttachmentCSP = headers.AttachmentCSP

// Variable names read outside the contract table itself.
const (
	EnvProfile    = "NBMS_ENV"
	EnvReadDotenv = "NBMS_READ_DOTENV"
	EnvDotenvPath = "NBMS_DOTENV_PATH"
)

// contract is THE declaration. Keep entries grouped; the generated reference
// follows this order.
var contract = []Var{
	{
		Name: EnvProfile, Group: "Profile", Required: Always, Rules: "oneof=dev test prod",
		Doc:   "Deployment profile: dev, test or prod. Selects defaults and strictness; there is deliberately no default.",
		Stack: "nbms:profile",
		field: func(s *Settings) any { return &s.Profile },
	},
	{
		Name: EnvReadDotenv, Group: "Profile", Default: "false", DevDefault: nil,
		Doc:   "Read a .env file before validating (real environment variables win). Defaults to true in dev only; production reads one only when this is set to true explicitly. Only the real environment can set it.",
		Stack: ProgramOwned,
		field: func(s *Settings) any { return &s.ReadDotenv },
	},
	{
		Name: EnvDotenvPath, Group: "Profile", Default: ".env",
		Doc:   "Path of the .env file read when NBMS_READ_DOTENV is true.",
		Stack: ProgramOwned,
		field: func(s *Settings) any { return &s.DotenvPath },
	},

	{
		Name: "SECRET_KEY", Group: "Secrets", Required: RequiredInProd, Secret: true,
		DevDefault: str(devSecretKey),
		Doc:        "Key for signing and token derivation. At least 50 characters of CSPRNG output (e.g. `openssl rand -base64 48`); known placeholders are refused in production.",
		Stack:      ProgramOwned,
		field:      func(s *Settings) any { return &s.SecretKey },
	},
	{
		Name: "SECRET_KEY_PREVIOUS", Group: "Secrets", Secret: true,
		Doc:   "Comma-separated keys retired by a rotation, still accepted for verification. Same strength rule as SECRET_KEY; remove them once sessions signed with them have expired.",
		field: func(s *Settings) any { return &s.SecretKeysPrevious },
	},

	{
		Name: "HTTP_ADDR", Group: "Server", Default: ":8000", DevDefault: str("127.0.0.1:8000"), check: checkListenAddrVar,
		Doc:   "Address the HTTP server listens on. In production only the reverse proxy's network reaches it.",
		Stack: ProgramOwned,
		field: func(s *Settings) any { return &s.HTTPAddr },
	},
	{
		Name: "HTTP_READ_HEADER_TIMEOUT", Group: "Server", Default: "5s", Rules: "gt=0",
		Doc:   "Time allowed to read request headers (slowloris defence).",
		field: func(s *Settings) any { return &s.ReadHeaderTimeout },
	},
	{
		Name: "HTTP_READ_TIMEOUT", Group: "Server", Default: "60s", Rules: "gt=0",
		Doc:   "Time allowed to read a whole request, body included; bounds the slowest accepted upload.",
		field: func(s *Settings) any { return &s.ReadTimeout },
	},
	{
		Name: "HTTP_WRITE_TIMEOUT", Group: "Server", Default: "60s", Rules: "gt=0",
		Doc:   "Time allowed from the end of the request headers to the end of the response.",
		field: func(s *Settings) any { return &s.WriteTimeout },
	},
	{
		Name: "HTTP_IDLE_TIMEOUT", Group: "Server", Default: "120s", Rules: "gt=0",
		Doc:   "Keep-alive idle time before the server closes a connection.",
		field: func(s *Settings) any { return &s.IdleTimeout },
	},
	{
		Name: "SHUTDOWN_TIMEOUT", Group: "Server", Default: "25s", Rules: "gt=0",
		Doc:   "On SIGTERM, time given to in-flight requests to finish. Keep it below the orchestrator's kill timeout (Docker's default stop timeout is 10s; the infra program sets a longer one).",
		field: func(s *Settings) any { return &s.ShutdownTimeout },
	},
	{
		Name: "SHUTDOWN_DRAIN_DELAY", Group: "Server", Default: "5s", DevDefault: str("0s"), Rules: "gte=0",
		Doc:   "On SIGTERM, how long /readyz answers 503 while the server still serves, so the proxy stops routing new requests before the listener closes.",
		field: func(s *Settings) any { return &s.DrainDelay },
	},

	{
		Name: "ALLOWED_HOSTS", Group: "Hosts, proxies and HTTPS", Required: RequiredInProd,
		DevDefault: str("localhost,127.0.0.1,[::1]"),
		Doc:        "Comma-separated host names the app answers for (a leading dot matches subdomains). Other Host headers get 400. No `*`.",
		check:      checkAllowedHostsVar,
		Stack:      "nbms:allowedHosts",
		field:      func(s *Settings) any { return &s.AllowedHosts },
	},
	{
		Name: "TRUSTED_PROXY_CIDRS", Group: "Hosts, proxies and HTTPS",
		DevDefault: str("127.0.0.1/32,::1/128"),
		Doc:        "Comma-separated networks (CIDR or single IP) of the reverse proxies whose X-Forwarded-* headers are believed. Empty: forwarded headers are ignored. Never 0.0.0.0/0.",
		check:      checkTrustedProxiesVar,
		Stack:      "nbms:edgeSubnet",
		field:      func(s *Settings) any { return &s.TrustedProxies },
	},
	{
		Name: "SECURE_SSL_REDIRECT", Group: "Hosts, proxies and HTTPS", Default: "true", DevDefault: str("false"),
		Doc:   "Redirect plain-HTTP browser requests to HTTPS. API calls over HTTP get 403 instead; /healthz and /readyz are never redirected.",
		Stack: "nbms:tlsMode",
		field: func(s *Settings) any { return &s.SSLRedirect },
	},
	{
		Name: "SECURE_HSTS_SECONDS", Group: "Hosts, proxies and HTTPS", Default: strconv.Itoa(int(headers.DefaultHSTSMaxAge / time.Second)), DevDefault: str("0"), Rules: "gte=0",
		Doc:   "Strict-Transport-Security max-age in seconds; 0 disables the header. Production requires at least 31536000 (one year).",
		Stack: "nbms:app.hstsSeconds",
		field: func(s *Settings) any { return &s.HSTSSeconds },
	},
	{
		Name: "SECURE_HSTS_INCLUDE_SUBDOMAINS", Group: "Hosts, proxies and HTTPS", Default: "true",
		Doc:   "Add includeSubDomains to HSTS (required in production).",
		field: func(s *Settings) any { return &s.HSTSIncludeSubdomains },
	},
	{
		Name: "SECURE_HSTS_PRELOAD", Group: "Hosts, proxies and HTTPS", Default: "false",
		Doc:   "Add preload to HSTS. Hard to undo: enable only after deciding to submit the domain to the browsers' preload list.",
		Stack: "nbms:app.hstsPreload",
		field: func(s *Settings) any { return &s.HSTSPreload },
	},

	{
		Name: "SECURE_CSP", Group: "Browser policies", Default: DefaultCSP,
		Doc:   "Content-Security-Policy sent on every response. The default forbids everything, which suits a JSON API.",
		check: checkCSPVar,
		field: func(s *Settings) any { return &s.CSP },
	},
	{
		Name: "SECURE_CSP_REPORT_ONLY", Group: "Browser policies", Default: "false",
		Doc:   "Send the policy as Content-Security-Policy-Report-Only (for trialling a change). Refused in production: a report-only policy protects nothing.",
		field: func(s *Settings) any { return &s.CSPReportOnly },
	},
	{
		Name: "SECURE_CSP_REPORT_PATH", Group: "Browser policies", Default: "/csp-report", Rules: "omitempty,startswith=/",
		Doc:   "Path of the endpoint that receives CSP violation reports (added to the policy as report-uri). Empty disables reporting.",
		field: func(s *Settings) any { return &s.CSPReportPath },
	},
	{
		Name: "SECURE_REFERRER_POLICY", Group: "Browser policies", Default: "no-referrer",
		Doc:   "Referrer-Policy header (comma-separated tokens allowed).",
		check: checkReferrerPolicyVar,
		field: func(s *Settings) any { return &s.ReferrerPolicy },
	},
	{
		Name: "SECURE_CROSS_ORIGIN_OPENER_POLICY", Group: "Browser policies", Default: "same-origin", Rules: "oneof=" + strings.Join(headers.COOPValues, " "),
		Doc:   "Cross-Origin-Opener-Policy header.",
		field: func(s *Settings) any { return &s.CrossOriginOpenerPolicy },
	},
	{
		Name: "SECURE_CROSS_ORIGIN_RESOURCE_POLICY", Group: "Browser policies", Default: "same-origin", Rules: "oneof=" + strings.Join(headers.CORPValues, " "),
		Doc:   "Cross-Origin-Resource-Policy header.",
		field: func(s *Settings) any { return &s.CrossOriginResourcePolicy },
	},
	{
		Name: "CSRF_TRUSTED_ORIGINS", Group: "Browser policies", Required: RequiredInProd,
		DevDefault: str("http://localhost:8000,http://127.0.0.1:8000"),
		Doc:        "Comma-separated exact origins (scheme://host[:port]) allowed to send state-changing requests from a browser besides the app's own. https only in production.",
		check:      checkOriginsVar,
		Stack:      "nbms:csrfTrustedOrigins",
		field:      func(s *Settings) any { return &s.CSRFTrustedOrigins },
	},
	{
		Name: "CORS_ALLOWED_ORIGINS", Group: "Browser policies",
		Doc:   "Comma-separated exact origins allowed to read API responses cross-origin. Empty disables CORS. `*`, `null` and patterns are refused; https only in production.",
		check: checkOriginsVar,
		Stack: "nbms:corsOrigins",
		field: func(s *Settings) any { return &s.CORSAllowedOrigins },
	},
	{
		Name: "CORS_ALLOW_CREDENTIALS", Group: "Browser policies", Default: "false",
		Doc:   "Let the allowlisted origins send cookies with cross-origin requests to the authenticated API.",
		field: func(s *Settings) any { return &s.CORSAllowCredentials },
	},
	{
		Name: "CORS_ALLOWED_HEADERS", Group: "Browser policies", Default: "Accept,Content-Type,Authorization,X-Requested-With,X-Request-ID",
		Doc:   "Comma-separated request headers an allowlisted origin may send (answered in Access-Control-Allow-Headers): what `fetch` with JSON and tracing headers asks for in a preflight. Header names only; `*` is refused.",
		check: checkHeaderNamesVar,
		field: func(s *Settings) any { return &s.CORSAllowedHeaders },
	},
	{
		Name: "CORS_PREFLIGHT_MAX_AGE", Group: "Browser policies", Default: "10m", Rules: "gte=0,lte=2h",
		Doc:   "How long a browser may reuse a preflight answer (Access-Control-Max-Age; browsers cap it at 2h).",
		field: func(s *Settings) any { return &s.CORSPreflightMaxAge },
	},

	{
		Name: "SESSION_COOKIE_NAME", Group: "Cookies", Default: "__Host-nbms_session", DevDefault: str("nbms_session"), check: checkCookieNameVar,
		Doc:   "Name of the session cookie. Production requires the __Host- prefix (Secure, Path=/, no Domain: no subdomain can overwrite it).",
		Stack: "nbms:tlsMode",
		field: func(s *Settings) any { return &s.SessionCookieName },
	},
	{
		Name: "SESSION_COOKIE_SECURE", Group: "Cookies", Default: "true", DevDefault: str("false"),
		Doc:   "Mark cookies Secure (sent over HTTPS only). Required in production.",
		Stack: "nbms:tlsMode",
		field: func(s *Settings) any { return &s.SessionCookieSecure },
	},
	{
		Name: "SESSION_COOKIE_SAMESITE", Group: "Cookies", Default: "Lax", Rules: "oneof=Lax Strict",
		Doc:   "SameSite attribute of cookies: Lax or Strict (None is refused).",
		field: func(s *Settings) any { return &s.SessionCookieSameSite },
	},
	{
		Name: "SESSION_IDLE_TIMEOUT", Group: "Cookies", Default: "30m", Rules: "gt=0,lte=24h",
		Doc:   "A session unused for this long ends.",
		field: func(s *Settings) any { return &s.SessionIdleTimeout },
	},
	{
		Name: "SESSION_LIFETIME", Group: "Cookies", Default: "12h", Rules: "gt=0,lte=720h",
		Doc:   "Absolute session lifetime, however active the session is.",
		field: func(s *Settings) any { return &s.SessionLifetime },
	},

	{
		Name: "MAX_REQUEST_BODY_BYTES", Group: "Request limits", Default: "1048576", Rules: "gt=0",
		Doc:   "Largest request body accepted on ordinary routes, in bytes; larger ones get 413.",
		Stack: "nbms:app.maxRequestBodyBytes",
		field: func(s *Settings) any { return &s.MaxRequestBodyBytes },
	},
	{
		Name: "MAX_UPLOAD_BYTES", Group: "Request limits", Default: "52428800", Rules: "gt=0",
		Doc:   "Largest request body accepted on upload routes, in bytes (must be at least MAX_REQUEST_BODY_BYTES). Keep nginx's client_max_body_size equal.",
		Stack: "nbms:app.maxUploadBytes",
		field: func(s *Settings) any { return &s.MaxUploadBytes },
	},

	{
		Name: "RATE_LIMIT_ENABLED", Group: "Throttling", Default: "true",
		Doc:   "Apply the rate limits below (kept in Redis, shared by every replica). Production requires true; false exists for benchmarks and local debugging.",
		field: func(s *Settings) any { return &s.RateLimitEnabled },
	},
	{
		Name: "RATE_LIMIT_LOGIN_IP", Group: "Throttling", Default: "10/1m",
		Doc:   "Login attempts per client IP (IPv6 clients per /64), as COUNT/PERIOD. Fails closed (503) when Redis is down.",
		field: func(s *Settings) any { return &s.RateLimitLoginIP },
	},
	{
		Name: "RATE_LIMIT_LOGIN_USER", Group: "Throttling", Default: "5/5m",
		Doc:   "Login attempts per username, whatever the client IP (stops distributed guessing of one account). Fails closed when Redis is down.",
		field: func(s *Settings) any { return &s.RateLimitLoginUser },
	},
	{
		Name: "RATE_LIMIT_PUBLIC_API", Group: "Throttling", Default: "120/1m",
		Doc:   "Public API requests per client IP. Degrades to a per-process limiter when Redis is down.",
		field: func(s *Settings) any { return &s.RateLimitPublicAPI },
	},
	{
		Name: "RATE_LIMIT_API_USER", Group: "Throttling", Default: "600/1m",
		Doc:   "Authenticated API requests per user.",
		field: func(s *Settings) any { return &s.RateLimitAPIUser },
	},
	{
		Name: "RATE_LIMIT_UPLOADS_USER", Group: "Throttling", Default: "30/1h",
		Doc:   "Evidence file uploads per user.",
		field: func(s *Settings) any { return &s.RateLimitUploadUser },
	},

	{
		Name: "DATABASE_URL", Group: "PostgreSQL", Required: RequiredInProd, Secret: true,
		DevDefault: str("postgres://root@127.0.0.1:5432/nbms_dev?sslmode=disable"),
		Doc:        "PostgreSQL connection URL (postgres://user:password@host:port/db?sslmode=...). Secret: it carries the password.",
		check:      checkDatabaseURLVar,
		Stack:      ProgramOwned,
		field:      func(s *Settings) any { return &s.DatabaseURL },
	},
	{
		Name: "DB_MAX_CONNS", Group: "PostgreSQL", Default: "10", Rules: "gte=1,lte=1000",
		Doc:   "Largest number of pooled connections per app process. Replicas × this must stay under the server's (or PgBouncer's) limit.",
		Stack: "nbms:app.dbMaxConns",
		field: func(s *Settings) any { return &s.DBMaxConns },
	},
	{
		Name: "DB_MIN_CONNS", Group: "PostgreSQL", Default: "0", Rules: "gte=0",
		Doc:   "Connections kept open even when idle.",
		field: func(s *Settings) any { return &s.DBMinConns },
	},
	{
		Name: "DB_CONN_MAX_AGE", Group: "PostgreSQL", Default: "30m", Rules: "gt=0",
		Doc:   "Connection lifetime: a pooled connection older than this is closed and replaced (Django's CONN_MAX_AGE). Lets failovers and PgBouncer restarts take effect.",
		field: func(s *Settings) any { return &s.DBConnMaxAge },
	},
	{
		Name: "DB_CONN_MAX_IDLE", Group: "PostgreSQL", Default: "5m", Rules: "gt=0",
		Doc:   "An idle pooled connection is closed after this long.",
		field: func(s *Settings) any { return &s.DBConnMaxIdle },
	},
	{
		Name: "DB_CONNECT_TIMEOUT", Group: "PostgreSQL", Default: "5s", Rules: "gt=0",
		Doc:   "Time allowed to open one database connection.",
		field: func(s *Settings) any { return &s.DBConnectTimeout },
	},
	{
		Name: "DB_PGBOUNCER_MODE", Group: "PostgreSQL", Default: "false",
		Doc:   "Set when DATABASE_URL points at PgBouncer in transaction-pooling mode: server-side prepared statements and statement caches are disabled.",
		field: func(s *Settings) any { return &s.DBPgBouncerMode },
	},
	{
		Name: "READINESS_TIMEOUT", Group: "PostgreSQL", Default: "1s", Rules: "gt=0,lte=10s",
		Doc:   "Per-dependency time limit of /readyz checks (keep it below the health check's own timeout).",
		field: func(s *Settings) any { return &s.ReadinessTimeout },
	},

	{
		Name: "ONESHOT_TIMEOUT", Group: "One-shot commands", Default: "30m", Rules: "gte=1s,lte=24h",
		Doc:   "Time limit of each one-shot command (`nbms migrate`, `collectstatic`, `createorg`, `createuser`; the deploy's migrate and collectstatic containers), the wait for another runner's migration lock included: past it the command is stopped (a migration in progress is cancelled and rolled back), says so and exits with status 124, so a stuck step fails the deploy instead of hanging it.",
		field: func(s *Settings) any { return &s.OneShotTimeout },
	},

	{
		Name: "MIGRATE_LOCK_TIMEOUT", Group: "Migrations", Default: "5s", Rules: "gte=1ms,lte=1m",
		Doc:   "PostgreSQL lock_timeout of `nbms migrate up`: a migration statement that waits longer for a lock held by another session (a long transaction of the live release) fails, its transaction rolls back and the deploy stops, instead of queueing an exclusive lock request that every later query of the live release on that table waits behind. It bounds how long the live release's queries on that table queue behind the waiting migration: keep it well under the request timeouts.",
		field: func(s *Settings) any { return &s.MigrateLockTimeout },
	},
	{
		Name: "MIGRATE_STATEMENT_TIMEOUT", Group: "Migrations", Default: "15m", Rules: "gte=1s,lte=24h",
		Doc:   "PostgreSQL statement_timeout of `nbms migrate up`: a migration statement still running after this is cancelled and its transaction rolled back, so a runaway statement fails the deploy instead of hanging it. Generous, for backfills and CREATE INDEX CONCURRENTLY on large tables.",
		field: func(s *Settings) any { return &s.MigrateStatementTimeout },
	},

	{
		Name: "REDIS_URL", Group: "Redis", Required: RequiredInProd, Secret: true,
		DevDefault: str("redis://127.0.0.1:6379/0"),
		Doc:        "Redis connection URL (redis://[[user]:password@]host:port/db, or rediss:// for TLS; the infra program gives the ACL user of the password's generation). Secret: it may carry the password.",
		check:      checkRedisURLVar,
		Stack:      ProgramOwned,
		field:      func(s *Settings) any { return &s.RedisURL },
	},

	{
		Name: "STATIC_ROOT", Group: "Files", Default: "/srv/nbms/static", DevDefault: str("var/static"),
		Doc:   "Directory `nbms collectstatic` writes to and nginx serves under /static/.",
		Stack: ProgramOwned,
		field: func(s *Settings) any { return &s.StaticRoot },
	},
	{
		Name: "MEDIA_ROOT", Group: "Files", Default: "/srv/nbms/media", DevDefault: str("var/media"),
		Doc:   "Directory uploaded evidence files are stored in (a persistent volume in production). Nothing serves it publicly: a file leaves only through the app's download route, to a user who may read its dataset.",
		Stack: ProgramOwned,
		field: func(s *Settings) any { return &s.MediaRoot },
	},
	{
		Name: "MEDIA_X_ACCEL_REDIRECT", Group: "Files", Default: "true", DevDefault: str("false"),
		Doc: "How an authorised evidence download is sent. true: the app answers with an empty body and `X-Accel-Redirect: " + ProtectedMediaPrefix + "<stored name>`, and the nginx in front sends the file from its internal location (every deployed stack sets it). " +
			"false: the app sends the file from MEDIA_ROOT itself, with the same headers, for running without nginx in front (dev, tests). Either way only the app decides who may read a file.",
		field: func(s *Settings) any { return &s.MediaXAccelRedirect },
		// Every deployed stack has nginx in front (its internal location).
		Stack: ProgramOwned,
	},

	{
		Name: "LOG_LEVEL", Group: "Observability", Default: "info", DevDefault: str("debug"), Rules: "oneof=debug info warn error",
		Doc:   "Minimum log level. debug is refused in production (it is the debug mode this app has).",
		Stack: "nbms:app.logLevel",
		field: func(s *Settings) any { return &s.LogLevel },
	},
	{
		Name: "SENTRY_DSN", Group: "Observability", Secret: true,
		Doc:   "Sentry DSN. Empty disables error reporting. Events are scrubbed of secrets before they leave.",
		check: checkSentryDSNVar,
		Stack: "nbms:sentryDsn",
		field: func(s *Settings) any { return &s.SentryDSN },
	},
	{
		Name: "SENTRY_ENVIRONMENT", Group: "Observability",
		Doc:   "Environment tag on Sentry events; defaults to the profile.",
		Stack: ProgramOwned,
		field: func(s *Settings) any { return &s.SentryEnvironment },
	},
	{
		Name: "SENTRY_RELEASE", Group: "Observability",
		Doc:   "Release tag on Sentry events (e.g. the image tag).",
		field: func(s *Settings) any { return &s.SentryRelease },
	},
}

// Vars returns a copy of the declaration, in order.
func Vars() []Var {
	out := make([]Var, len(contract))
	copy(out, contract)
	return out
}

// Lookup returns the declaration of the named variable.
func Lookup(name string) (Var, bool) {
	for _, v := range contract {
		if v.Name == name {
			return v, true
		}
	}
	return Var{}, false
}

// The probe paths: liveness (the process answers) and readiness (its
// dependencies do too). The app serves them, Docker's health check, the
// post-deploy prober and the edge's plain-HTTP port probe them.
const (
	LivenessPath  = "/healthz"
	ReadinessPath = "/readyz"
)

// RequestIDPattern is the form of a request ID taken from a client's
// X-Request-ID header (1 to 64 of [A-Za-z0-9._-]): a correlation aid whose
// characters leave nothing to inject into a log line or header. The app
// (package logging) and the edge (infra/nginx) both keep a well-formed ID
// and replace any other with their own.
const (
	RequestIDPattern = `^[A-Za-z0-9._-]{1,64}$`
	MaxRequestIDLen  = 64
)

// PublicAPIPrefix is where the anonymous open-data API lives: no session,
// readable cross-origin, and answers the app marks public may be cached by
// the edge (infra/nginx).
const PublicAPIPrefix = "/api/public/"

// ProtectedMediaPrefix is the edge proxy's internal location of the media
// root (infra/nginx): nginx marks it internal, so only the app's
// X-Accel-Redirect reaches it and a client asking for it directly gets 404.
// The app appends a stored file name (MEDIA_X_ACCEL_REDIRECT).
const ProtectedMediaPrefix = "/_protected_media/"

// ProbePaths are the probe paths, liveness first.
func ProbePaths() []string { return []string{LivenessPath, ReadinessPath} }

// SecurityHeaders are the security headers every response carries, as the
// app sends them: the edge proxy sends the same on the answers it makes
// itself (error pages, redirects, static files).
func (s *Settings) SecurityHeaders() []headers.Field { return s.HeaderPolicy().Fields() }

// HeaderPolicy is the response header policy the settings describe.
func (s *Settings) HeaderPolicy() headers.Policy {
	p := headers.DefaultPolicy()
	p.HSTSMaxAge = time.Duration(s.HSTSSeconds) * time.Second
	// With HSTS off (dev's plain HTTP) its flags have nothing to qualify.
	p.HSTSIncludeSubdomains = s.HSTSSeconds > 0 && s.HSTSIncludeSubdomains
	p.HSTSPreload = s.HSTSSeconds > 0 && s.HSTSPreload
	p.CSP = s.CSP
	p.CSPReportOnly = s.CSPReportOnly
	p.CSPReportPath = s.CSPReportPath
	p.ReferrerPolicy = s.ReferrerPolicy
	p.CrossOriginOpenerPolicy = s.CrossOriginOpenerPolicy
	p.CrossOriginResourcePolicy = s.CrossOriginResourcePolicy
	return p
}
