package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
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

func TestNewRejectsCacheForAboveMax(t *testing.T) {
	assert.Panics(t, func() { health.New(health.Options{CacheFor: health.MaxCacheFor + time.Millisecond}) })
	assert.NotPanics(t, func() { health.New(health.Options{CacheFor: health.MaxCacheFor}) })
}

// countingCheck counts its runs and the most of them that overlapped.
type countingCheck struct {
	name                       string
	fn                         func(ctx context.Context) error
	calls, running, maxRunning atomic.Int64
}

func (c *countingCheck) Name() string { return c.name }

func (c *countingCheck) Check(ctx context.Context) error {
	c.calls.Add(1)
	n := c.running.Add(1)
	defer c.running.Add(-1)
	for {
		m := c.maxRunning.Load()
		if n <= m || c.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	return c.fn(ctx)
}

// getAll sends n concurrent GETs to url, released together, and returns the
// answers that were not 200 (status and body).
func getAll(t *testing.T, url string, n int) []string {
	t.Helper()
	start := make(chan struct{})
	var (
		mu  sync.Mutex
		bad []string
		wg  sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			<-start
			msg := ""
			resp, err := client.Get(url)
			if err != nil {
				msg = err.Error()
			} else {
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					msg = resp.Status + " " + string(raw)
				}
			}
			if msg != "" {
				mu.Lock()
				bad = append(bad, msg)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return bad
}

func TestReadinessCoalescesConcurrentRequests(t *testing.T) {
	const (
		requests   = 64
		checkTakes = 50 * time.Millisecond
	)
	tests := []struct {
		name     string
		cacheFor time.Duration
		// spacing is the least time between the starts of two runs: runs
		// never overlap, and with reuse on the next one waits for the pass
		// to expire.
		spacing time.Duration
	}{
		{"reuse off", -1, checkTakes},
		{"default reuse", 0, health.DefaultCacheFor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := &countingCheck{name: "slow", fn: func(ctx context.Context) error {
				select {
				case <-time.After(checkTakes):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}}
			// A timeout far above checkTakes: this test is about sharing,
			// and a loaded machine must not turn the sleep into a timeout.
			srv := serve(t, health.New(health.Options{
				Checks: []health.Checker{check}, Timeout: 5 * time.Second, CacheFor: tt.cacheFor,
			}))

			began := time.Now()
			bad := getAll(t, srv.URL+"/readyz", requests)
			elapsed := time.Since(began)

			assert.Empty(t, bad, "spurious non-200 answers")
			calls := check.calls.Load()
			t.Logf("%d requests, %d check runs in %v", requests, calls, elapsed)
			assert.Equal(t, int64(1), check.maxRunning.Load(), "runs overlapped")
			// Runs start at least spacing apart within elapsed: an upper
			// bound that load can only loosen.
			assert.LessOrEqual(t, calls, 1+int64(elapsed/tt.spacing))
			assert.GreaterOrEqual(t, calls, int64(1))
		})
	}
}

func TestReadinessShowsOutageWithinCacheFor(t *testing.T) {
	const cacheFor = 50 * time.Millisecond
	var down atomic.Bool
	check := &countingCheck{name: "dep", fn: func(context.Context) error {
		if down.Load() {
			return errors.New("connection refused")
		}
		return nil
	}}
	srv := serve(t, health.New(health.Options{
		Checks: []health.Checker{check}, CacheFor: cacheFor, Logger: slog.New(slog.DiscardHandler),
	}))
	require.Equal(t, http.StatusOK, do(t, http.MethodGet, srv.URL+"/readyz").code)

	down.Store(true)
	// Any pass still cached comes from a run that started before the
	// outage, so once cacheFor has passed it may no longer answer. Sleeping
	// longer under load only makes this more certain.
	time.Sleep(cacheFor)
	r := do(t, http.MethodGet, srv.URL+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, r.code, r.raw)
	assert.Equal(t, checkBody{Status: "fail", Error: "unavailable"}, withoutLatency(r.body.Checks["dep"]))

	// A fail is never reused: the first request after the recovery passes.
	down.Store(false)
	r = do(t, http.MethodGet, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, r.code, r.raw)
}

func TestReadinessFirstRequesterCancellingFailsNoOne(t *testing.T) {
	const others = 16
	started, release := make(chan struct{}), make(chan struct{})
	firstRunErr := make(chan error, 1)
	var once sync.Once
	check := &countingCheck{name: "dep", fn: func(ctx context.Context) error {
		once.Do(func() { close(started) })
		select {
		case <-release:
		case <-ctx.Done():
		}
		select {
		case firstRunErr <- ctx.Err():
		default:
		}
		return ctx.Err()
	}}
	// A timeout far above the test's own waits: the run must end because
	// it is released, not because it timed out.
	h := health.New(health.Options{Checks: []health.Checker{check}, Timeout: time.Minute})

	// The wrapper lets the test see when requests are inside the handler
	// and when the first one has given up.
	var entered atomic.Int64
	firstGone := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/readyz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		h.Readiness().ServeHTTP(w, r)
		if r.Header.Get("X-First") != "" {
			close(firstGone)
		}
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/readyz", nil)
	require.NoError(t, err)
	req.Header.Set("X-First", "1")
	firstErr := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		firstErr <- err
	}()
	waitFor(t, started, "the first run to start")
	cancel()
	waitFor(t, firstGone, "the first requester to give up")
	assert.ErrorIs(t, <-firstErr, context.Canceled)

	// The others arrive while the run the first one started is in flight.
	done := make(chan []string, 1)
	go func() { done <- getAll(t, srv.URL+"/readyz", others) }()
	for deadline := time.Now().Add(10 * time.Second); entered.Load() < 1+others && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	close(release)

	assert.NoError(t, <-firstRunErr, "the shared run was cancelled with its first requester")
	assert.Empty(t, <-done, "spurious non-200 answers")
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for " + what)
	}
}

func TestDrainingIgnoresCachedPass(t *testing.T) {
	check := &countingCheck{name: "dep", fn: func(context.Context) error { return nil }}
	h := health.New(health.Options{Checks: []health.Checker{check}, CacheFor: health.MaxCacheFor})
	srv := serve(t, h)
	require.Equal(t, http.StatusOK, do(t, http.MethodGet, srv.URL+"/readyz").code)

	h.SetDraining(true)
	calls := check.calls.Load()
	r := do(t, http.MethodGet, srv.URL+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, r.code, r.raw)
	assert.Equal(t, healthBody{Status: "fail", Reason: "draining"}, r.body)
	assert.Equal(t, calls, check.calls.Load(), "draining ran the checks")

	h.SetDraining(false)
	assert.Equal(t, http.StatusOK, do(t, http.MethodGet, srv.URL+"/readyz").code)
}

// TestReadinessBusyPoolNoSpurious503 is the load that made /readyz flap: a
// small pool in use by queries, and many probes at once. One worker keeps
// one of the two connections busy, so a check always finds the other free
// and any 503 is spurious; checks each running their own ping would find
// the pool exhausted by one another.
func TestReadinessBusyPoolNoSpurious503(t *testing.T) {
	const (
		concurrent = 48
		rounds     = 5
	)
	pool, err := database.Open(context.Background(), database.Options{
		URL:      "postgres://postgres@" + testsupport.PostgresAddr() + "/test?sslmode=disable",
		MaxConns: 2,
		// The pool's own health check briefly takes the idle connections.
		HealthCheckPeriod: time.Hour,
	})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, pool.Ping(context.Background()))

	ctx, stop := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		queries atomic.Int64
	)
	wg.Go(func() {
		for ctx.Err() == nil {
			if _, err := pool.Exec(ctx, "SELECT pg_sleep(0.005)"); err == nil {
				queries.Add(1)
			}
		}
	})
	defer wg.Wait()
	defer stop()

	for _, cacheFor := range []time.Duration{-1, 0} {
		t.Run("CacheFor="+cacheFor.String(), func(t *testing.T) {
			srv := serve(t, health.New(health.Options{
				Checks: []health.Checker{database.Check(pool)}, CacheFor: cacheFor,
				Logger: slog.New(slog.DiscardHandler),
			}))
			for range rounds {
				assert.Empty(t, getAll(t, srv.URL+"/readyz", concurrent), "spurious non-200 answers")
			}
		})
	}
	assert.Positive(t, queries.Load(), "the pool was never busy")
}

// BenchmarkReadinessConcurrent measures /readyz under parallel load against
// the real dependencies, with reuse off (runs shared only) and by default.
func BenchmarkReadinessConcurrent(b *testing.B) {
	pool, err := database.Open(context.Background(), database.Options{
		URL: "postgres://postgres@" + testsupport.PostgresAddr() + "/test?sslmode=disable",
	})
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	rdb, err := cache.Open(context.Background(), testsupport.RedisURL(), cache.Options{})
	require.NoError(b, err)
	b.Cleanup(func() { _ = rdb.Close() })

	for _, bb := range []struct {
		name     string
		cacheFor time.Duration
	}{{"CacheFor=off", -1}, {"CacheFor=default", 0}} {
		b.Run(bb.name, func(b *testing.B) {
			handler := health.New(health.Options{
				Checks:   []health.Checker{database.Check(pool), cache.Check(rdb)},
				CacheFor: bb.cacheFor,
				Logger:   slog.New(slog.DiscardHandler),
			}).Readiness()
			var failed atomic.Int64
			// Many more waiters than CPUs, like the 32 proxied connections
			// that made /readyz flap.
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					w := httptest.NewRecorder()
					handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
					if w.Code != http.StatusOK {
						failed.Add(1)
					}
				}
			})
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d answers were not 200", n)
			}
		})
	}
}
