// Package nginx renders the nginx.conf of the NBMS edge proxy from the stack
// config: TLS termination, the HTTP→HTTPS redirect, static files served from
// their volume, evidence files sent from the media volume once the app has
// authorised them (X-Accel-Redirect), the login rate limit, the upload limit
// and the X-Forwarded-* headers the app believes.
//
// Render is a pure function: the same Params always give the same bytes, so
// a changed config shows up as a diff in `pulumi preview` and nothing else
// does. The output is one self-contained file (no include, no mime.types)
// that works under a non-root user on a read-only root filesystem with a
// writable tmpfs at /tmp, and that nginx runs in the foreground with
// `nginx -g 'daemon off;'` (the file has no daemon directive because the
// official image's command already passes one, and a duplicate is an error).
package nginx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nbms-deploy/nbms/infra/internal/confpath"
)

// Defaults applied to zero-valued Params fields.
const (
	DefaultPidPath = "/tmp/nginx.pid"
	DefaultTempDir = "/tmp"
	// DefaultUpstreamReadTimeout is how long nginx waits for the app.
	DefaultUpstreamReadTimeout = 60 * time.Second
	DefaultLoginPath           = "/auth/login"
)

// HealthPath answers on the HTTP port, whatever the Host header, with the
// app's liveness probe (config.LivenessPath) asked through the site's
// upstream: 200 while nginx reaches the live release, 502 or 504 within
// 2 s while it cannot (the app is stopped, or is at an address nginx has
// not followed). It is the proxy container's health check, e.g.
// `wget -qO- http://127.0.0.1:<HTTPPort>/nginx-health`, which so reports
// an edge that would answer every request with 502; it needs no
// certificate and no DNS beyond the upstream's own. Liveness, not
// readiness: a database restart is the app's outage (its /readyz says
// so), not the edge's. The deployed proxy has no state without an
// upstream: its supervisor starts nginx only on an upstream file whose
// names resolve, so before the first switch (and while the live release's
// name does not resolve at start) nothing listens and the check fails.
const HealthPath = "/nginx-health"

// HashedNamePattern matches the static file names that are served as
// immutable (cached for a year): a content hash of 8 to 64 lowercase hex
// digits just before the extension, as in app.3f2a9c1b.css. Every other
// static file is revalidated on each use. The pattern is valid both as PCRE
// (nginx) and as Go regexp, so the code that names static files can test
// its names against it.
const HashedNamePattern = `\.[0-9a-f]{8,64}\.[A-Za-z0-9]+$`

// Header is one response header.
type Header struct{ Name, Value string }

// Params is everything the rendered configuration depends on.
type Params struct {
	// ServerNames are the host names the site answers to (the app's
	// ALLOWED_HOSTS). A request for any other Host is dropped without an
	// answer, and a TLS handshake for any other SNI name is refused.
	ServerNames []string
	// ListenAddress is the IP address nginx binds inside its container.
	// Empty means every IPv4 address.
	ListenAddress string
	// HTTPPort and HTTPSPort are the ports nginx listens on inside its
	// container. Above 1023 nginx needs no capability to bind them.
	HTTPPort, HTTPSPort int
	// PublicPort is the port clients connect to (the published host port):
	// it goes into the HTTP→HTTPS redirect and into X-Forwarded-Port, so the
	// app rebuilds the origin the browser used, not the container's port.
	// Zero means the scheme's default (443 with TLS, 80 without).
	PublicPort int
	// TLS serves the site over HTTPS on HTTPSPort and redirects HTTP to it.
	// Without TLS (local dev stacks only) the site is served on HTTPPort.
	TLS bool
	// CertPath and KeyPath are the PEM certificate chain and private key.
	CertPath, KeyPath string
	// Upstream is host:port of the app, e.g. "app:8000". Unused when
	// UpstreamFile is set.
	Upstream string
	// UpstreamFile is a file of `server host:port ...;` lines that nginx
	// includes in the app's upstream group instead of Upstream: the deployed
	// stack's blue/green switch (the proxy image's nbms-switch) writes the
	// live release's container name there, and the proxy's supervisor
	// reloads nginx gracefully on it, and again whenever that name resolves
	// to a new address (nginx resolves it only when it loads the file).
	UpstreamFile string
	// Resolver is the DNS server nginx asks for Upstream's address at
	// request time (Docker's embedded DNS is 127.0.0.11). Required when the
	// upstream host is a name: nginx resolves names in an upstream block
	// only once, at startup, and would keep sending traffic to the old
	// address after the app container is replaced. Empty is only allowed
	// for an IP address upstream.
	Resolver string
	// StaticRoot and MediaRoot are the directories of the static and media
	// volumes inside the nginx container. StaticRoot is public under
	// /static/; MediaRoot is only reachable through the internal location
	// config.ProtectedMediaPrefix, by the app's X-Accel-Redirect answer to
	// a download it has authorised.
	StaticRoot, MediaRoot string
	// ClientMaxBodyBytes is the largest request body nginx accepts; set it
	// to the app's MAX_UPLOAD_BYTES so oversized uploads stop at the edge.
	ClientMaxBodyBytes int64
	// LoginPath is the login endpoint whose POSTs are rate limited per
	// client address. Default DefaultLoginPath.
	LoginPath string
	// LoginRatePerMinute and LoginBurst configure the login limit: after
	// 1+LoginBurst quick attempts, further POSTs get 429 (with Retry-After)
	// until the rate refills. LoginBurst 0 allows no burst.
	LoginRatePerMinute, LoginBurst int
	// SecurityHeaders are the app's security headers, exactly as the app
	// sends them (config.Settings.SecurityHeaders): nginx sends the same set
	// on every response that leaves the edge, its own answers included
	// (redirects, error pages, static files, the evidence files it sends),
	// and hides the app's copies, so every response carries one of each.
	// Cache-Control is each location's own decision and is left out (the
	// app's passes through, on the evidence it has nginx send too; static
	// files are cached, nginx's errors are no-store). A
	// Strict-Transport-Security header needs TLS.
	SecurityHeaders []Header
	// AcceptClientRequestID keeps a client's X-Request-ID when it has the
	// app's form (config.RequestIDPattern), so a caller can trace its own
	// request through both logs; a malformed one is replaced either way.
	AcceptClientRequestID bool
	// PublicCacheSeconds, when positive, lets nginx keep the app's public
	// answers under PublicPrefix (those the app marks Cache-Control: public)
	// and serve them without asking the app, for as long as the app's
	// max-age says but at most this long. Zero caches nothing.
	PublicCacheSeconds int
	// PublicPrefix is the app's anonymous API (config.PublicAPIPrefix).
	PublicPrefix string
	// ProbePaths are the app's liveness and readiness paths. With TLS, the
	// plain-HTTP server passes them to the app instead of redirecting them,
	// so a load balancer or uptime checker probing port 80 gets the app's
	// own answer (the app exempts them from its HTTPS rule).
	ProbePaths []string
	// ACMEChallengeRoot, when set, serves HTTP-01 challenges over plain
	// HTTP from <ACMEChallengeRoot>/.well-known/acme-challenge/ (certbot's
	// --webroot layout) instead of redirecting them. TLS only.
	ACMEChallengeRoot string
	// WorkerProcesses is the number of worker processes; zero means "auto"
	// (one per CPU the container sees).
	WorkerProcesses int
	// UpstreamReadTimeout is how long nginx waits for the app's answer
	// before it answers 504 itself, in whole seconds; zero means
	// DefaultUpstreamReadTimeout.
	UpstreamReadTimeout time.Duration
	// PidPath and TempDir are the writable paths nginx needs; they default
	// to /tmp so a single tmpfs at /tmp makes a read-only root filesystem
	// work. TempDir must exist: nginx creates only its nginx-* subfolders.
	PidPath, TempDir string
}

// withDefaults returns p with the documented defaults filled in.
func (p Params) withDefaults() Params {
	if p.PidPath == "" {
		p.PidPath = DefaultPidPath
	}
	if p.TempDir == "" {
		p.TempDir = DefaultTempDir
	}
	if p.LoginPath == "" {
		p.LoginPath = DefaultLoginPath
	}
	if p.PublicPort == 0 {
		p.PublicPort = 80
		if p.TLS {
			p.PublicPort = 443
		}
	}
	return p
}

var (
	// hostnameRE accepts lowercase DNS names (nginx compares names case-
	// insensitively; lowercase keeps the config and the app's ALLOWED_HOSTS
	// spelled alike). Wildcards are refused: the app allows exact hosts.
	hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	// urlPathRE is the character set allowed in a URL path nginx matches.
	urlPathRE = regexp.MustCompile(`^/[A-Za-z0-9._/-]*$`)
)

// Validate reports every problem with p at once (defaults applied first).
func (p Params) Validate() error {
	p = p.withDefaults()
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("nginx: %s: "+format, append([]any{field}, args...)...))
	}

	if len(p.ServerNames) == 0 {
		add("ServerNames", "at least one host name is required")
	}
	seen := map[string]bool{}
	for _, name := range p.ServerNames {
		if !validHost(name) {
			add("ServerNames", "%q is not a lowercase host name or IPv4 address", name)
		}
		if seen[name] {
			add("ServerNames", "%q is listed twice", name)
		}
		seen[name] = true
	}
	if p.ListenAddress != "" {
		if _, err := netip.ParseAddr(p.ListenAddress); err != nil {
			add("ListenAddress", "%q is not an IP address", p.ListenAddress)
		}
	}

	checkPort := func(field string, port int) {
		if port < 1 || port > 65535 {
			add(field, "%d is not a port (1-65535)", port)
		}
	}
	checkPort("HTTPPort", p.HTTPPort)
	checkPort("PublicPort", p.PublicPort)
	if p.TLS {
		checkPort("HTTPSPort", p.HTTPSPort)
		if p.HTTPSPort == p.HTTPPort {
			add("HTTPSPort", "must differ from HTTPPort")
		}
	}

	checkPath := func(field, path string) {
		if !confpath.Valid(path) {
			add(field, "%q must be a clean absolute path of letters, digits and ._/@+~-", path)
		}
	}
	if p.TLS {
		checkPath("CertPath", p.CertPath)
		checkPath("KeyPath", p.KeyPath)
	}
	if p.ACMEChallengeRoot != "" {
		checkPath("ACMEChallengeRoot", p.ACMEChallengeRoot)
		if !p.TLS {
			add("ACMEChallengeRoot", "is only used with TLS")
		}
	}
	checkPath("StaticRoot", p.StaticRoot)
	checkPath("MediaRoot", p.MediaRoot)
	if confpath.Valid(p.StaticRoot) && confpath.Valid(p.MediaRoot) && confpath.Nested(p.StaticRoot, p.MediaRoot) {
		// Otherwise uploads would be public under /static/: to anyone, and
		// without the attachment and sandbox headers that make them harmless.
		add("MediaRoot", "%q and StaticRoot %q must not contain one another", p.MediaRoot, p.StaticRoot)
	}
	checkPath("PidPath", p.PidPath)
	checkPath("TempDir", p.TempDir)

	switch {
	case p.UpstreamFile != "" && p.Upstream != "":
		add("UpstreamFile", "set either Upstream or UpstreamFile, not both")
	case p.UpstreamFile != "":
		checkPath("UpstreamFile", p.UpstreamFile)
	default:
		if err := checkUpstream(p.Upstream, p.Resolver); err != nil {
			add("Upstream", "%v", err)
		}
	}
	if p.Resolver != "" {
		if _, err := netip.ParseAddr(p.Resolver); err != nil {
			add("Resolver", "%q is not an IP address", p.Resolver)
		}
	}

	if p.ClientMaxBodyBytes <= 0 {
		add("ClientMaxBodyBytes", "must be positive (the app's MAX_UPLOAD_BYTES), got %d", p.ClientMaxBodyBytes)
	}
	if !validURLPath(p.LoginPath) {
		add("LoginPath", "%q must be an absolute URL path of letters, digits and ._/-", p.LoginPath)
	}
	if p.PublicCacheSeconds < 0 {
		add("PublicCacheSeconds", "must not be negative, got %d", p.PublicCacheSeconds)
	}
	if p.PublicCacheSeconds > 0 && (!validURLPath(p.PublicPrefix) || !strings.HasSuffix(p.PublicPrefix, "/")) {
		add("PublicPrefix", "%q must be an absolute URL path ending in /", p.PublicPrefix)
	}
	for _, path := range p.ProbePaths {
		if !validURLPath(path) {
			add("ProbePaths", "%q must be an absolute URL path of letters, digits and ._/-", path)
		}
	}
	if p.LoginRatePerMinute < 1 {
		add("LoginRatePerMinute", "must be at least 1, got %d", p.LoginRatePerMinute)
	}
	if p.LoginBurst < 0 {
		add("LoginBurst", "must not be negative, got %d", p.LoginBurst)
	}
	if p.WorkerProcesses < 0 {
		add("WorkerProcesses", "must not be negative, got %d", p.WorkerProcesses)
	}
	if t := p.UpstreamReadTimeout; t < 0 || t%time.Second != 0 {
		add("UpstreamReadTimeout", "must be whole seconds, got %v", t)
	}

	headerSeen := map[string]bool{}
	for i, h := range p.SecurityHeaders {
		field := fmt.Sprintf("SecurityHeaders[%d]", i)
		name := strings.ToLower(h.Name)
		switch {
		case !headerNameRE.MatchString(h.Name):
			add(field, "%q is not a header name", h.Name)
		case headerSeen[name]:
			add(field, "%s is given twice", h.Name)
		case name == "x-request-id":
			add(field, "X-Request-ID is nginx's own (the request's ID)")
		case name == "strict-transport-security" && !p.TLS:
			add(field, "Strict-Transport-Security needs TLS: browsers ignore HSTS received over plain HTTP")
		}
		headerSeen[name] = true
		// The value goes inside a quoted nginx string (see quoteValue),
		// where $ would start a variable and a backslash an escape.
		if h.Value == "" || strings.ContainsAny(h.Value, "$\\") || (strings.Contains(h.Value, `"`) && strings.Contains(h.Value, "'")) ||
			strings.IndexFunc(h.Value, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
			add(field, "%s: the value must be printable ASCII without $, a backslash, or both kinds of quote", h.Name)
		}
	}
	return errors.Join(errs...)
}

// validURLPath reports whether a path is safe to write into a location:
// the plain characters of urlPathRE, no "..", no "//".
func validURLPath(path string) bool {
	return urlPathRE.MatchString(path) && !strings.Contains(path, "..") && !strings.Contains(path, "//")
}

// headerNameRE is stricter than an HTTP token: a name nginx reads in a
// directive must not hold $, quotes or #.
var headerNameRE = regexp.MustCompile(`^[A-Za-z0-9-]+$`)

func validHost(name string) bool {
	if addr, err := netip.ParseAddr(name); err == nil {
		return addr.Is4()
	}
	return len(name) <= 253 && hostnameRE.MatchString(name)
}

func checkUpstream(upstream, resolver string) error {
	host, port, err := net.SplitHostPort(upstream)
	if err != nil {
		return fmt.Errorf("%q is not host:port", upstream)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has no valid port", upstream)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" {
			return fmt.Errorf("%q has an IPv6 zone", upstream)
		}
		return nil
	}
	if !hostnameRE.MatchString(host) {
		return fmt.Errorf("%q: host is not a lowercase host name or IP address", upstream)
	}
	if resolver == "" {
		return fmt.Errorf("%q is a host name: set Resolver so nginx follows the app container to its new address after a replacement", upstream)
	}
	return nil
}
