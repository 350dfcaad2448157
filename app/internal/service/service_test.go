package service_test

// End-to-end tests of the hardened HTTP stack: the real server, built by the
// same code as `nbms serve`, on a real loopback listener, wired to the
// machine's real PostgreSQL and Redis. Every protection is exercised by
// sending the request that must be refused and reading the real response.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/service"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const (
	publicHost   = "nbms.example.org"
	portalOrigin = "https://portal.example.org"
	secretKey    = "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj"
	// dbPassword is put into DATABASE_URL (trust auth ignores it) so the
	// tests can search the logs for it.
	dbPassword = "db-Pa55word-never-logged"
)

// databaseURL is a migrated database of this package's own (TestMain).
var databaseURL string

func TestMain(m *testing.M) { os.Exit(storetest.Main(m, &databaseURL)) }

// prodEnv is a production environment pointing at the test services. The
// test client plays the reverse proxy: 127.0.0.1 is trusted.
func prodEnv(t *testing.T) map[string]string {
	dbURL := strings.Replace(databaseURL, "postgres://root@", "postgres://root:"+dbPassword+"@", 1)
	return map[string]string{
		"NBMS_ENV":               "prod",
		"SECRET_KEY":             secretKey,
		"DATABASE_URL":           dbURL,
		"REDIS_URL":              testsupport.RedisURL(),
		"ALLOWED_HOSTS":          publicHost,
		"CSRF_TRUSTED_ORIGINS":   portalOrigin,
		"CORS_ALLOWED_ORIGINS":   portalOrigin,
		"CORS_ALLOW_CREDENTIALS": "true",
		"TRUSTED_PROXY_CIDRS":    "127.0.0.1/32",
		"HTTP_ADDR":              "127.0.0.1:0",
		"STATIC_ROOT":            t.TempDir(),
		"MEDIA_ROOT":             t.TempDir(),
		"MAX_REQUEST_BODY_BYTES": "1024",
		"MAX_UPLOAD_BYTES":       "8192",
		"SHUTDOWN_DRAIN_DELAY":   "0s",
		"READINESS_TIMEOUT":      "2s",
		// The test client is always 127.0.0.1, and Redis buckets outlive a
		// run: a generous public limit keeps reruns independent. The
		// throttling test sets its own limit on clients of its own.
		"RATE_LIMIT_PUBLIC_API": "100000/1m",
	}
}

// app is a running server.
type app struct {
	svc  *service.Service
	url  string
	logs *testsupport.SyncBuffer
	stop func() error
}

// testRoutes are routes mounted behind the full chain so the tests can
// exercise writes, uploads, panics and slow requests.
func testRoutes(release <-chan struct{}, started chan<- struct{}) func(*http.ServeMux) {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("POST /api/things", func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					problem.Write(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", tooLarge.Limit))
					return
				}
				problem.Write(w, http.StatusBadRequest, "unreadable body")
				return
			}
			logging.SetUserID(r.Context(), "user-42")
			w.WriteHeader(http.StatusCreated)
			_, _ = fmt.Fprintf(w, `{"received":%d}`, len(body))
		})
		mux.HandleFunc("POST /api/uploads/evidence", func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				problem.Write(w, http.StatusRequestEntityTooLarge, "upload too large")
				return
			}
			_, _ = fmt.Fprintf(w, `{"stored":%d}`, n)
		})
		mux.HandleFunc("GET /api/boom", func(http.ResponseWriter, *http.Request) {
			panic("boom: DATABASE_URL=postgres://root:" + dbPassword + "@db/nbms")
		})
		mux.HandleFunc("GET /api/leaky-log", func(w http.ResponseWriter, r *http.Request) {
			// A careless handler logs secrets every way it can.
			logger := slog.Default()
			if l, ok := r.Context().Value(loggerKey{}).(*slog.Logger); ok {
				logger = l
			}
			logger.Info("connecting to postgres://root:"+dbPassword+"@db/nbms", "secret_key", secretKey,
				"note", "key is "+secretKey, "authorization", "Bearer abc.def.ghi")
			_, _ = w.Write([]byte(`{}`))
		})
		mux.HandleFunc("GET /api/slow", func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			<-release
			_, _ = w.Write([]byte(`{"slow":"done"}`))
		})
	}
}

type loggerKey struct{}

func startApp(t *testing.T, env map[string]string, release <-chan struct{}, started chan<- struct{}) *app {
	t.Helper()
	s, err := config.Parse(env)
	require.NoError(t, err)
	logs := &testsupport.SyncBuffer{}
	var svc *service.Service
	svc, err = service.Build(context.Background(), s, service.Options{LogOutput: logs, Mount: testRoutes(release, started)})
	require.NoError(t, err)
	// Hand the service's logger to the leaky handler the way real handlers
	// get it: through the request context.
	inner := svc.Server.Handler
	svc.Server.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), loggerKey{}, svc.Logger)))
	})
	ln, err := net.Listen("tcp", s.HTTPAddr)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	var stopped atomic.Bool
	stop := func() error {
		if stopped.Swap(true) {
			return nil
		}
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("server did not stop")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return &app{svc: svc, url: "http://" + ln.Addr().String(), logs: logs, stop: stop}
}

// request sends a request as the reverse proxy would forward it: public
// Host, X-Forwarded-Proto https.
func (a *app) request(t *testing.T, method, path string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, a.url+path, body)
	require.NoError(t, err)
	req.Host = publicHost
	req.Header.Set("X-Forwarded-Proto", "https")
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(b)
}

// logLines decodes the JSON log.
func (a *app) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(a.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		out = append(out, m)
	}
	return out
}

// accessLine returns the access-log line of the request with id.
func (a *app) accessLine(t *testing.T, requestID string) map[string]any {
	t.Helper()
	var found map[string]any
	require.Eventually(t, func() bool {
		for _, l := range a.logLines(t) {
			if l["msg"] == "request" && l["request_id"] == requestID {
				found = l
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "no access line for %s", requestID)
	return found
}

var securityHeaders = []string{
	"Strict-Transport-Security", "Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options",
	"Referrer-Policy", "Cross-Origin-Opener-Policy", "Cross-Origin-Resource-Policy", "Permissions-Policy",
}

func assertSecurityHeaders(t *testing.T, res *http.Response, what string) {
	t.Helper()
	for _, h := range securityHeaders {
		assert.NotEmpty(t, res.Header.Get(h), "%s: %s missing", what, h)
	}
	assert.Equal(t, "max-age=63072000; includeSubDomains", res.Header.Get("Strict-Transport-Security"), what)
	assert.Equal(t, config.DefaultCSP+"; report-uri /csp-report; report-to csp-endpoint", res.Header.Get("Content-Security-Policy"), what)
	assert.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"), what)
	assert.Equal(t, "DENY", res.Header.Get("X-Frame-Options"), what)
	assert.Empty(t, res.Header.Get("Server"), what)
	assert.Empty(t, res.Header.Get("X-Powered-By"), what)
	assert.NotEmpty(t, res.Header.Get("X-Request-Id"), what)
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	big := strings.Repeat("x", 2048)
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		hdr    map[string]string
		status int
	}{
		{"landing page", "GET", "/", "", nil, 200},
		{"public API index", "GET", "/api/public/", "", nil, 200},
		{"liveness", "GET", "/healthz", "", nil, 200},
		{"not found", "GET", "/nope", "", nil, 404},
		{"method not allowed", "DELETE", "/", "", nil, 405},
		{"body too large", "POST", "/api/things", big, map[string]string{"Content-Type": "application/json"}, 413},
		{"panic", "GET", "/api/boom", "", nil, 500},
		{"CORS preflight", "OPTIONS", "/api/things", "", map[string]string{"Origin": portalOrigin, "Access-Control-Request-Method": "POST"}, 204},
		{"CORS preflight refused", "OPTIONS", "/api/things", "", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, 403},
		{"CSRF refused", "POST", "/api/things", "{}", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403},
		{"host refused", "GET", "/", "", map[string]string{"Host": "evil.example"}, 400},
		{"plain HTTP API", "GET", "/api/public/", "", map[string]string{"X-Forwarded-Proto": "http"}, 403},
		{"plain HTTP redirect", "GET", "/", "", map[string]string{"X-Forwarded-Proto": "http"}, 301},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := a.request(t, tc.method, tc.path, strings.NewReader(tc.body), tc.hdr)
			assert.Equal(t, tc.status, res.StatusCode)
			assertSecurityHeaders(t, res, tc.name)
			if tc.status >= 400 {
				assert.Equal(t, problem.ContentType, res.Header.Get("Content-Type"), "errors answer problem+json")
				var d problem.Details
				require.NoError(t, json.NewDecoder(res.Body).Decode(&d))
				assert.Equal(t, tc.status, d.Status)
			}
		})
	}
}

func TestErrorsNeverLeakInternals(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	res := a.request(t, "GET", "/api/boom", nil, nil)
	body := readBody(t, res)
	assert.Equal(t, 500, res.StatusCode)
	assert.NotContains(t, body, "boom")
	assert.NotContains(t, body, "goroutine")
	assert.NotContains(t, body, dbPassword)

	// The stack is in the log, tied to the request, with the secret scrubbed.
	id := res.Header.Get("X-Request-Id")
	assert.Equal(t, float64(500), a.accessLine(t, id)["status_code"])
	logs := a.logs.String()
	assert.Contains(t, logs, "goroutine")
	assert.NotContains(t, logs, dbPassword)
}

func TestRequestLogLine(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	res := a.request(t, "POST", "/api/things?token=query-secret-token&page=2", strings.NewReader(`{"a":1}`), map[string]string{
		"X-Request-ID":    "req-123.abc",
		"Sec-Fetch-Site":  "same-origin",
		"X-Forwarded-For": "203.0.113.50, 198.51.100.7",
		"Content-Type":    "application/json",
	})
	require.Equal(t, 201, res.StatusCode, readBody(t, res))
	assert.Equal(t, "req-123.abc", res.Header.Get("X-Request-Id"), "a valid incoming id is echoed")

	line := a.accessLine(t, "req-123.abc")
	assert.Equal(t, "INFO", line["level"])
	assert.Equal(t, "user-42", line["user_id"])
	assert.Equal(t, "POST", line["method"])
	assert.Equal(t, "/api/things", line["path"], "path only: never the query string")
	assert.Equal(t, float64(201), line["status_code"])
	assert.IsType(t, float64(0), line["latency_ms"])
	assert.Equal(t, float64(len(`{"received":7}`)), line["bytes"])
	assert.Equal(t, "198.51.100.7", line["client_ip"], "right-most untrusted hop behind the trusted proxy")
	assert.NotContains(t, a.logs.String(), "query-secret-token")

	// An unsafe incoming id is replaced by a generated one.
	for _, bad := range []string{`bad id "<script>"`, strings.Repeat("a", 65)} {
		res = a.request(t, "GET", "/", nil, map[string]string{"X-Request-ID": bad})
		generated := res.Header.Get("X-Request-Id")
		assert.NotEqual(t, bad, generated)
		assert.Regexp(t, `^[A-Za-z0-9._-]{1,64}$`, generated)
		a.accessLine(t, generated)
		assert.NotContains(t, a.logs.String(), bad)
	}

	// Failures are logged above info.
	res = a.request(t, "GET", "/api/boom", nil, nil)
	assert.Equal(t, "ERROR", a.accessLine(t, res.Header.Get("X-Request-Id"))["level"])
}

func TestSecretsAreRedactedFromLogs(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	res := a.request(t, "GET", "/api/leaky-log?api_key=query-api-key-value", nil, map[string]string{
		"Authorization": "Bearer header-bearer-token", "Cookie": "__Host-nbms_session=cookie-session-value",
	})
	require.Equal(t, 200, res.StatusCode)
	a.accessLine(t, res.Header.Get("X-Request-Id"))
	logs := a.logs.String()
	require.Contains(t, logs, "connecting to postgres://root:", "the leaky line was written")
	for _, secret := range []string{dbPassword, secretKey, "abc.def.ghi", "query-api-key-value", "header-bearer-token", "cookie-session-value"} {
		assert.NotContains(t, logs, secret)
	}
	assert.Contains(t, logs, logging.Redacted)
}

func TestTrustedProxyRule(t *testing.T) {
	t.Run("untrusted peer cannot forge forwarded headers", func(t *testing.T) {
		env := prodEnv(t)
		env["TRUSTED_PROXY_CIDRS"] = "10.9.9.9/32" // not the test client
		a := startApp(t, env, nil, nil)
		res := a.request(t, "GET", "/", nil, map[string]string{"X-Forwarded-For": "198.51.100.7"})
		assert.Equal(t, 301, res.StatusCode, "X-Forwarded-Proto from an untrusted peer is ignored: still plain HTTP")
		assert.Equal(t, "https://"+publicHost+"/", res.Header.Get("Location"))
		line := a.accessLine(t, res.Header.Get("X-Request-Id"))
		assert.Equal(t, "127.0.0.1", line["client_ip"], "the forged X-Forwarded-For is ignored")

		res = a.request(t, "GET", "/", nil, map[string]string{"X-Forwarded-Host": publicHost, "Host": "evil.example"})
		assert.Equal(t, 400, res.StatusCode, "X-Forwarded-Host from an untrusted peer cannot launder a host")
	})
	t.Run("probes are never redirected nor host-checked", func(t *testing.T) {
		a := startApp(t, prodEnv(t), nil, nil)
		for _, path := range []string{"/healthz", "/readyz"} {
			res := a.request(t, "GET", path, nil, map[string]string{"X-Forwarded-Proto": "", "Host": "172.18.0.5:8000"})
			assert.Equal(t, 200, res.StatusCode, path)
			assert.Equal(t, "no-store", res.Header.Get("Cache-Control"), path)
		}
	})
}

func TestAllowedHosts(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	res := a.request(t, "GET", "/", nil, map[string]string{"Host": "evil.example"})
	assert.Equal(t, 400, res.StatusCode)
	var warned bool
	for _, l := range a.logLines(t) {
		if l["level"] == "WARN" && strings.Contains(fmt.Sprint(l), "evil.example") && l["msg"] != "request" {
			warned = true
		}
	}
	assert.True(t, warned, "the refused host is logged: %s", a.logs.String())
	assert.Equal(t, 200, a.request(t, "GET", "/", nil, map[string]string{"Host": "NBMS.example.org:443"}).StatusCode)
}

func TestHTTPSRules(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	plain := map[string]string{"X-Forwarded-Proto": "http"}

	res := a.request(t, "GET", "/?page=2", nil, plain)
	assert.Equal(t, 301, res.StatusCode)
	assert.Equal(t, "https://"+publicHost+"/?page=2", res.Header.Get("Location"))

	res = a.request(t, "GET", "/api/public/", nil, plain)
	assert.Equal(t, 403, res.StatusCode, "API calls are refused, not silently redirected")
	assert.Contains(t, readBody(t, res), "HTTPS")
	assert.Empty(t, res.Header.Get("Location"))

	res = a.request(t, "POST", "/api/things", strings.NewReader("{}"), plain)
	assert.Equal(t, 403, res.StatusCode)

	assert.Equal(t, 200, a.request(t, "GET", "/", nil, nil).StatusCode, "already secure per the trusted proxy")
}

func TestCSRFByOrigin(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	post := func(hdr map[string]string) int {
		return a.request(t, "POST", "/api/things", strings.NewReader("{}"), hdr).StatusCode
	}
	assert.Equal(t, 403, post(map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}))
	assert.Equal(t, 403, post(map[string]string{"Origin": "https://evil.example"}), "old browser, no Sec-Fetch-Site")
	assert.Equal(t, 403, post(map[string]string{"Origin": "https://other.example.org", "Sec-Fetch-Site": "same-site"}), "a sibling subdomain is not trusted by default")
	assert.Equal(t, 201, post(map[string]string{"Origin": portalOrigin, "Sec-Fetch-Site": "same-site"}), "trusted origin")
	assert.Equal(t, 201, post(map[string]string{"Sec-Fetch-Site": "same-origin"}))
	assert.Equal(t, 201, post(map[string]string{"Origin": "https://" + publicHost}), "same origin behind the proxy")
	assert.Equal(t, 201, post(nil), "non-browser client")
}

func TestCORS(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)

	res := a.request(t, "GET", "/api/public/", nil, map[string]string{"Origin": portalOrigin})
	assert.Equal(t, portalOrigin, res.Header.Get("Access-Control-Allow-Origin"))
	assert.Empty(t, res.Header.Get("Access-Control-Allow-Credentials"), "public data never with credentials")
	assert.Contains(t, res.Header.Values("Vary"), "Origin")

	for _, origin := range []string{"https://evil.example", "https://portal.example.org.evil.example", "http://portal.example.org", "null"} {
		res = a.request(t, "GET", "/api/public/", nil, map[string]string{"Origin": origin})
		assert.Empty(t, res.Header.Get("Access-Control-Allow-Origin"), "never reflect %s", origin)
	}

	res = a.request(t, "OPTIONS", "/api/things", nil, map[string]string{
		"Origin": portalOrigin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
	})
	assert.Equal(t, 204, res.StatusCode)
	assert.Equal(t, portalOrigin, res.Header.Get("Access-Control-Allow-Origin"))
	assert.Equal(t, "true", res.Header.Get("Access-Control-Allow-Credentials"))

	res = a.request(t, "OPTIONS", "/api/things", nil, map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
	assert.Equal(t, 403, res.StatusCode)
	assert.Empty(t, res.Header.Get("Access-Control-Allow-Origin"))
	assert.Empty(t, res.Header.Get("Access-Control-Allow-Credentials"))
}

func TestBodyLimits(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	json := map[string]string{"Content-Type": "application/json"}
	assert.Equal(t, 201, a.request(t, "POST", "/api/things", strings.NewReader(strings.Repeat("a", 1024)), json).StatusCode)

	res := a.request(t, "POST", "/api/things", strings.NewReader(strings.Repeat("a", 1025)), json)
	assert.Equal(t, 413, res.StatusCode)
	assert.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))

	// Unknown length (chunked): refused while streaming.
	res = a.request(t, "POST", "/api/things", io.MultiReader(strings.NewReader(strings.Repeat("a", 3000))), json)
	assert.Equal(t, 413, res.StatusCode)

	// Uploads have their own, larger limit.
	assert.Equal(t, 200, a.request(t, "POST", "/api/uploads/evidence", strings.NewReader(strings.Repeat("u", 8192)), nil).StatusCode)
	assert.Equal(t, 413, a.request(t, "POST", "/api/uploads/evidence", strings.NewReader(strings.Repeat("u", 8193)), nil).StatusCode)
}

func TestCSPReportEndpoint(t *testing.T) {
	a := startApp(t, prodEnv(t), nil, nil)
	report := `{"csp-report":{"document-uri":"https://nbms.example.org/","violated-directive":"script-src","blocked-uri":"https://evil.example/x.js"}}`
	res := a.request(t, "POST", "/csp-report", strings.NewReader(report), map[string]string{"Content-Type": "application/csp-report", "Sec-Fetch-Site": "same-origin"})
	assert.Equal(t, 204, res.StatusCode)
	require.Eventually(t, func() bool { return strings.Contains(a.logs.String(), "evil.example/x.js") }, 5*time.Second, 10*time.Millisecond)

	res = a.request(t, "POST", "/csp-report", strings.NewReader(strings.Repeat(" ", 64<<10)+report), map[string]string{"Content-Type": "application/csp-report", "Sec-Fetch-Site": "same-origin"})
	assert.Equal(t, 413, res.StatusCode)
}

func TestReadinessFollowsTheDatabase(t *testing.T) {
	pg := testsupport.NewForwarder(t, testsupport.PostgresAddr())
	env := prodEnv(t)
	env["DATABASE_URL"] = strings.Replace(prodEnv(t)["DATABASE_URL"], testsupport.PostgresAddr(), pg.Addr(), 1)
	a := startApp(t, env, nil, nil)

	res := a.request(t, "GET", "/readyz", nil, nil)
	body := readBody(t, res)
	require.Equal(t, 200, res.StatusCode, body)
	assert.Contains(t, body, `"postgres"`)
	assert.Contains(t, body, `"redis"`)

	pg.Stop()
	// A pass is reused for at most health.DefaultCacheFor: the outage
	// shows once that has passed (polled; the bound is only for failure).
	require.Eventually(t, func() bool {
		res = a.request(t, "GET", "/readyz", nil, nil)
		body = readBody(t, res)
		return res.StatusCode == 503
	}, health.DefaultCacheFor+15*time.Second, 100*time.Millisecond, "not ready while the database is away")
	assert.Contains(t, body, `"fail"`)
	assert.NotContains(t, body, dbPassword)
	assert.Equal(t, 200, a.request(t, "GET", "/healthz", nil, nil).StatusCode, "liveness never depends on the database")

	pg.Restart()
	require.Eventually(t, func() bool {
		return a.request(t, "GET", "/readyz", nil, nil).StatusCode == 200
	}, 15*time.Second, 100*time.Millisecond, "ready again once the database is back")
	assert.NotContains(t, a.logs.String(), dbPassword)
}

func TestGracefulShutdown(t *testing.T) {
	release, started := make(chan struct{}), make(chan struct{}, 1)
	env := prodEnv(t)
	env["SHUTDOWN_DRAIN_DELAY"] = "300ms"
	a := startApp(t, env, release, started)

	type result struct {
		status int
		body   string
		err    error
	}
	inflight := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", a.url+"/api/slow", nil)
		req.Host = publicHost
		req.Header.Set("X-Forwarded-Proto", "https")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		inflight <- result{status: res.StatusCode, body: string(b)}
	}()
	<-started

	stopped := make(chan error, 1)
	go func() { stopped <- a.stop() }()
	// While draining, readiness is 503 and liveness stays 200 (the
	// listener is still open during the drain delay).
	require.Eventually(t, func() bool {
		res, err := http.Get(a.url + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 503
	}, 5*time.Second, 5*time.Millisecond)
	res, err := http.Get(a.url + "/healthz")
	if err == nil { // the drain window may just have closed the listener
		res.Body.Close()
		assert.Equal(t, 200, res.StatusCode)
	}

	close(release)
	r := <-inflight
	require.NoError(t, r.err)
	assert.Equal(t, 200, r.status, "the in-flight request finished")
	assert.Equal(t, `{"slow":"done"}`, r.body)
	require.NoError(t, <-stopped)
	assert.Contains(t, a.logs.String(), "server stopped")
}

func TestSlowClientsAreCutOff(t *testing.T) {
	env := prodEnv(t)
	env["HTTP_READ_HEADER_TIMEOUT"] = "200ms"
	a := startApp(t, env, nil, nil)
	assert.Equal(t, 200*time.Millisecond, a.svc.Server.ReadHeaderTimeout)
	assert.NotZero(t, a.svc.Server.ReadTimeout)
	assert.NotZero(t, a.svc.Server.WriteTimeout)
	assert.NotZero(t, a.svc.Server.IdleTimeout)

	conn, err := net.Dial("tcp", strings.TrimPrefix(a.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: " + publicHost + "\r\nX-Slow: "))
	require.NoError(t, err)
	// Never finish the headers: the server must hang up on its own.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadAll(conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatal("the server kept a slowloris connection open")
	}
}

func TestSentryReceivesScrubbedPanics(t *testing.T) {
	var envelopes testsupport.SyncBuffer
	sentry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = envelopes.Write(b)
		w.WriteHeader(200)
	}))
	defer sentry.Close()
	env := prodEnv(t)
	env["SENTRY_DSN"] = "http://publickey@" + strings.TrimPrefix(sentry.URL, "http://") + "/42"
	a := startApp(t, env, nil, nil)

	res := a.request(t, "GET", "/api/boom?token=query-token-value", nil, map[string]string{"Authorization": "Bearer sentry-bearer"})
	assert.Equal(t, 500, res.StatusCode)
	require.True(t, a.svc.Reporter.Flush(5*time.Second))
	require.Eventually(t, func() bool { return strings.Contains(envelopes.String(), "boom") }, 5*time.Second, 10*time.Millisecond)
	for _, secret := range []string{dbPassword, "query-token-value", "sentry-bearer"} {
		assert.NotContains(t, envelopes.String(), secret)
	}
}

func TestDatabaseOptionsFollowTheContract(t *testing.T) {
	env := prodEnv(t)
	env["DB_CONN_MAX_AGE"] = "90s"
	env["DB_PGBOUNCER_MODE"] = "true"
	env["DB_MAX_CONNS"] = "7"
	s, err := config.Parse(env)
	require.NoError(t, err)
	o := service.DatabaseOptions(s)
	assert.Equal(t, 90*time.Second, o.MaxConnLifetime)
	assert.True(t, o.PgBouncerTransactionMode)
	assert.EqualValues(t, 7, o.MaxConns)

	svc, err := service.Build(context.Background(), s, service.Options{LogOutput: io.Discard})
	require.NoError(t, err)
	defer svc.Close()
	assert.Equal(t, 90*time.Second, svc.DB.Config().MaxConnLifetime)
	assert.EqualValues(t, 7, svc.DB.Config().MaxConns)
	assert.NotEqual(t, svc.DB.Config().ConnConfig.DefaultQueryExecMode.String(), "cache_statement", "no server-side prepared statements behind PgBouncer")
}

func TestPublicAPIIsThrottledPerClient(t *testing.T) {
	env := prodEnv(t)
	env["RATE_LIMIT_PUBLIC_API"] = "3/1m"
	a := startApp(t, env, nil, nil)
	// Keys are per client IP and outlive the run; make this run's clients unique.
	client, other := testsupport.UniqueClientIP(), testsupport.UniqueClientIP()
	for i := 0; i < 3; i++ {
		res := a.request(t, "GET", "/api/public/", nil, map[string]string{"X-Forwarded-For": client})
		require.Equal(t, 200, res.StatusCode)
		assert.Equal(t, `"public-api";q=3;w=60`, res.Header.Get("RateLimit-Policy"))
	}
	res := a.request(t, "GET", "/api/public/", nil, map[string]string{"X-Forwarded-For": client})
	assert.Equal(t, 429, res.StatusCode)
	assert.NotEmpty(t, res.Header.Get("Retry-After"))
	assert.Contains(t, res.Header.Get("RateLimit"), `"public-api";r=0`)
	assertSecurityHeaders(t, res, "throttled")
	assert.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))

	assert.Equal(t, 200, a.request(t, "GET", "/api/public/", nil, map[string]string{"X-Forwarded-For": other}).StatusCode, "another client has its own bucket")
	assert.Equal(t, 200, a.request(t, "GET", "/healthz", nil, map[string]string{"X-Forwarded-For": client}).StatusCode, "probes are never throttled")
}
