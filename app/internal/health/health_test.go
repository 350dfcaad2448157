package health_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/cache"
	"github.com/nbms-deploy/nbms/app/internal/database"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// secret is put in the database URL (trust auth ignores it) so the tests can
// check that it never reaches a response body or the log.
const secret = "Sup3rS3cretPW"

type checkBody struct {
	Status    string   `json:"status"`
	LatencyMS *float64 `json:"latency_ms"`
	Error     string   `json:"error"`
}

type healthBody struct {
	Status string               `json:"status"`
	Reason string               `json:"reason"`
	Checks map[string]checkBody `json:"checks"`
}

type response struct {
	code   int
	header http.Header
	raw    string
	body   healthBody
}

// client has a timeout so a hanging endpoint fails the test instead of
// stalling it; no test asserts durations.
var client = &http.Client{Timeout: 10 * time.Second}

func do(t *testing.T, method, url string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := response{code: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), health.ContentType) {
		require.NoError(t, json.Unmarshal(raw, &r.body), string(raw))
	}
	return r
}

func serve(t *testing.T, h *health.Health) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("/healthz", h.Liveness())
	mux.Handle("/readyz", h.Readiness())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// checkFunc adapts a function to health.Checker for the tests of the
// handler's own behaviour (misbehaving checkers), not of a dependency.
type checkFunc struct {
	name string
	fn   func(ctx context.Context) error
}

func (c checkFunc) Name() string                    { return c.name }
func (c checkFunc) Check(ctx context.Context) error { return c.fn(ctx) }

func assertHealthHeaders(t *testing.T, r response) {
	t.Helper()
	assert.Equal(t, health.ContentType, r.header.Get("Content-Type"))
	assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
}

func TestMethods(t *testing.T) {
	srv := serve(t, health.New(health.Options{}))
	tests := []struct {
		method, path string
		wantCode     int
		wantBody     bool
	}{
		{http.MethodGet, "/healthz", http.StatusOK, true},
		{http.MethodHead, "/healthz", http.StatusOK, false},
		{http.MethodGet, "/readyz", http.StatusOK, true},
		{http.MethodHead, "/readyz", http.StatusOK, false},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, true},
		{http.MethodDelete, "/readyz", http.StatusMethodNotAllowed, true},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := do(t, tt.method, srv.URL+tt.path)
			assert.Equal(t, tt.wantCode, r.code)
			assert.Equal(t, tt.wantBody, r.raw != "")
			if tt.wantCode == http.StatusMethodNotAllowed {
				assert.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
				assert.Equal(t, "GET, HEAD", r.header.Get("Allow"))
				return
			}
			assertHealthHeaders(t, r)
			if tt.wantBody {
				assert.Equal(t, "pass", r.body.Status)
			}
		})
	}
}

// pollReady asks /readyz until it answers want or 10s pass.
func pollReady(t *testing.T, url string, want int) response {
	t.Helper()
	var r response
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r = do(t, http.MethodGet, url+"/readyz"); r.code == want {
			break
		}
	}
	return r
}

func TestReadinessFollowsRealDependencies(t *testing.T) {
	pg := testsupport.NewForwarder(t, testsupport.PostgresAddr())
	rd := testsupport.NewForwarder(t, testsupport.RedisAddr())

	pool, err := database.Open(context.Background(), database.Options{
		URL:            "postgres://postgres:" + secret + "@" + pg.Addr() + "/test?sslmode=disable",
		MaxConns:       4,
		ConnectTimeout: time.Second,
	})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	rdb, err := cache.Open(context.Background(), "redis://"+rd.Addr()+"/0", cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })

	var logs testsupport.SyncBuffer
	h := health.New(health.Options{
		Checks:  []health.Checker{database.Check(pool), cache.Check(rdb)},
		Timeout: time.Second,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	srv := serve(t, h)

	steps := []struct {
		name     string
		act      func()
		wantCode int
		failing  string // the check that must fail, "" for none
	}{
		{"all reachable", func() {}, http.StatusOK, ""},
		{"postgres cut", pg.Stop, http.StatusServiceUnavailable, "postgres"},
		{"postgres back", pg.Restart, http.StatusOK, ""},
		{"redis cut", rd.Stop, http.StatusServiceUnavailable, "redis"},
		{"redis back", rd.Restart, http.StatusOK, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.act()
			r := pollReady(t, srv.URL, st.wantCode)
			require.Equal(t, st.wantCode, r.code, r.raw)
			assertHealthHeaders(t, r)
			assert.NotContains(t, r.raw, secret)
			require.Len(t, r.body.Checks, 2, r.raw)
			for name, c := range r.body.Checks {
				assert.NotNil(t, c.LatencyMS, name)
				if name == st.failing {
					assert.Equal(t, "fail", c.Status, name)
					assert.Contains(t, []string{"timeout", "unavailable"}, c.Error)
				} else {
					assert.Equal(t, "pass", c.Status, name)
					assert.Empty(t, c.Error)
				}
			}
			if st.failing == "" {
				assert.Equal(t, "pass", r.body.Status)
			} else {
				assert.Equal(t, "fail", r.body.Status)
				assert.Contains(t, logs.String(), "check="+st.failing)
			}

			// Liveness never depends on them.
			live := do(t, http.MethodGet, srv.URL+"/healthz")
			assert.Equal(t, http.StatusOK, live.code)
			assert.Equal(t, "pass", live.body.Status)
		})
	}
	assert.NotContains(t, logs.String(), secret)
}

func TestReadinessExhaustedPoolAnswersPromptly(t *testing.T) {
	pool, err := database.Open(context.Background(), database.Options{
		URL:      "postgres://postgres:" + secret + "@" + testsupport.PostgresAddr() + "/test?sslmode=disable",
		MaxConns: 1,
	})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	conn, err := pool.Acquire(context.Background())
	require.NoError(t, err)
	defer conn.Release()

	// A per-check timeout far beyond the client's: had the check queued for
	// a connection, the request would fail with a client timeout, not 503.
	srv := serve(t, health.New(health.Options{
		Checks:  []health.Checker{database.Check(pool)},
		Timeout: time.Minute,
		Logger:  slog.New(slog.DiscardHandler),
	}))
	r := do(t, http.MethodGet, srv.URL+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, r.code, r.raw)
	assert.Equal(t, "fail", r.body.Status)
	assert.Equal(t, "fail", r.body.Checks["postgres"].Status)
	assert.Equal(t, "unavailable", r.body.Checks["postgres"].Error)
	assert.NotContains(t, r.raw, secret)

	conn.Release()
	r = do(t, http.MethodGet, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, r.code, r.raw)
}

func TestDraining(t *testing.T) {
	pool, err := database.Open(context.Background(), database.Options{
		URL: "postgres://postgres@" + testsupport.PostgresAddr() + "/test?sslmode=disable",
	})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	h := health.New(health.Options{Checks: []health.Checker{database.Check(pool)}})
	srv := serve(t, h)

	tests := []struct {
		draining  bool
		wantReady int
	}{
		{true, http.StatusServiceUnavailable},
		{false, http.StatusOK},
	}
	for _, tt := range tests {
		h.SetDraining(tt.draining)
		ready := do(t, http.MethodGet, srv.URL+"/readyz")
		assert.Equal(t, tt.wantReady, ready.code, ready.raw)
		assertHealthHeaders(t, ready)
		if tt.draining {
			assert.Equal(t, healthBody{Status: "fail", Reason: "draining"}, ready.body)
		} else {
			assert.Equal(t, "pass", ready.body.Status)
		}
		live := do(t, http.MethodGet, srv.URL+"/healthz")
		assert.Equal(t, http.StatusOK, live.code)
		assert.Equal(t, "pass", live.body.Status)
	}
}

func TestMisbehavingCheckersFailTheirCheckOnly(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	tests := []struct {
		name    string
		check   health.Checker
		wantErr string
	}{
		{"ignores its deadline", checkFunc{"stuck", func(context.Context) error { <-release; return nil }}, "timeout"},
		{"honours its deadline", checkFunc{"slow", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}, "timeout"},
		{"panics", checkFunc{"boom", func(context.Context) error { panic("password=" + secret) }}, "unavailable"},
		{"fails", checkFunc{"down", func(context.Context) error { return io.ErrUnexpectedEOF }}, "unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := checkFunc{"ok", func(context.Context) error { return nil }}
			srv := serve(t, health.New(health.Options{
				Checks:  []health.Checker{ok, tt.check},
				Timeout: 100 * time.Millisecond,
				Logger:  slog.New(slog.DiscardHandler),
			}))
			r := do(t, http.MethodGet, srv.URL+"/readyz")
			require.Equal(t, http.StatusServiceUnavailable, r.code, r.raw)
			assert.Equal(t, "pass", r.body.Checks["ok"].Status)
			assert.Equal(t, checkBody{Status: "fail", Error: tt.wantErr}, withoutLatency(r.body.Checks[tt.check.Name()]))
			assert.NotContains(t, r.raw, secret)
		})
	}
}

func withoutLatency(c checkBody) checkBody {
	c.LatencyMS = nil
	return c
}

func TestNewRejectsAmbiguousChecks(t *testing.T) {
	ok := func(context.Context) error { return nil }
	tests := []struct {
		name   string
		checks []health.Checker
	}{
		{"duplicate name", []health.Checker{checkFunc{"postgres", ok}, checkFunc{"postgres", ok}}},
		{"empty name", []health.Checker{checkFunc{"", ok}}},
		{"nil checker", []health.Checker{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Panics(t, func() { health.New(health.Options{Checks: tt.checks}) })
		})
	}
}
