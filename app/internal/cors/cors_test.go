package cors_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/cors"
)

const appOrigin = "https://app.example.org"

var corsHeaders = []string{
	"Access-Control-Allow-Origin",
	"Access-Control-Allow-Credentials",
	"Access-Control-Allow-Methods",
	"Access-Control-Allow-Headers",
	"Access-Control-Expose-Headers",
	"Access-Control-Max-Age",
}

func newServer(t *testing.T, o cors.Options) *httptest.Server {
	t.Helper()
	p, err := cors.New(o)
	require.NoError(t, err)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Reached", r.Method)
		_, _ = io.WriteString(w, "ok")
	})
	srv := httptest.NewServer(p.Handler(ok))
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, srv *httptest.Server, method string, headers map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+"/api/items", nil)
	require.NoError(t, err)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func TestSimpleRequests(t *testing.T) {
	tests := []struct {
		name        string
		credentials bool
		origin      string // "" sends no Origin header
		wantACAO    string // "" means no CORS headers at all
	}{
		{"allowed origin echoed exactly", false, appOrigin, appOrigin},
		{"allowed origin with credentials", true, appOrigin, appOrigin},
		{"second allowed origin", false, "http://localhost:5173", "http://localhost:5173"},
		{"no origin", true, "", ""},
		{"foreign origin", true, "https://evil.example", ""},
		{"allowed origin as subdomain of attacker", true, "https://app.example.org.evil.example", ""},
		{"attacker subdomain of allowed", true, "https://evil.app.example.org", ""},
		{"different case", true, "https://APP.example.org", ""},
		{"different scheme", true, "http://app.example.org", ""},
		{"different port", true, "https://app.example.org:8443", ""},
		{"explicit default port", true, "https://app.example.org:443", ""},
		{"trailing slash", true, "https://app.example.org/", ""},
		{"null origin", true, "null", ""},
		{"prefix of allowed", true, "https://app.example.or", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, cors.Options{
				AllowedOrigins:   []string{appOrigin, "http://localhost:5173"},
				AllowCredentials: tt.credentials,
				ExposedHeaders:   []string{"RateLimit"},
			})
			headers := map[string]string{}
			if tt.origin != "" {
				headers["Origin"] = tt.origin
			}
			resp := do(t, srv, http.MethodGet, headers)

			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "GET", resp.Header.Get("X-Reached"), "CORS never blocks a non-preflight request")
			assert.Equal(t, []string{"Origin"}, resp.Header.Values("Vary"))
			if tt.wantACAO == "" {
				for _, name := range corsHeaders {
					assert.Empty(t, resp.Header.Values(name), name)
				}
				return
			}
			assert.Equal(t, []string{tt.wantACAO}, resp.Header.Values("Access-Control-Allow-Origin"))
			assert.Equal(t, "RateLimit", resp.Header.Get("Access-Control-Expose-Headers"))
			if tt.credentials {
				assert.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
			} else {
				assert.Empty(t, resp.Header.Values("Access-Control-Allow-Credentials"))
			}
		})
	}
}

func TestPreflight(t *testing.T) {
	opts := cors.Options{
		AllowedOrigins:   []string{appOrigin},
		AllowCredentials: true,
		AllowedMethods:   []string{"GET", "POST", "DELETE"},
		AllowedHeaders:   []string{"Content-Type", "Authorization", "X-Request-ID"},
		MaxAge:           10 * time.Minute,
	}
	preflight := func(origin, method, reqHeaders string) map[string]string {
		h := map[string]string{"Origin": origin, "Access-Control-Request-Method": method}
		if reqHeaders != "" {
			h["Access-Control-Request-Headers"] = reqHeaders
		}
		return h
	}
	tests := []struct {
		name    string
		headers map[string]string
		want    int // 204 allowed, 403 refused, 200 passed through
	}{
		{"allowed", preflight(appOrigin, "DELETE", "content-type,x-request-id"), 204},
		{"header names case-insensitive", preflight(appOrigin, "POST", "Content-Type, AUTHORIZATION"), 204},
		{"no requested headers", preflight(appOrigin, "GET", ""), 204},
		{"foreign origin", preflight("https://evil.example", "GET", ""), 403},
		{"origin differs by case", preflight("https://App.example.org", "GET", ""), 403},
		{"method not allowed", preflight(appOrigin, "PUT", ""), 403},
		{"method case-sensitive", preflight(appOrigin, "delete", ""), 403},
		{"header not allowed", preflight(appOrigin, "POST", "content-type,x-evil"), 403},
		{"null origin", preflight("null", "GET", ""), 403},
		{"OPTIONS without request method is not a preflight", map[string]string{"Origin": appOrigin}, 200},
		{"OPTIONS without origin is not a preflight", map[string]string{"Access-Control-Request-Method": "GET"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, opts)
			resp := do(t, srv, http.MethodOptions, tt.headers)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)

			require.Equal(t, tt.want, resp.StatusCode, string(body))
			assert.Contains(t, resp.Header.Values("Vary"), "Origin")
			switch tt.want {
			case http.StatusNoContent:
				assert.Empty(t, resp.Header.Get("X-Reached"), "preflight must not reach the handler")
				assert.Equal(t, appOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
				assert.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
				assert.Equal(t, "GET, POST, DELETE", resp.Header.Get("Access-Control-Allow-Methods"))
				assert.Equal(t, "Content-Type, Authorization, X-Request-ID", resp.Header.Get("Access-Control-Allow-Headers"))
				assert.Equal(t, "600", resp.Header.Get("Access-Control-Max-Age"))
			case http.StatusForbidden:
				assert.Empty(t, resp.Header.Get("X-Reached"))
				assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
				var p struct{ Status int }
				require.NoError(t, json.Unmarshal(body, &p))
				assert.Equal(t, 403, p.Status)
				for _, name := range corsHeaders {
					assert.Empty(t, resp.Header.Values(name), name)
				}
			default:
				assert.Equal(t, "OPTIONS", resp.Header.Get("X-Reached"))
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		o    cors.Options
	}{
		{"empty origin list", cors.Options{}},
		{"wildcard", cors.Options{AllowedOrigins: []string{"*"}}},
		{"null", cors.Options{AllowedOrigins: []string{"null"}}},
		{"no scheme", cors.Options{AllowedOrigins: []string{"app.example.org"}}},
		{"ftp scheme", cors.Options{AllowedOrigins: []string{"ftp://app.example.org"}}},
		{"path", cors.Options{AllowedOrigins: []string{"https://app.example.org/app"}}},
		{"trailing slash", cors.Options{AllowedOrigins: []string{"https://app.example.org/"}}},
		{"query", cors.Options{AllowedOrigins: []string{"https://app.example.org?x=1"}}},
		{"empty query", cors.Options{AllowedOrigins: []string{"https://app.example.org?"}}},
		{"userinfo", cors.Options{AllowedOrigins: []string{"https://u@app.example.org"}}},
		{"wildcard subdomain", cors.Options{AllowedOrigins: []string{"https://*.example.org"}}},
		{"uppercase host", cors.Options{AllowedOrigins: []string{"https://App.example.org"}}},
		{"default port", cors.Options{AllowedOrigins: []string{"https://app.example.org:443"}}},
		{"bad port", cors.Options{AllowedOrigins: []string{"https://app.example.org:99999"}}},
		{"ipv6 zone", cors.Options{AllowedOrigins: []string{"https://[fe80::1%25eth0]"}}},
		{"empty string", cors.Options{AllowedOrigins: []string{""}}},
		{"wildcard method", cors.Options{AllowedOrigins: []string{appOrigin}, AllowedMethods: []string{"*"}}},
		{"method with space", cors.Options{AllowedOrigins: []string{appOrigin}, AllowedMethods: []string{"GET POST"}}},
		{"wildcard header", cors.Options{AllowedOrigins: []string{appOrigin}, AllowedHeaders: []string{"*"}}},
		{"wildcard exposed header", cors.Options{AllowedOrigins: []string{appOrigin}, ExposedHeaders: []string{"*"}}},
		{"negative max age", cors.Options{AllowedOrigins: []string{appOrigin}, MaxAge: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := cors.New(tt.o)
			require.Error(t, err)
			assert.Nil(t, p)
		})
	}
}

func TestNewAccepts(t *testing.T) {
	for _, origin := range []string{appOrigin, "http://localhost:5173", "https://[::1]:8443", "https://xn--bcher-kva.example"} {
		t.Run(origin, func(t *testing.T) {
			p, err := cors.New(cors.Options{AllowedOrigins: []string{origin}})
			require.NoError(t, err)
			assert.NotNil(t, p)
		})
	}
}

// FuzzOriginNeverEchoedOutsideSet proves the core invariant: whatever the
// Origin header and method, Access-Control-Allow-Origin is either absent or
// exactly the request's Origin and a member of the configured set.
func FuzzOriginNeverEchoedOutsideSet(f *testing.F) {
	allowed := map[string]bool{appOrigin: true, "http://localhost:5173": true}
	p, err := cors.New(cors.Options{
		AllowedOrigins:   []string{appOrigin, "http://localhost:5173"},
		AllowCredentials: true,
		AllowedHeaders:   []string{"Content-Type"},
	})
	require.NoError(f, err)
	h := p.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))

	for _, seed := range []string{
		appOrigin, "https://app.example.org.evil.example", "https://APP.example.org",
		"https://app.example.org:443", "null", "*", "", "http://localhost:5173", "http://localhost:5174",
		"https://app.example.org\x00", " https://app.example.org", "https://app.example.org ",
	} {
		f.Add(seed, "GET", true)
		f.Add(seed, "OPTIONS", false)
	}
	f.Fuzz(func(t *testing.T, origin, method string, preflight bool) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if preflight {
			req.Method = http.MethodOptions
			req.Header.Set("Access-Control-Request-Method", method)
		}
		req.Header["Origin"] = []string{origin}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		acao := rec.Header().Values("Access-Control-Allow-Origin")
		if len(acao) == 0 {
			return
		}
		require.Len(t, acao, 1)
		require.True(t, allowed[acao[0]], "echoed %q which is not configured", acao[0])
		require.Equal(t, origin, acao[0])
	})
}
