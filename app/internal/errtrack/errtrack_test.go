package errtrack_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/errtrack"
	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/recovery"
)

// Seeded secrets: none of them may reach Sentry.
const (
	dbPassword  = "pg-Secret-Pa55word"
	queryToken  = "reset-token-QQQ111"
	bearer      = "bearer-token-AAA222"
	cookieValue = "session-cookie-CCC333"
	customAuth  = "custom-auth-DDD444"
	extraSecret = "extra-secret-EEE555"
)

var seeded = []string{dbPassword, queryToken, bearer, cookieValue, customAuth, extraSecret}

// PII that only the injected extras carry. Kept away from the capture call
// sites: the SDK sends a few source lines around each frame.
const (
	piiEmail = "someone@example.org"
	piiIP    = "198.51.100.7"
)

var injectOnce sync.Once

// fakeSentry stands in for the DSN's host and keeps every envelope posted
// to the project's envelope endpoint.
type fakeSentry struct {
	*httptest.Server
	mu        sync.Mutex
	envelopes [][]byte
	requests  int
}

func newFakeSentry(t *testing.T) *fakeSentry {
	t.Helper()
	f := &fakeSentry{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.requests++
		if r.Method == http.MethodPost && r.URL.Path == "/api/42/envelope/" {
			f.envelopes = append(f.envelopes, body)
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeSentry) dsn() string {
	return "http://publickey@" + strings.TrimPrefix(f.URL, "http://") + "/42"
}

func (f *fakeSentry) snapshot() ([][]byte, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.envelopes...), f.requests
}

// events returns the event payloads of every captured envelope: the line
// after each {"type":"event",…} item header.
func (f *fakeSentry) events(t *testing.T) []map[string]any {
	t.Helper()
	envelopes, _ := f.snapshot()
	var out []map[string]any
	for _, env := range envelopes {
		lines := bytes.Split(env, []byte("\n"))
		for i := 1; i+1 < len(lines); i++ {
			var hdr struct{ Type string }
			if json.Unmarshal(lines[i], &hdr) != nil || hdr.Type != "event" {
				continue
			}
			var ev map[string]any
			require.NoError(t, json.Unmarshal(lines[i+1], &ev))
			out = append(out, ev)
		}
	}
	return out
}

func (f *fakeSentry) raw() string {
	envelopes, _ := f.snapshot()
	return string(bytes.Join(envelopes, []byte("\n")))
}

func newReporter(t *testing.T, f *fakeSentry) *errtrack.Reporter {
	t.Helper()
	rep, err := errtrack.New(errtrack.Options{
		DSN:         f.dsn(),
		Environment: "test",
		Release:     "nbms@abc123",
		Redactor:    logging.NewRedactor(dbPassword),
	})
	require.NoError(t, err)
	require.True(t, rep.Enabled())
	return rep
}

// seededRequest carries a secret in every place a request can.
func seededRequest(method, target string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Header.Set("Authorization", "Bearer "+bearer)
	r.Header.Set("Cookie", "sessionid="+cookieValue)
	r.Header.Set("X-Nbms-Session", customAuth)
	r.Header.Set("X-Trace-Note", "harmless-header-value")
	return r
}

func TestCapturePanicScrubsEvent(t *testing.T) {
	f := newFakeSentry(t)
	rep := newReporter(t, f)

	logger := slog.New(logging.NewHandler(io.Discard, slog.LevelInfo, nil))
	var requestID string
	h := logging.RequestID(logging.AccessLog(logger, nil)(recovery.Middleware(logger, rep.CapturePanic)(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requestID = logging.RequestIDFrom(r.Context())
			logging.SetUserID(r.Context(), "u-42")
			panic("cannot start: DATABASE_URL=postgres://nbms:" + dbPassword + "@db:5432/nbms unreachable")
		}))))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, seededRequest(http.MethodGet, "http://nbms.example/api/sites?token="+queryToken+"&page=2"))
	require.Equal(t, http.StatusInternalServerError, rec.Code)

	require.True(t, rep.Flush(5*time.Second))
	raw := f.raw()
	for _, s := range seeded {
		assert.NotContains(t, raw, s)
	}

	events := f.events(t)
	require.Len(t, events, 1, raw)
	ev := events[0]
	assert.Equal(t, "fatal", ev["level"])
	assert.Equal(t, "test", ev["environment"])
	assert.Equal(t, "nbms@abc123", ev["release"])
	assert.Equal(t, "cannot start: DATABASE_URL=[REDACTED] unreachable", ev["message"])
	assert.Equal(t, map[string]any{"request_id": requestID}, ev["tags"])
	assert.Equal(t, map[string]any{"id": "u-42"}, ev["user"])

	req, ok := ev["request"].(map[string]any)
	require.True(t, ok)
	assert.Equal(t, "GET", req["method"])
	assert.Equal(t, "http://nbms.example/api/sites", req["url"])
	assert.Equal(t, "token=[REDACTED]&page=2", req["query_string"])
	assert.Nil(t, req["cookies"])
	headers, ok := req["headers"].(map[string]any)
	require.True(t, ok)
	assert.Equal(t, "[REDACTED]", headers["Authorization"])
	assert.Equal(t, "[REDACTED]", headers["Cookie"])
	assert.Equal(t, "[REDACTED]", headers["X-Nbms-Session"])
	assert.Equal(t, "harmless-header-value", headers["X-Trace-Note"])

	threads, _ := ev["threads"].([]any)
	require.NotEmpty(t, threads, "AttachStacktrace gives a message event its stack")
	assert.Contains(t, fmt.Sprint(threads), "TestCapturePanicScrubsEvent.func", "the stack includes the panicking handler")
}

func TestCaptureErrorScrubsEvent(t *testing.T) {
	f := newFakeSentry(t)
	rep := newReporter(t, f)

	err := fmt.Errorf("query sites: %w", errors.New("dial postgres://nbms:"+dbPassword+"@db/nbms: refused"))
	rep.CaptureError(seededRequest(http.MethodPost, "http://nbms.example/api/login?next=/home"), err)
	require.True(t, rep.Flush(5*time.Second))

	raw := f.raw()
	for _, s := range seeded {
		assert.NotContains(t, raw, s)
	}
	events := f.events(t)
	require.Len(t, events, 1, raw)
	exceptions, _ := events[0]["exception"].([]any)
	require.NotEmpty(t, exceptions)
	for _, e := range exceptions {
		assert.Contains(t, e.(map[string]any)["value"], "postgres://nbms:[REDACTED]@db/nbms")
	}
	req := events[0]["request"].(map[string]any)
	assert.Equal(t, "POST", req["method"])
	assert.Equal(t, "next=/home", req["query_string"])
}

// Other SDK integrations and future code may add tags, contexts and
// breadcrumbs; BeforeSend must scrub them too. A global event processor
// (it runs before BeforeSend) plays that part for events whose message
// asks for it.
func TestBeforeSendScrubsWhateverElseWasAdded(t *testing.T) {
	injectOnce.Do(func() { sentry.AddGlobalEventProcessor(injectExtras) })

	f := newFakeSentry(t)
	rep := newReporter(t, f)
	rep.CapturePanic(nil, "inject-extras", nil)
	require.True(t, rep.Flush(5*time.Second))

	raw := f.raw()
	for _, s := range append(seeded, piiEmail, piiIP) {
		assert.NotContains(t, raw, s)
	}
	events := f.events(t)
	require.Len(t, events, 1, raw)
	ev := events[0]
	tags := ev["tags"].(map[string]any)
	assert.Equal(t, "[REDACTED]", tags["api_token"])
	assert.Equal(t, "za", tags["region"])
	assert.Equal(t, "password=[REDACTED]", tags["note"])
	app := ev["contexts"].(map[string]any)["app"].(map[string]any)
	assert.Equal(t, "[REDACTED]", app["database_url"])
	assert.Equal(t, float64(3), app["site_count"])
	nested := app["nested"].(map[string]any)
	assert.Equal(t, "[REDACTED]", nested["secret_key"])
	assert.Equal(t, "strict", nested["mode"])
	assert.Equal(t, []any{"token=[REDACTED]"}, nested["list"])
	assert.Equal(t, map[string]any{"id": "u-1"}, ev["user"])
	crumbs := ev["breadcrumbs"].([]any)
	require.Len(t, crumbs, 1)
	assert.Equal(t, "called upstream with Authorization: Bearer [REDACTED]", crumbs[0].(map[string]any)["message"])
	req := ev["request"].(map[string]any)
	assert.Equal(t, "https://u:[REDACTED]@nbms.example/x", req["url"])
	assert.Equal(t, "token=[REDACTED]&page=2", req["query_string"])
	assert.Equal(t, "[REDACTED]", req["cookies"])
	assert.Nil(t, req["data"])
	assert.Nil(t, req["env"])
}

func TestDisabledReporterSendsNothing(t *testing.T) {
	f := newFakeSentry(t)
	// The SDK would fall back to SENTRY_DSN; an empty Options.DSN must not.
	t.Setenv("SENTRY_DSN", f.dsn())

	rep, err := errtrack.New(errtrack.Options{})
	require.NoError(t, err)
	assert.False(t, rep.Enabled())

	r := seededRequest(http.MethodGet, "/x")
	rep.CapturePanic(r, "boom", []byte("stack"))
	rep.CaptureError(r, errors.New("boom"))
	start := time.Now()
	assert.True(t, rep.Flush(time.Second))
	assert.Less(t, time.Since(start), 100*time.Millisecond, "nothing to wait for")

	var zero *errtrack.Reporter
	assert.False(t, zero.Enabled())
	assert.True(t, zero.Flush(time.Second))

	_, requests := f.snapshot()
	assert.Zero(t, requests)
}

func TestFlushReturnsWhenSentryHangs(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) }) // runs first: unblocks the handler

	rep, err := errtrack.New(errtrack.Options{
		DSN:     "http://publickey@" + strings.TrimPrefix(hung.URL, "http://") + "/42",
		Release: "nbms@abc123",
	})
	require.NoError(t, err)
	rep.CaptureError(nil, errors.New("boom"))

	start := time.Now()
	assert.False(t, rep.Flush(200*time.Millisecond), "the event could not be delivered")
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		o    errtrack.Options
	}{
		{"not a URL", errtrack.Options{DSN: "http://pubkey-SECRETX:%zz@host/1"}},
		{"wrong scheme", errtrack.Options{DSN: "ftp://pubkey-SECRETX@host/1"}},
		{"no key", errtrack.Options{DSN: "http://host/1"}},
		{"no host", errtrack.Options{DSN: "http://pubkey-SECRETX@/1"}},
		{"no project", errtrack.Options{DSN: "http://pubkey-SECRETX@host/"}},
		{"sample rate above 1", errtrack.Options{DSN: "http://pubkey@host/1", SampleRate: 1.5}},
		{"negative sample rate", errtrack.Options{DSN: "http://pubkey@host/1", SampleRate: -0.1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := errtrack.New(tt.o)
			require.Error(t, err)
			assert.Nil(t, rep)
			assert.NotContains(t, err.Error(), "SECRETX", "the error must not echo the DSN key")
		})
	}
}

// injectExtras plays "another integration" for events whose message asks
// for it: it adds secrets and PII everywhere an event can hold them.
func injectExtras(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event {
	if !strings.Contains(ev.Message, "inject-extras") {
		return ev
	}
	if ev.Tags == nil {
		ev.Tags = map[string]string{}
	}
	ev.Tags["api_token"] = extraSecret
	ev.Tags["region"] = "za"
	ev.Tags["note"] = "password=" + extraSecret
	ev.Contexts["app"] = map[string]any{
		"database_url": "postgres://u:" + dbPassword + "@h/db",
		"nested":       map[string]any{"secret_key": extraSecret, "mode": "strict", "list": []any{"token=" + extraSecret}},
		"site_count":   3,
	}
	ev.User = sentry.User{ID: "u-1", Email: piiEmail, IPAddress: piiIP}
	ev.Breadcrumbs = append(ev.Breadcrumbs, &sentry.Breadcrumb{
		Message: "called upstream with Authorization: Bearer " + extraSecret,
		Data:    map[string]any{"cookie": extraSecret, "status": 200},
	})
	ev.Request = &sentry.Request{
		URL: "https://u:" + dbPassword + "@nbms.example/x?token=" + queryToken, QueryString: "token=" + queryToken + "&page=2",
		Cookies: "sessionid=" + cookieValue, Data: `{"password":"` + extraSecret + `"}`,
		Headers: map[string]string{"proxy-authorization": extraSecret, "X-Forwarded-For": piiIP},
		Env:     map[string]string{"REMOTE_ADDR": piiIP},
	}
	return ev
}
