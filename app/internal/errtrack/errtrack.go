// Package errtrack reports panics and unexpected errors to Sentry, when a
// DSN is configured, after scrubbing every event with the same Redactor
// the logs use.
//
// Without a DSN the Reporter is a no-op, so callers never branch on
// whether error tracking is on.
package errtrack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/getsentry/sentry-go"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/logging"
)

// Options configures New.
type Options struct {
	// DSN is the Sentry project DSN; empty disables reporting.
	DSN string
	// Environment and Release label events ("production", a git SHA).
	// Set Release: when empty the SDK shells out to git to guess one.
	Environment string
	Release     string
	// SampleRate is the fraction of error events sent, in [0, 1]; 0 means
	// all of them (the SDK's convention).
	SampleRate float64
	// Redactor scrubs events; nil means the pattern rules only, without
	// the app's known secret values.
	Redactor *logging.Redactor
	// Transport replaces the HTTP transport used to reach Sentry (tests).
	Transport http.RoundTripper
}

// Reporter sends scrubbed events to Sentry. The zero value, and the value
// New returns for an empty DSN, is disabled: its methods do nothing.
// It is safe for concurrent use.
type Reporter struct {
	hub      *sentry.Hub
	redactor *logging.Redactor
}

// ErrInvalidDSN is returned by New for a DSN Sentry cannot use. The
// error never repeats the DSN, whose key is a credential.
var ErrInvalidDSN = errors.New("errtrack: invalid Sentry DSN")

// New returns a Reporter for o. An empty DSN gives a disabled Reporter and
// creates no Sentry client at all.
//
// The client never sends default PII (no cookies, no client IP), attaches
// stack traces, and scrubs every event in BeforeSend. It gets a hub of its
// own rather than sentry's global one, so two Reporters (tests) cannot see
// each other's events.
func New(o Options) (*Reporter, error) {
	if o.DSN == "" {
		return &Reporter{}, nil
	}
	if o.SampleRate < 0 || o.SampleRate > 1 {
		return nil, fmt.Errorf("errtrack: sample rate %v is outside [0, 1]", o.SampleRate)
	}
	// Check the DSN ourselves: the SDK's parse error quotes the whole URL.
	if err := checkDSN(o.DSN); err != nil {
		return nil, err
	}
	r := &Reporter{redactor: o.Redactor}
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:                   o.DSN,
		Environment:           o.Environment,
		Release:               o.Release,
		SampleRate:            o.SampleRate,
		SendDefaultPII:        false,
		AttachStacktrace:      true,
		BeforeSend:            r.scrubEvent,
		BeforeSendTransaction: r.scrubEvent,
		HTTPTransport:         o.Transport,
		// The default telemetry buffer hands events to its sender on a
		// goroutine of its own, and Flush can return true while one is
		// still between the two (seen in tests): on shutdown that event
		// is lost. The classic transport queues during the Capture call,
		// so Flush really waits for it.
		DisableTelemetryBuffer: true,
	})
	if err != nil {
		return nil, ErrInvalidDSN // never wrap: err may contain the DSN
	}
	r.hub = sentry.NewHub(client, sentry.NewScope())
	return r, nil
}

// checkDSN mirrors the SDK's requirements (scheme, public key, host,
// project) closely enough to fail fast with an error free of the DSN.
func checkDSN(dsn string) error {
	if config.CheckSentryDSN(dsn) != nil {
		return ErrInvalidDSN
	}
	return nil
}

// Enabled reports whether events are sent anywhere.
func (r *Reporter) Enabled() bool { return r != nil && r.hub != nil }

// CapturePanic reports a recovered panic; its signature matches
// recovery.Middleware's onPanic. r may be nil. The stack argument is not
// sent: the SDK records a structured stack trace of its own at the call,
// which still holds the panicking frames because recovery calls this from
// its deferred function.
func (r *Reporter) CapturePanic(req *http.Request, recovered any, stack []byte) {
	if !r.Enabled() {
		return
	}
	hub := r.hubFor(req)
	hub.RecoverWithContext(contextOf(req), recovered)
}

// CaptureError reports an unexpected error met while serving req (nil if
// there was no request).
func (r *Reporter) CaptureError(req *http.Request, err error) {
	if !r.Enabled() || err == nil {
		return
	}
	r.hubFor(req).CaptureException(err)
}

// Flush waits up to timeout for queued events to be sent and reports
// whether they all were. Call it during shutdown. A disabled Reporter has
// nothing queued and returns true at once.
func (r *Reporter) Flush(timeout time.Duration) bool {
	if !r.Enabled() {
		return true
	}
	return r.hub.Flush(timeout)
}

// hubFor clones the hub so concurrent requests never share a scope, and
// attaches what identifies the request: method, URL, query string and
// headers (all scrubbed by BeforeSend later), the request and user IDs.
func (r *Reporter) hubFor(req *http.Request) *sentry.Hub {
	hub := r.hub.Clone()
	if req == nil {
		return hub
	}
	sreq := &sentry.Request{
		URL:    requestURL(req),
		Method: req.Method,
		// Kept for debugging (filters, paging); BeforeSend redacts the
		// values of sensitive parameters such as token=.
		QueryString: req.URL.RawQuery,
		Headers:     make(map[string]string, len(req.Header)),
	}
	for name, values := range req.Header {
		sreq.Headers[name] = strings.Join(values, ",")
	}
	ctx := req.Context()
	hub.ConfigureScope(func(scope *sentry.Scope) {
		// Not scope.SetRequest: it would start buffering req.Body.
		scope.AddEventProcessor(func(event *sentry.Event, _ *sentry.EventHint) *sentry.Event {
			if event.Request == nil {
				event.Request = sreq
			}
			return event
		})
		if id := logging.RequestIDFrom(ctx); id != "" {
			scope.SetTag("request_id", id)
		}
		if id := logging.UserIDFrom(ctx); id != "" {
			scope.SetUser(sentry.User{ID: id})
		}
	})
	return hub
}

func requestURL(req *http.Request) string {
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + req.Host + req.URL.Path
}

func contextOf(req *http.Request) context.Context {
	if req == nil {
		return context.Background()
	}
	return req.Context()
}
