package proxy_test

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/proxy"
)

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

// chain wires the package's middlewares in their documented order.
func chain(t testing.TB, trusted []string, next http.Handler) http.Handler {
	return proxy.Forwarded(mustPrefixes(t, trusted...))(
		proxy.AllowedHosts([]string{"www.example.org"}, isProbe, slog.New(slog.NewJSONHandler(io.Discard, nil)))(
			proxy.RequireHTTPS(proxy.HTTPSOptions{Exempt: isProbe, IsAPI: isAPI})(next)))
}

// bodyTouched records whether the final handler ran or the body was read.
type bodyTouched struct {
	handlerRan bool
	bodyRead   bool
}

type trackingReader struct {
	io.Reader
	touched *bodyTouched
}

func (r trackingReader) Read(p []byte) (int, error) {
	r.touched.bodyRead = true
	return r.Reader.Read(p)
}

func TestRequireHTTPS(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		target   string
		remote   string
		host     string
		tls      bool
		header   http.Header
		status   int
		location string
	}{
		{name: "plain GET redirects to the same host, path and query", method: http.MethodGet, target: "/reports/2026?site=12&q=a%20b",
			status: http.StatusMovedPermanently, location: "https://www.example.org/reports/2026?site=12&q=a%20b"},
		{name: "plain HEAD redirects", method: http.MethodHead, target: "/reports",
			status: http.StatusMovedPermanently, location: "https://www.example.org/reports"},
		{name: "explicit port 80 dropped from redirect", method: http.MethodGet, target: "/", host: "www.example.org:80",
			status: http.StatusMovedPermanently, location: "https://www.example.org/"},
		{name: "other explicit port kept", method: http.MethodGet, target: "/", host: "www.example.org:8443",
			status: http.StatusMovedPermanently, location: "https://www.example.org:8443/"},
		{name: "double slash path stays a path on our host", method: http.MethodGet, target: "//evil.example/x",
			status: http.StatusMovedPermanently, location: "https://www.example.org//evil.example/x"},
		{name: "plain POST refused", method: http.MethodPost, target: "/observations", status: http.StatusForbidden},
		{name: "plain PUT refused", method: http.MethodPut, target: "/observations/1", status: http.StatusForbidden},
		{name: "plain API GET refused, not redirected", method: http.MethodGet, target: "/api/v1/sites", status: http.StatusForbidden},
		{name: "plain API POST refused", method: http.MethodPost, target: "/api/v1/sites", status: http.StatusForbidden},
		{name: "liveness probe over HTTP passes", method: http.MethodGet, target: "/healthz", host: "10.1.2.3:8080", status: http.StatusOK},
		{name: "readiness probe over HTTP passes", method: http.MethodGet, target: "/readyz", host: "10.1.2.3:8080", status: http.StatusOK},
		{name: "trusted proxy says https", method: http.MethodPost, target: "/api/v1/sites", remote: "10.0.0.5:4000",
			header: http.Header{"X-Forwarded-Proto": {"https"}}, status: http.StatusOK},
		{name: "trusted proxy says http", method: http.MethodGet, target: "/", remote: "10.0.0.5:4000", tls: true,
			header: http.Header{"X-Forwarded-Proto": {"http"}}, status: http.StatusMovedPermanently, location: "https://www.example.org/"},
		{name: "untrusted peer claiming https is still http", method: http.MethodGet, target: "/reports", remote: "203.0.113.9:4000",
			header: http.Header{"X-Forwarded-Proto": {"https"}}, status: http.StatusMovedPermanently, location: "https://www.example.org/reports"},
		{name: "untrusted peer claiming https cannot reach the API", method: http.MethodPost, target: "/api/v1/sites", remote: "203.0.113.9:4000",
			header: http.Header{"X-Forwarded-Proto": {"https"}}, status: http.StatusForbidden},
		{name: "direct TLS passes", method: http.MethodPost, target: "/observations", tls: true, status: http.StatusOK},
		{name: "redirect uses the trusted public host", method: http.MethodGet, target: "/a?b=c", remote: "10.0.0.5:4000", host: "app:8080",
			header: http.Header{"X-Forwarded-Host": {"www.example.org"}}, status: http.StatusMovedPermanently, location: "https://www.example.org/a?b=c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var touched bodyTouched
			h := chain(t, []string{"10.0.0.0/8"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				touched.handlerRan = true
				_, _ = w.Write([]byte("ok"))
			}))
			req := httptest.NewRequest(tt.method, "/", trackingReader{strings.NewReader(`{"a":1}`), &touched})
			req.URL = mustURL(t, tt.target)
			req.RequestURI = tt.target
			req.Host = "www.example.org"
			if tt.host != "" {
				req.Host = tt.host
			}
			if tt.remote != "" {
				req.RemoteAddr = tt.remote
			}
			if tt.tls {
				req.TLS = &tls.ConnectionState{}
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			switch tt.status {
			case http.StatusOK:
				assert.Equal(t, http.StatusOK, rec.Code)
				assert.True(t, touched.handlerRan)
			case http.StatusMovedPermanently:
				assert.Equal(t, http.StatusMovedPermanently, rec.Code)
				assert.Equal(t, tt.location, rec.Header().Get("Location"))
				assert.False(t, touched.handlerRan)
			case http.StatusForbidden:
				d := requireProblem(t, rec, http.StatusForbidden)
				assert.Contains(t, d.Detail, "HTTPS is required")
				assert.Empty(t, rec.Header().Get("Location"), "never redirected")
				assert.False(t, touched.handlerRan, "nothing of the request processed")
				assert.False(t, touched.bodyRead, "body not read")
			default:
				t.Fatalf("unexpected want status %d", tt.status)
			}
		})
	}
}

func mustURL(t testing.TB, target string) *url.URL {
	t.Helper()
	u, err := url.ParseRequestURI(target)
	require.NoError(t, err)
	return u
}

// RequireHTTPS alone (no allowlist in front) still refuses hosts that would
// change the redirect's authority, and never copies an absolute-form or
// opaque request target's authority into Location.
func TestRequireHTTPSDefensiveHostCheck(t *testing.T) {
	tests := []struct {
		name     string
		host     string
		target   *url.URL
		status   int
		location string
	}{
		{name: "slash", host: "evil.example/x", status: http.StatusBadRequest},
		{name: "backslash", host: `evil.example\x`, status: http.StatusBadRequest},
		{name: "at sign", host: "www.example.org@evil.example", status: http.StatusBadRequest},
		{name: "space", host: "www.example.org evil.example", status: http.StatusBadRequest},
		{name: "tab", host: "www.example.org\tevil.example", status: http.StatusBadRequest},
		{name: "empty", host: "", status: http.StatusBadRequest},
		{name: "absolute-form target", host: "www.example.org", target: &url.URL{Scheme: "http", Host: "evil.example", Path: "/p", RawQuery: "q=1"},
			status: http.StatusMovedPermanently, location: "https://www.example.org/p?q=1"},
		{name: "opaque target", host: "www.example.org", target: &url.URL{Scheme: "http", Opaque: ".evil.example"},
			status: http.StatusMovedPermanently, location: "https://www.example.org/"},
		{name: "asterisk target", host: "www.example.org", target: &url.URL{Path: "*"},
			status: http.StatusMovedPermanently, location: "https://www.example.org/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := proxy.RequireHTTPS(proxy.HTTPSOptions{})(okHandler)
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Host = tt.host
			if tt.target != nil {
				req.URL = tt.target
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tt.status == http.StatusBadRequest {
				requireProblem(t, rec, http.StatusBadRequest)
				assert.Empty(t, rec.Header().Get("Location"))
				return
			}
			assert.Equal(t, tt.status, rec.Code)
			assert.Equal(t, tt.location, rec.Header().Get("Location"))
		})
	}
}

// Over a real connection: the browser-visible result of the whole chain.
func TestRequireHTTPSOverRealConnection(t *testing.T) {
	tests := []struct {
		name     string
		trusted  []string
		method   string
		path     string
		proto    string
		status   int
		location string
	}{
		{name: "GET redirected", trusted: []string{"10.0.0.0/8"}, method: http.MethodGet, path: "/reports?x=1",
			status: http.StatusMovedPermanently, location: "https://www.example.org/reports?x=1"},
		{name: "POST refused", trusted: []string{"10.0.0.0/8"}, method: http.MethodPost, path: "/observations", status: http.StatusForbidden},
		{name: "API refused", trusted: []string{"10.0.0.0/8"}, method: http.MethodGet, path: "/api/v1/sites", status: http.StatusForbidden},
		{name: "spoofed proto from untrusted peer", trusted: []string{"10.0.0.0/8"}, method: http.MethodGet, path: "/reports", proto: "https",
			status: http.StatusMovedPermanently, location: "https://www.example.org/reports"},
		{name: "proto from trusted proxy", trusted: []string{"127.0.0.1"}, method: http.MethodPost, path: "/api/v1/sites", proto: "https", status: http.StatusOK},
		{name: "probe", trusted: []string{"10.0.0.0/8"}, method: http.MethodGet, path: "/healthz", status: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(chain(t, tt.trusted, okHandler))
			defer srv.Close()
			client := srv.Client()
			client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader("{}"))
			require.NoError(t, err)
			if tt.path != "/healthz" {
				req.Host = "www.example.org"
			}
			if tt.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			resp, err := client.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tt.status, resp.StatusCode)
			assert.Equal(t, tt.location, resp.Header.Get("Location"))
			if tt.status == http.StatusForbidden {
				assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			}
		})
	}
}
