package nginx

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/infra/internal/nginxtest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const (
	secretContent = "TOP-SECRET outside the static folder"
	// evidenceName is an uploaded file's name in the media root, as the
	// app makes them; evidenceContent its bytes. evidencePath is the app's
	// download route for it, evidenceEscapePath one whose answer redirects
	// out of the media root.
	evidenceName       = "Q2XW7TDAPMZL4JN5RVK3OEHBGI.txt"
	evidenceContent    = "plot,species,count\n1,Bugeranus carunculatus,2\n"
	evidencePath       = "/api/evidence/7/content"
	evidenceEscapePath = "/api/evidence/8/content"

	liveBodyLimit = 64 << 10
	// liveReadTimeout is how long the live site's nginx waits for the app
	// before its own 504: short, so that the test of it is.
	liveReadTimeout = 2 * time.Second
)

// seenRequest is what the upstream received for one request path.
type seenRequest struct {
	requestURI string
	host       string
	header     http.Header
	bodyLen    int
}

// recordingUpstream stands in for the app: it records every request it
// receives and answers "upstream:<path>". /leaky answers with the headers
// nginx must replace or drop; /api/slow answers only after the live site's
// upstream read timeout; the evidence paths answer as the app answers an
// authorised download, with X-Accel-Redirect and no body.
type recordingUpstream struct {
	mu   sync.Mutex
	seen map[string][]seenRequest
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	u.mu.Lock()
	u.seen[r.URL.Path] = append(u.seen[r.URL.Path], seenRequest{r.RequestURI, r.Host, r.Header.Clone(), int(n)})
	u.mu.Unlock()
	if r.URL.Path == "/api/slow" {
		select {
		case <-r.Context().Done(): // nginx gave up
		case <-time.After(3 * liveReadTimeout):
		}
	}
	switch r.URL.Path {
	case evidencePath, evidenceEscapePath:
		h := w.Header()
		h.Set("Content-Type", "text/csv; charset=utf-8")
		h.Set("Content-Disposition", `attachment; filename="cranes.csv"`)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", config.AttachmentCSP)
		h.Set("Cache-Control", "private, no-store")
		target := config.ProtectedMediaPrefix + evidenceName
		if r.URL.Path == evidenceEscapePath {
			target = config.ProtectedMediaPrefix + "../secret.txt"
		}
		h.Set("X-Accel-Redirect", target)
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.URL.Path == "/leaky" {
		h := w.Header()
		h.Set("Strict-Transport-Security", "max-age=1")
		h.Set("X-Powered-By", "Go/1.0")
		h.Set("Server", "leaky/1.0")
		h.Set("X-Request-Id", "upstream-made-this-up")
		h.Set("X-Frame-Options", "SAMEORIGIN")
		h.Set("X-Content-Type-Options", "nosniff")
	}
	// Answers under the public prefix, marked as the app would mark them.
	h := w.Header()
	switch r.URL.Path {
	case "/api/public/open":
		h.Set("Cache-Control", "public, max-age=60")
		h.Set("RateLimit", `"public-api";r=119;t=60`)
	case "/api/public/private":
		h.Set("Cache-Control", "private, no-store")
	case "/api/public/cookie":
		h.Set("Cache-Control", "public, max-age=60")
		h.Set("Set-Cookie", "session=abc; Path=/; Secure; HttpOnly")
	case "/api/public/error":
		h.Set("Cache-Control", "public, max-age=60")
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	h.Set("Content-Type", "text/plain")
	fmt.Fprint(w, "upstream:"+r.URL.Path)
}

func (u *recordingUpstream) requests(path string) []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[path]
}

// liveSite is a running nginx with the rendered config in front of a
// recordingUpstream.
type liveSite struct {
	nginxtest.Site
	upstream       *recordingUpstream
	upstreamServer *httptest.Server
	// upstreamConns counts the TCP connections nginx opened to the app.
	upstreamConns atomic.Int64
	logPath       string
	pool          *x509.CertPool
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

// startLiveSite renders the config with production-shaped Params (TLS,
// HSTS, resolver, ACME) and starts the real nginx in the foreground as
// nobody. Everything is stopped and removed by t.Cleanup.
func startLiveSite(t *testing.T) *liveSite {
	t.Helper()
	dir := nginxtest.NobodyDir(t)
	www := filepath.Join(dir, "www")
	writeFile(t, filepath.Join(www, "secret.txt"), secretContent)
	writeFile(t, filepath.Join(www, "static", "hello.txt"), "static-ok")
	writeFile(t, filepath.Join(www, "static", "app.0123abcd.css"), "body{}")
	writeFile(t, filepath.Join(www, "media", evidenceName), evidenceContent)
	writeFile(t, filepath.Join(dir, "acme", ".well-known", "acme-challenge", "tok123"), "tok123.thumbprint")
	tmp := filepath.Join(dir, "tmp")
	require.NoError(t, os.Mkdir(tmp, 0o700))
	nginxtest.ChownNobody(t, tmp)

	s := &liveSite{upstream: &recordingUpstream{seen: map[string][]seenRequest{}}}
	s.upstreamServer = httptest.NewUnstartedServer(s.upstream)
	s.upstreamServer.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.upstreamConns.Add(1)
		}
	}
	s.upstreamServer.Start()
	t.Cleanup(s.upstreamServer.Close)
	s.HTTPPort, s.HTTPSPort = testsupport.FreePort(t), testsupport.FreePort(t)

	p := prodParams()
	p.ServerNames = []string{"localhost"}
	p.ListenAddress = "127.0.0.1"
	p.HTTPPort, p.HTTPSPort, p.PublicPort = s.HTTPPort, s.HTTPSPort, s.HTTPSPort
	cert := nginxtest.WriteCert(t, dir)
	p.CertPath, p.KeyPath = cert.CertPath, cert.KeyPath
	p.Upstream = s.upstreamServer.Listener.Addr().String() // an IP: the resolver is never asked
	p.StaticRoot = filepath.Join(www, "static")
	p.MediaRoot = filepath.Join(www, "media")
	p.ACMEChallengeRoot = filepath.Join(dir, "acme")
	p.ClientMaxBodyBytes = liveBodyLimit
	p.LoginRatePerMinute, p.LoginBurst = 1, 2
	p.WorkerProcesses = 1
	p.UpstreamReadTimeout = liveReadTimeout
	p.PidPath = filepath.Join(tmp, "nginx.pid")
	p.TempDir = tmp
	conf, err := Render(p)
	require.NoError(t, err)
	confPath := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o644))

	s.pool = cert.Pool(t)
	s.Client = nginxtest.NewClient(s.pool, nil)
	s.logPath = nginxtest.StartNginx(t, dir, confPath, s.HTTPURL(HealthPath), s.Client)
	return s
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// assertEdgeHeaders checks the headers nginx owns on every response: the
// app's security set (all but Cache-Control, each once, with the app's
// value unless the location overrides it: name, value pairs), the request
// ID and no software banner.
func assertEdgeHeaders(t *testing.T, resp *http.Response, overrides ...string) {
	t.Helper()
	h := resp.Header
	for _, want := range prodParams().SecurityHeaders {
		if want.Name == "Cache-Control" {
			continue
		}
		value := want.Value
		for i := 0; i+1 < len(overrides); i += 2 {
			if overrides[i] == want.Name {
				value = overrides[i+1]
			}
		}
		assert.Equal(t, []string{value}, h.Values(want.Name), "%s on %s %s", want.Name, resp.Request.Method, resp.Request.URL.Path)
	}
	assert.Len(t, h.Values("X-Request-Id"), 1)
	assert.Regexp(t, config.RequestIDPattern, h.Get("X-Request-Id"))
	assert.Equal(t, "nginx", h.Get("Server"), "no version in the Server header")
	assert.Empty(t, h.Values("X-Powered-By"))
}

func TestLiveNginx(t *testing.T) {
	s := startLiveSite(t)

	t.Run("HTTP redirects to HTTPS on the same host and public port", func(t *testing.T) {
		for _, path := range []string{"/some/path?x=1&y=2", "/static/hello.txt", "/healthz/x", "/readyzz"} {
			resp, _ := s.Do(t, "GET", s.HTTPURL(path), nil, nil)
			assert.Equal(t, http.StatusMovedPermanently, resp.StatusCode, path)
			assert.Equal(t, s.HTTPSURL(path), resp.Header.Get("Location"))
			assertEdgeHeaders(t, resp)
		}
		assert.Empty(t, s.upstream.requests("/some/path"), "nothing but the probes is proxied over plain HTTP")
	})

	t.Run("probes on plain HTTP get the app's answer, not a redirect", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, body := s.Do(t, "GET", s.HTTPURL(path), nil, nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode, path)
			assert.Equal(t, "upstream:"+path, body)
			assert.Empty(t, resp.Header.Get("Location"))
			assertEdgeHeaders(t, resp)
			seen := s.upstream.requests(path)
			require.NotEmpty(t, seen, path)
			assert.Equal(t, "http", seen[len(seen)-1].header.Get("X-Forwarded-Proto"), "the app learns it came over plain HTTP")
		}
		// A foreign host on port 80 still gets no answer, probe or not.
		req, err := http.NewRequest("GET", s.HTTPURL("/readyz"), nil)
		require.NoError(t, err)
		req.Host = "unknown.example"
		if resp, err := s.Client.Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("a foreign Host got an answer: %d", resp.StatusCode)
		}
	})

	t.Run("nginx health is the app's liveness, for any host", func(t *testing.T) {
		for _, host := range []string{"localhost", "unknown.example", "127.0.0.1"} {
			before := len(s.upstream.requests(config.LivenessPath))
			req, err := http.NewRequest("GET", s.HTTPURL(HealthPath), nil)
			require.NoError(t, err)
			req.Host = host
			resp, err := s.Client.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, host)
			assert.Equal(t, "upstream:"+config.LivenessPath, string(body), host)
			assert.Len(t, s.upstream.requests(config.LivenessPath), before+1, "%s: asked of the app", host)
		}
	})

	t.Run("ACME challenge is served over HTTP, not redirected", func(t *testing.T) {
		resp, body := s.Do(t, "GET", s.HTTPURL("/.well-known/acme-challenge/tok123"), nil, nil)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "tok123.thumbprint", body)
	})

	t.Run("unknown host gets no answer", func(t *testing.T) {
		for _, url := range []string{s.HTTPURL("/"), s.HTTPSURL("/")} {
			req, err := http.NewRequest("GET", url, nil)
			require.NoError(t, err)
			req.Host = "evil.example"
			resp, err := s.Client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			require.Error(t, err, url)
		}
	})

	t.Run("TLS handshake refused for unknown SNI, no SNI and TLS 1.1", func(t *testing.T) {
		addr := "127.0.0.1:" + strconv.Itoa(s.HTTPSPort)
		for name, cfg := range map[string]*tls.Config{
			"unknown SNI": {ServerName: "evil.example", InsecureSkipVerify: true},
			"no SNI":      {InsecureSkipVerify: true},
			"TLS 1.1":     {ServerName: "localhost", RootCAs: s.pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
		} {
			conn, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				conn.Close()
			}
			// "remote error": nginx refused, not the Go client.
			assert.ErrorContains(t, err, "remote error", name)
		}
		for name, version := range map[string]uint16{"TLS 1.2": tls.VersionTLS12, "TLS 1.3": tls.VersionTLS13} {
			conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: s.pool, MinVersion: version, MaxVersion: version})
			require.NoError(t, err, name)
			assert.Equal(t, version, conn.ConnectionState().Version)
			conn.Close()
		}
	})

	var proxiedID string
	t.Run("upstream gets the real client and forged headers are replaced", func(t *testing.T) {
		resp, body := s.Do(t, "GET", s.HTTPSURL("/api/things?q=1"), nil, map[string]string{
			"X-Forwarded-For":   "6.6.6.6",
			"X-Forwarded-Proto": "http",
			"X-Forwarded-Host":  "evil.example",
			"X-Forwarded-Port":  "1",
			// Not of the app's form: replaced, never passed on.
			"X-Request-ID": "attacker chosen; id=1",
			"Forwarded":    "for=6.6.6.6;proto=http",
		})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "upstream:/api/things", body)
		assertEdgeHeaders(t, resp)

		seen := s.upstream.requests("/api/things")
		require.Len(t, seen, 1)
		got := seen[0]
		assert.Equal(t, "/api/things?q=1", got.requestURI)
		assert.Equal(t, "localhost", got.host)
		assert.Equal(t, []string{"127.0.0.1"}, got.header.Values("X-Forwarded-For"))
		assert.Equal(t, []string{"https"}, got.header.Values("X-Forwarded-Proto"))
		assert.Equal(t, []string{"localhost"}, got.header.Values("X-Forwarded-Host"))
		assert.Equal(t, []string{strconv.Itoa(s.HTTPSPort)}, got.header.Values("X-Forwarded-Port"))
		assert.Empty(t, got.header.Values("Forwarded"))
		proxiedID = got.header.Get("X-Request-Id")
		assert.Regexp(t, hexID, proxiedID)
		assert.Equal(t, proxiedID, resp.Header.Get("X-Request-Id"), "the client sees the ID the app logged")
	})

	t.Run("the edge replaces the app's copies of its headers and drops banners", func(t *testing.T) {
		resp, _ := s.Do(t, "GET", s.HTTPSURL("/leaky"), nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assertEdgeHeaders(t, resp)
		seen := s.upstream.requests("/leaky")
		require.Len(t, seen, 1)
		assert.Equal(t, seen[0].header.Get("X-Request-Id"), resp.Header.Get("X-Request-Id"))
	})

	t.Run("static files", func(t *testing.T) {
		cases := []struct {
			path, body, contentType, cacheControl string
		}{
			{"/static/hello.txt", "static-ok", "text/plain", "no-cache"},
			{"/static/app.0123abcd.css", "body{}", "text/css", "public, max-age=31536000, immutable"},
		}
		for _, tc := range cases {
			resp, body := s.Do(t, "GET", s.HTTPSURL(tc.path), nil, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, tc.path)
			assert.Equal(t, tc.body, body)
			assert.Equal(t, tc.contentType, resp.Header.Get("Content-Type"))
			assert.Equal(t, tc.cacheControl, resp.Header.Get("Cache-Control"))
			assertEdgeHeaders(t, resp)
		}
		resp, _ := s.Do(t, "GET", s.HTTPSURL("/static/missing.css"), nil, nil)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		assertEdgeHeaders(t, resp)
		assert.Empty(t, s.upstream.requests("/static/hello.txt"), "static files never reach the app")
	})

	t.Run("evidence is sent by nginx only after the app's X-Accel-Redirect", func(t *testing.T) {
		resp, body := s.Do(t, "GET", s.HTTPSURL(evidencePath), nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		assert.Equal(t, evidenceContent, body, "the file, byte for byte")
		require.Len(t, s.upstream.requests(evidencePath), 1, "the app authorised it")
		// The app's headers of the download pass through the redirect
		// (its type, not the one nginx would give a .txt name), once each.
		assert.Equal(t, []string{"text/csv; charset=utf-8"}, resp.Header.Values("Content-Type"))
		assert.Equal(t, []string{`attachment; filename="cranes.csv"`}, resp.Header.Values("Content-Disposition"))
		assert.Equal(t, []string{"private, no-store"}, resp.Header.Values("Cache-Control"))
		assert.Empty(t, resp.Header.Values("X-Accel-Redirect"), "the internal target never reaches the client")
		assert.Empty(t, resp.Header.Values("X-Cache-Status"), "no edge cache")
		assertEdgeHeaders(t, resp, "Content-Security-Policy", config.AttachmentCSP)

		// nginx, not the app, answers ranges of a large file.
		resp, body = s.Do(t, "GET", s.HTTPSURL(evidencePath), nil, map[string]string{"Range": "bytes=0-3"})
		assert.Equal(t, http.StatusPartialContent, resp.StatusCode)
		assert.Equal(t, evidenceContent[:4], body)

		// The access log has the path the client asked for; the stored
		// name the app redirected to appears nowhere in the line.
		line := s.logLine(t, resp.Header.Get("X-Request-Id"))
		assert.Equal(t, evidencePath, line["path"])
		raw, err := json.Marshal(line)
		require.NoError(t, err)
		assert.NotContains(t, string(raw), evidenceName)
		assert.NotContains(t, string(raw), "_protected_media")
	})

	t.Run("the media root is not public", func(t *testing.T) {
		// The old public location is gone: the app gets the path (and,
		// having no such route, answers 404).
		resp, body := s.Do(t, "GET", s.HTTPSURL("/media/"+evidenceName), nil, nil)
		assert.Equal(t, "upstream:/media/"+evidenceName, body)
		assert.Len(t, s.upstream.requests("/media/"+evidenceName), 1)
		assertEdgeHeaders(t, resp)
		// The internal location answers no client, however it is spelled.
		for _, path := range []string{
			config.ProtectedMediaPrefix + evidenceName, "/%5Fprotected_media/" + evidenceName,
			"/_protected_media//" + evidenceName, "/x/.." + config.ProtectedMediaPrefix + evidenceName,
		} {
			req, err := http.NewRequest("GET", s.HTTPSURL("/"), nil)
			require.NoError(t, err)
			req.URL.Opaque = path // sent byte for byte
			resp, err := s.Client.Do(req)
			require.NoError(t, err, path)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusNotFound, resp.StatusCode, path)
			assert.NotContains(t, string(body), "Bugeranus", path)
			assertEdgeHeaders(t, resp, "Content-Security-Policy", config.AttachmentCSP)
		}
		assert.Empty(t, s.upstream.requests(config.ProtectedMediaPrefix+evidenceName), "nginx answered itself")
	})

	t.Run("an X-Accel-Redirect out of the media root is refused", func(t *testing.T) {
		resp, body := s.Do(t, "GET", s.HTTPSURL(evidenceEscapePath), nil, nil)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		assert.NotContains(t, body, "TOP-SECRET")
	})

	t.Run("no path escapes the static and media folders", func(t *testing.T) {
		for _, path := range []string{
			"/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt",
			"/static../secret.txt", "/static..%2fsecret.txt", "/staticx/../secret.txt",
			"/media/../secret.txt", "/media../secret.txt", "/static/../../www/secret.txt",
		} {
			req, err := http.NewRequest("GET", s.HTTPSURL("/"), nil)
			require.NoError(t, err)
			req.URL.Opaque = path // sent byte for byte, never cleaned by the client
			resp, err := s.Client.Do(req)
			require.NoError(t, err, path)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.NotContains(t, string(body), "TOP-SECRET", path)
			assert.Contains(t, []int{http.StatusOK, http.StatusBadRequest, http.StatusNotFound}, resp.StatusCode, path)
			if resp.StatusCode == http.StatusOK {
				assert.True(t, strings.HasPrefix(string(body), "upstream:"), "%s: 200 only from the app, got %q", path, body)
			}
		}
		// The trailing-slash trap would have served /static../secret.txt
		// from disk; here the app got it, byte for byte.
		seen := s.upstream.requests("/static../secret.txt")
		require.NotEmpty(t, seen)
		assert.Equal(t, "/static../secret.txt", seen[0].requestURI)
	})

	t.Run("bodies over the upload limit stop at the edge with 413", func(t *testing.T) {
		resp, _ := s.Do(t, "POST", s.HTTPSURL("/upload/exact"), bytes.NewReader(make([]byte, liveBodyLimit)), nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		seen := s.upstream.requests("/upload/exact")
		require.Len(t, seen, 1)
		assert.Equal(t, liveBodyLimit, seen[0].bodyLen)

		for name, body := range map[string]io.Reader{
			"/upload/with-length": bytes.NewReader(make([]byte, liveBodyLimit+1)),
			"/upload/chunked":     io.MultiReader(bytes.NewReader(make([]byte, liveBodyLimit+1))), // no length: chunked
		} {
			resp, respBody := s.Do(t, "POST", s.HTTPSURL(name), body, nil)
			assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, name)
			assertProblem(t, resp, respBody, http.StatusRequestEntityTooLarge)
			assertEdgeHeaders(t, resp)
		}
		// A length over the limit is refused before the app sees the
		// request. A chunked body streams to the app as it arrives (request
		// bodies are not buffered), so the app may see the request begin:
		// nginx cuts it off at the limit, and the app never gets it whole.
		assert.Empty(t, s.upstream.requests("/upload/with-length"), "a body whose length is over the limit reached the app")
		for _, seen := range s.upstream.requests("/upload/chunked") {
			assert.LessOrEqual(t, seen.bodyLen, liveBodyLimit, "the app got more of the chunked body than the limit")
		}
	})

	t.Run("concurrent maximum-size uploads stream to the app: no body is buffered in the proxy", func(t *testing.T) {
		// Each is 4 times client_body_buffer_size: a buffered one would be
		// written to the client-body temp files (the container's tmpfs) and
		// nginx would warn about it.
		const uploads = 16
		var wg sync.WaitGroup
		statuses := make([]int, uploads)
		for i := range uploads {
			wg.Go(func() {
				req, err := http.NewRequest("POST", s.HTTPSURL(fmt.Sprintf("/upload/concurrent-%d", i)), bytes.NewReader(make([]byte, liveBodyLimit)))
				if err != nil {
					return
				}
				if resp, err := s.Client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					statuses[i] = resp.StatusCode
				}
			})
		}
		wg.Wait()
		for i := range uploads {
			assert.Equal(t, http.StatusOK, statuses[i], "upload %d", i)
			seen := s.upstream.requests(fmt.Sprintf("/upload/concurrent-%d", i))
			if assert.Len(t, seen, 1) {
				assert.Equal(t, liveBodyLimit, seen[0].bodyLen, "upload %d arrived whole", i)
			}
		}
		data, err := os.ReadFile(s.logPath)
		require.NoError(t, err)
		assert.Zero(t, strings.Count(string(data), "a client request body is buffered to a temporary file"), "nginx buffered request bodies to its temp files")
	})

	t.Run("login POSTs get 429 after the burst; GETs and other paths do not", func(t *testing.T) {
		var statuses []int
		var last *http.Response
		var lastBody string
		for range 5 {
			last, lastBody = s.Do(t, "POST", s.HTTPSURL(DefaultLoginPath), strings.NewReader("{}"), nil)
			statuses = append(statuses, last.StatusCode)
		}
		// rate 1r/m, burst 2: one request plus the burst pass.
		assert.Equal(t, []int{200, 200, 200, 429, 429}, statuses)
		assertProblem(t, last, lastBody, http.StatusTooManyRequests)
		assert.Equal(t, "60", last.Header.Get("Retry-After"))
		assertEdgeHeaders(t, last)
		assert.Len(t, s.upstream.requests(DefaultLoginPath), 3, "refused attempts never reach the app")

		for range 3 {
			resp, _ := s.Do(t, "GET", s.HTTPSURL(DefaultLoginPath), nil, nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode, "GET is not limited")
			resp, _ = s.Do(t, "POST", s.HTTPSURL("/api/other"), strings.NewReader("{}"), nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode, "other POSTs are not limited")
		}
	})

	t.Run("access log is one JSON object per request with the request ID", func(t *testing.T) {
		require.NotEmpty(t, proxiedID)
		found := s.logLine(t, proxiedID)
		assert.Equal(t, "/api/things", found["path"], "logged without the query string")
		assert.Equal(t, float64(200), found["status"])
		assert.Equal(t, "127.0.0.1", found["remote_addr"])
		assert.Equal(t, "attacker chosen; id=1", found["client_request_id"], "the ID the client sent, beside the one used")
	})

	t.Run("the public API micro-cache keeps public answers only, and never for credentials", func(t *testing.T) {
		get := func(path string, header map[string]string) *http.Response {
			resp, _ := s.Do(t, "GET", s.HTTPSURL(path), nil, header)
			return resp
		}
		// A public answer: the first request fills the cache, the repeats
		// (within the second) are nginx's, with the full header set and no
		// one's rate-limit state.
		first := get("/api/public/open", nil)
		assert.Equal(t, "MISS", first.Header.Get("X-Cache-Status"))
		assert.Empty(t, first.Header.Get("RateLimit"))
		for range 3 {
			again := get("/api/public/open", nil)
			assert.Equal(t, "HIT", again.Header.Get("X-Cache-Status"))
			assertEdgeHeaders(t, again)
			assert.Empty(t, again.Header.Get("RateLimit"), "a cached answer is nobody's quota")
		}
		assert.Len(t, s.upstream.requests("/api/public/open"), 1, "the repeats never reached the app")
		// Another origin is another answer (its CORS headers differ).
		assert.Equal(t, "MISS", get("/api/public/open", map[string]string{"Origin": "https://portal.example.org"}).Header.Get("X-Cache-Status"))
		// A request with credentials neither reads nor fills the cache.
		for range 2 {
			assert.Equal(t, "BYPASS", get("/api/public/open", map[string]string{"Authorization": "Bearer x"}).Header.Get("X-Cache-Status"))
		}
		assert.Len(t, s.upstream.requests("/api/public/open"), 4)
		// Private answers, answers that set a cookie and errors are never kept.
		for _, path := range []string{"/api/public/private", "/api/public/cookie", "/api/public/error"} {
			for range 3 {
				assert.NotEqual(t, "HIT", get(path, nil).Header.Get("X-Cache-Status"), path)
			}
			assert.Len(t, s.upstream.requests(path), 3, "%s reached the app every time", path)
		}
		// Nothing outside the public prefix is cached.
		for range 2 {
			assert.Empty(t, get("/api/other", nil).Header.Get("X-Cache-Status"))
		}
	})

	t.Run("a client's well-formed request ID is kept end to end", func(t *testing.T) {
		const id = "portal-trace.42_A"
		resp, _ := s.Do(t, "GET", s.HTTPSURL("/api/traced"), nil, map[string]string{"X-Request-ID": id})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, id, resp.Header.Get("X-Request-Id"), "the client sees its own ID")
		seen := s.upstream.requests("/api/traced")
		require.Len(t, seen, 1)
		assert.Equal(t, id, seen[0].header.Get("X-Request-Id"), "the app gets it")
		line := s.logLine(t, id)
		assert.Equal(t, "", line["client_request_id"], "nothing beside it: the IDs are the same")
		// One character too many is not the app's form: replaced.
		long := strings.Repeat("x", config.MaxRequestIDLen+1)
		resp, _ = s.Do(t, "GET", s.HTTPSURL("/api/traced"), nil, map[string]string{"X-Request-ID": long})
		assert.Regexp(t, hexID, resp.Header.Get("X-Request-Id"))
	})

	t.Run("connections to the app are kept and reused", func(t *testing.T) {
		// One worker process (the live site's setting): its idle upstream
		// connections serve the requests that follow.
		before := s.upstreamConns.Load()
		const requests = 50
		for range requests {
			resp, _ := s.Do(t, "GET", s.HTTPSURL("/api/things"), nil, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode)
		}
		opened := s.upstreamConns.Load() - before
		assert.LessOrEqual(t, opened, int64(2), "%d sequential requests opened %d connections to the app", requests, opened)
	})

	t.Run("app too slow: 504 in the problem+json shape", func(t *testing.T) {
		resp, body := s.Do(t, "GET", s.HTTPSURL("/api/slow"), nil, nil)
		assert.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
		assertProblem(t, resp, body, http.StatusGatewayTimeout)
		assertEdgeHeaders(t, resp)
	})

	t.Run("app down: 502 in the problem+json shape", func(t *testing.T) {
		s.upstreamServer.Close()
		resp, body := s.Do(t, "GET", s.HTTPSURL("/api/things"), nil, nil)
		assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
		assertProblem(t, resp, body, http.StatusBadGateway)
		assertEdgeHeaders(t, resp)
	})
}

// logLine returns nginx's access log line of the request with that ID.
// nginx writes the line in the request's log phase, after the response has
// left: a client can read its answer before the line is there, so this
// waits for it (briefly: nginx's log is unbuffered here).
func (s *liveSite) logLine(t *testing.T, requestID string) map[string]any {
	t.Helper()
	var found map[string]any
	require.Eventually(t, func() bool {
		found = s.findLogLine(requestID)
		return found != nil
	}, 5*time.Second, 20*time.Millisecond, "no access log line for request %s", requestID)
	return found
}

// findLogLine is the last line with that request ID, or nil (also while
// the log file cannot be read).
func (s *liveSite) findLogLine(requestID string) map[string]any {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return nil
	}
	var found map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var entry map[string]any
		if json.Unmarshal(sc.Bytes(), &entry) == nil && entry["request_id"] == requestID {
			found = entry
		}
	}
	return found
}

// assertProblem checks an nginx-made error has the app's problem shape.
func assertProblem(t *testing.T, resp *http.Response, body string, status int) {
	t.Helper()
	assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &p), body)
	assert.Equal(t, "about:blank", p.Type)
	assert.Equal(t, http.StatusText(status), p.Title)
	assert.Equal(t, status, p.Status)
	assert.NotEmpty(t, p.Detail)
}

// The health path follows the app: 200 while nginx reaches it, 502 as soon
// as nothing listens at its address, 504 when it does not answer within
// the health path's 2 s, and 200 again once it is back at that address.
// Docker's health check gives up after 3 s: each answer comes before.
func TestLiveNginxHealthFollowsTheApp(t *testing.T) {
	dir := nginxtest.NobodyDir(t)
	tmp := filepath.Join(dir, "tmp")
	require.NoError(t, os.Mkdir(tmp, 0o700))
	nginxtest.ChownNobody(t, tmp)

	var hang atomic.Bool
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, "alive:"+r.URL.Path)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	serve := func(ln net.Listener) *httptest.Server {
		srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: app}}
		srv.Start()
		t.Cleanup(srv.Close)
		return srv
	}
	srv := serve(ln)

	p := devParams()
	p.ListenAddress = "127.0.0.1"
	p.HTTPPort = testsupport.FreePort(t)
	p.Upstream = addr
	p.WorkerProcesses = 1
	p.PidPath = filepath.Join(tmp, "nginx.pid")
	p.TempDir = tmp
	conf, err := Render(p)
	require.NoError(t, err)
	confPath := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o644))
	s := nginxtest.Site{HTTPPort: p.HTTPPort, Client: nginxtest.NewClient(nil, nil)}
	logPath := nginxtest.StartNginx(t, dir, confPath, s.HTTPURL(HealthPath), s.Client)

	health := func(t *testing.T) (int, string, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, body := s.Do(t, "GET", "http://127.0.0.1:"+strconv.Itoa(p.HTTPPort)+HealthPath, nil, nil)
		return resp.StatusCode, body, time.Since(start)
	}
	log := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	status, body, _ := health(t)
	require.Equal(t, http.StatusOK, status, log())
	assert.Equal(t, "alive:"+config.LivenessPath, body)

	hang.Store(true)
	status, _, took := health(t)
	assert.Equal(t, http.StatusGatewayTimeout, status, "the app does not answer:\n%s", log())
	assert.Less(t, took, 3*time.Second, "within the health check's timeout")
	t.Logf("no answer from the app: %d after %s", status, took.Round(time.Millisecond))
	hang.Store(false)

	srv.Close()
	status, _, took = health(t)
	assert.Equal(t, http.StatusBadGateway, status, "nothing listens at the app's address:\n%s", log())
	assert.Less(t, took, 3*time.Second)
	t.Logf("the app gone: %d after %s", status, took.Round(time.Millisecond))

	ln, err = net.Listen("tcp", addr)
	require.NoError(t, err, "the app back at its address")
	serve(ln)
	status, body, _ = health(t)
	assert.Equal(t, http.StatusOK, status, log())
	assert.Equal(t, "alive:"+config.LivenessPath, body)
}
