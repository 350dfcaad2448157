// Package hooks holds the post-deploy readiness prober: after `pulumi up`
// creates or updates the app and Nginx containers, it polls the public entry
// point (/healthz, then /readyz) until each answers 200, and fails the deploy
// with the last answer it saw when the stack never gets ready.
//
// One prober, two callers: the Pulumi resource hook bound AfterCreate and
// AfterUpdate (which runs only when something changed and gets no deadline of
// its own, hence Options.Timeout) and the deploy driver after every `up`.
package hooks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/nbms-deploy/nbms/app/config"
)

// Defaults applied by Probe to zero-valued Options fields.
const (
	defaultTimeout           = 2 * time.Minute
	defaultRequestTimeout    = 5 * time.Second
	defaultInitialBackoff    = 500 * time.Millisecond
	defaultMaxBackoff        = 10 * time.Second
	defaultSuccessesRequired = 1
)

// maxBodyBytes caps the body kept from each answer. Bodies come from our own
// health endpoints, but a misrouted request could hit anything, and the body
// ends up in CI logs and Pulumi's error output.
const maxBodyBytes = 512

// DefaultPaths are probed in order when Options.Paths is empty: liveness
// first (is the process up and reachable through Nginx?), then readiness
// (are PostgreSQL and Redis too?). It returns a new slice each time, so a
// caller may change its copy.
func DefaultPaths() []string { return config.ProbePaths() }

// Options configures Probe. Zero values mean the documented default.
type Options struct {
	// BaseURL is the public entry point, e.g. https://nbms.example.org. It must
	// be absolute http(s), without credentials, query or fragment; a path
	// prefix (https://host/nbms) is kept in front of every probed path.
	BaseURL string
	// Paths are probed in order; each must answer 200 before the next one is
	// tried. Default ["/healthz", "/readyz"].
	Paths []string
	// Host overrides the Host header, e.g. when BaseURL is an IP address. With
	// the default client it is also the TLS server name that the certificate
	// is verified against.
	Host string
	// Timeout bounds the whole probe (all paths). Default 2m.
	Timeout time.Duration
	// RequestTimeout bounds each attempt. Default 5s; at most Timeout.
	RequestTimeout time.Duration
	// InitialBackoff and MaxBackoff shape the wait after a failed attempt:
	// exponential (InitialBackoff doubled per consecutive failure, capped at
	// MaxBackoff) with full jitter. Defaults 500ms and 10s.
	InitialBackoff, MaxBackoff time.Duration
	// SuccessesRequired is how many consecutive 200s a path needs before it
	// counts as ready, so that a flapping service fails. Confirmation attempts
	// are InitialBackoff apart. Default 1.
	SuccessesRequired int
	// HTTPClient sends the requests. Default: a client that verifies TLS and
	// opens a fresh connection per attempt. Whatever the client, redirects
	// are never followed: a redirect is not readiness.
	HTTPClient *http.Client
	// Logf receives one progress line per attempt (never a body). Optional.
	Logf func(format string, args ...any)
}

// Result is what Probe observed.
type Result struct {
	// Paths holds one entry per path that was probed, in probe order; a path
	// after one that never became ready is absent.
	Paths []PathResult
	// Duration is the wall time of the whole probe.
	Duration time.Duration
}

// PathResult is what Probe observed for one path.
type PathResult struct {
	Path     string
	Ready    bool
	Attempts int
	// Flaps counts how often a 200 was followed by a failed attempt.
	Flaps int
	// LastStatus is the status of the last answer; 0 when none came.
	LastStatus int
	// LastBody is the last answer's body, at most 512 bytes of valid UTF-8
	// on one line; LastBodyTruncated says whether the body was longer.
	LastBody          string
	LastBodyTruncated bool
	// LastLocation is the Location header of the last answer, when it was a
	// redirect: the usual cause is probing http:// behind an HTTPS redirect.
	LastLocation string
	// LastError describes the last attempt that got no answer (connection
	// refused, TLS verification, request timeout); empty when it got one.
	LastError string
	Duration  time.Duration
}

// Validate reports every problem with o at once, applying the same defaults
// as Probe to zero-valued fields.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if u, err := url.Parse(o.BaseURL); err != nil || o.BaseURL == "" {
		bad("BaseURL %q is not a URL", o.BaseURL)
	} else {
		if u.Scheme != "http" && u.Scheme != "https" {
			bad("BaseURL %q must use http or https", o.BaseURL)
		}
		if u.Host == "" {
			bad("BaseURL %q has no host", o.BaseURL)
		}
		// Credentials in the URL would end up in error messages and logs.
		if u.User != nil {
			bad("BaseURL must not contain credentials")
		}
		if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			bad("BaseURL %q must not have a query or fragment", o.BaseURL)
		}
	}
	for _, p := range o.Paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# \t\r\n") {
			bad("path %q must start with / and have no query, fragment or spaces", p)
		}
	}
	if o.Host != "" {
		if strings.ContainsAny(o.Host, "/?#@ \t\r\n") {
			bad("Host %q must be a host name with an optional port", o.Host)
		} else if (&url.URL{Host: o.Host}).Hostname() == "" {
			bad("Host %q has no host name", o.Host)
		}
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{"Timeout", o.Timeout}, {"RequestTimeout", o.RequestTimeout},
		{"InitialBackoff", o.InitialBackoff}, {"MaxBackoff", o.MaxBackoff},
	} {
		if d.value < 0 {
			bad("%s must not be negative (got %s)", d.name, d.value)
		}
	}
	if o.RequestTimeout > o.Timeout {
		bad("RequestTimeout %s is longer than Timeout %s", o.RequestTimeout, o.Timeout)
	}
	if o.InitialBackoff > o.MaxBackoff {
		bad("InitialBackoff %s is longer than MaxBackoff %s", o.InitialBackoff, o.MaxBackoff)
	}
	if o.SuccessesRequired < 0 {
		bad("SuccessesRequired must not be negative (got %d)", o.SuccessesRequired)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("post-deploy probe options: %w", errors.Join(errs...))
}

func (o Options) withDefaults() Options {
	if len(o.Paths) == 0 {
		o.Paths = DefaultPaths()
	}
	if o.Timeout == 0 {
		o.Timeout = defaultTimeout
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = defaultRequestTimeout
		if o.Timeout > 0 {
			o.RequestTimeout = min(defaultRequestTimeout, o.Timeout)
		}
	}
	if o.InitialBackoff == 0 {
		o.InitialBackoff = defaultInitialBackoff
		if o.MaxBackoff > 0 {
			o.InitialBackoff = min(defaultInitialBackoff, o.MaxBackoff)
		}
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = max(defaultMaxBackoff, o.InitialBackoff)
	}
	if o.SuccessesRequired == 0 {
		o.SuccessesRequired = defaultSuccessesRequired
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// errProbeTimeout is the cause of our own deadline, told apart from the
// caller's cancellation or deadline.
var errProbeTimeout = errors.New("post-deploy probe timeout")

// Probe polls each path of o.BaseURL in order until it answers 200
// o.SuccessesRequired times in a row, within o.Timeout overall. It returns
// the observations, and an error naming the path that never became ready with
// its last answer; when ctx ends first, the error wraps ctx's error. The
// Result is non-nil whenever the options were valid, even on failure.
func Probe(ctx context.Context, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	base, _ := url.Parse(o.BaseURL) // checked by Validate
	p := prober{opts: o, client: clientFor(o)}

	start := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, o.Timeout, errProbeTimeout)
	defer cancel()

	res := &Result{}
	for _, path := range o.Paths {
		target := *base
		target.Path = strings.TrimSuffix(base.Path, "/") + path
		target.RawPath = ""
		pr, err := p.probePath(ctx, path, target.String())
		res.Paths = append(res.Paths, pr)
		if err != nil {
			res.Duration = time.Since(start)
			return res, err
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// clientFor returns a copy of the caller's client, or the default one, that
// never follows redirects: a health route that redirects (e.g. HTTP→HTTPS)
// says nothing about the app behind it.
func clientFor(o Options) *http.Client {
	var c http.Client
	if o.HTTPClient != nil {
		c = *o.HTTPClient
	} else {
		c = *DefaultClient((&url.URL{Host: o.Host}).Hostname(), nil)
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// DefaultClient is the client Probe uses when Options.HTTPClient is nil;
// a caller that must trust more roots builds its client with it. It
// verifies TLS against roots (nil: the system pool) and the serverName
// when set, so that probing an IP with a Host override still checks the
// certificate of the public name. Keep-alives are off so that each attempt
// connects and handshakes afresh, as a new visitor would, and never reuses
// a connection to a container that has just been replaced.
func DefaultClient(serverName string, roots *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableKeepAlives = true
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, RootCAs: roots}
	return &http.Client{Transport: t}
}

type prober struct {
	opts   Options
	client *http.Client
}

// answer is the outcome of one attempt.
type answer struct {
	status    int
	body      string
	truncated bool
	location  string
	err       error // no answer at all
}

func (p prober) probePath(ctx context.Context, path, target string) (pr PathResult, err error) {
	o := p.opts
	pr.Path = path
	start := time.Now()
	defer func() { pr.Duration = time.Since(start) }() // every return, error or not

	failures, streak := 0, 0
	lastFailure := "" // explains a flapping path whose very last answer was a 200
	for {
		a := p.attempt(ctx, target)
		pr.Attempts++
		if a.err != nil && ctx.Err() != nil {
			// The probe's deadline or the caller interrupted this attempt: it
			// says nothing about the service, so keep the previous answer.
			if pr.LastStatus == 0 && pr.LastError == "" {
				pr.LastError = "no answer before the probe ended"
			}
			return pr, p.stopped(ctx, &pr, streak, lastFailure)
		}
		pr.LastStatus, pr.LastBody, pr.LastBodyTruncated, pr.LastLocation = a.status, a.body, a.truncated, a.location
		pr.LastError = ""
		if a.err != nil {
			pr.LastError = a.err.Error()
		}

		var wait time.Duration
		if a.err == nil && a.status == http.StatusOK {
			streak++
			failures = 0
			if streak >= o.SuccessesRequired {
				pr.Ready = true
				o.Logf("post-deploy probe: %s ready (attempt %d)", path, pr.Attempts)
				return pr, nil
			}
			// A fixed gap, not a jittered one: the point is to see the
			// service stay up over time, not three answers in a microsecond.
			wait = o.InitialBackoff
		} else {
			if streak > 0 {
				pr.Flaps++
			}
			lastFailure = answerText(pr)
			if pr.LastStatus == 0 {
				lastFailure = pr.LastError
			}
			streak = 0
			wait = jitter(backoffCeiling(o.InitialBackoff, o.MaxBackoff, failures))
			failures++
		}
		o.Logf("post-deploy probe: %s attempt %d: %s; next attempt in %s",
			path, pr.Attempts, a.short(), wait.Round(time.Millisecond))

		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return pr, p.stopped(ctx, &pr, streak, lastFailure)
		case <-t.C:
		}
	}
}

func (p prober) attempt(ctx context.Context, target string) answer {
	ctx, cancel := context.WithTimeout(ctx, p.opts.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return answer{err: err}
	}
	if p.opts.Host != "" {
		req.Host = p.opts.Host
	}
	req.Header.Set("User-Agent", "nbms-post-deploy-probe")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Cache-Control", "no-cache")

	resp, err := p.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && context.Cause(ctx) == context.DeadlineExceeded {
			err = fmt.Errorf("no answer within %s (RequestTimeout)", p.opts.RequestTimeout)
		}
		return answer{err: err}
	}
	defer resp.Body.Close()
	// The status is the verdict; a body cut short by a read error is still
	// worth showing, so the read error itself is dropped.
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	a := answer{status: resp.StatusCode, truncated: len(raw) > maxBodyBytes}
	a.body = oneLine(raw[:min(len(raw), maxBodyBytes)])
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		loc := []byte(resp.Header.Get("Location"))
		a.location = oneLine(loc[:min(len(loc), maxBodyBytes)])
	}
	return a
}

// short is the progress-line form of an answer: never the body.
func (a answer) short() string {
	switch {
	case a.err != nil:
		return a.err.Error()
	case a.location != "":
		return fmt.Sprintf("%d redirect to %s", a.status, a.location)
	default:
		return fmt.Sprintf("%d", a.status)
	}
}

// stopped builds the error for a path that was not ready when ctx ended.
// lastFailure, when set, describes the last failed attempt.
func (p prober) stopped(ctx context.Context, pr *PathResult, streak int, lastFailure string) error {
	o := p.opts
	attempts := plural(pr.Attempts, "attempt")
	last := lastAnswer(*pr)
	if pr.LastStatus == http.StatusOK && lastFailure != "" {
		last += "; last failure: " + lastFailure
	}
	if !errors.Is(context.Cause(ctx), errProbeTimeout) {
		return fmt.Errorf("post-deploy check interrupted while %s was not ready (%s; %s): %w",
			pr.Path, attempts, last, ctx.Err())
	}
	var what string
	switch {
	case pr.Flaps > 0:
		what = fmt.Sprintf("flapped (%s from 200 back to failing) and never answered 200 %d times in a row",
			plural(pr.Flaps, "time"), o.SuccessesRequired)
	case streak > 0:
		what = fmt.Sprintf("answered 200 only %d of the %d times in a row required", streak, o.SuccessesRequired)
	default:
		what = "not ready"
	}
	return fmt.Errorf("post-deploy check failed: %s %s after %s (%s): %s",
		pr.Path, what, o.Timeout, attempts, last)
}

// lastAnswer describes pr's last attempt: "last answer 503 {...}" or
// "last error: dial tcp ...: connection refused".
func lastAnswer(pr PathResult) string {
	if pr.LastStatus == 0 {
		return "last error: " + pr.LastError
	}
	return "last answer " + answerText(pr)
}

func answerText(pr PathResult) string {
	s := fmt.Sprintf("%d", pr.LastStatus)
	if pr.LastLocation != "" {
		s += " redirect to " + pr.LastLocation + " (a redirect is not readiness)"
	}
	switch {
	case pr.LastBody == "":
		s += " (empty body)"
	case pr.LastBodyTruncated:
		s += " " + pr.LastBody + " …(truncated)"
	default:
		s += " " + pr.LastBody
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// oneLine makes b safe to put in a one-line message: valid UTF-8 (a cut in
// the middle of a rune is dropped), control characters as spaces, trimmed.
func oneLine(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), ""))
	return strings.TrimSpace(s)
}

// backoffCeiling is InitialBackoff doubled per consecutive failure, capped.
func backoffCeiling(initial, maxWait time.Duration, failures int) time.Duration {
	d := initial
	for range failures {
		if d >= maxWait/2 {
			return maxWait
		}
		d *= 2
	}
	return min(d, maxWait)
}

// jitter picks the actual wait below a backoff ceiling. "Full jitter"
// (uniform in [0, ceiling)) spreads retries best when many probes start at
// once. A variable so that tests can make the schedule deterministic.
var jitter = func(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}
