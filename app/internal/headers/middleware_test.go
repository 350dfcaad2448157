package headers_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/bodylimit"
	"github.com/nbms-deploy/nbms/app/internal/cors"
	"github.com/nbms-deploy/nbms/app/internal/headers"
	"github.com/nbms-deploy/nbms/app/internal/problem"
)

const appOrigin = "https://app.example.org"

// baseline is the exact header set DefaultPolicy must put on every response.
var baseline = map[string]string{
	"Strict-Transport-Security":         "max-age=63072000; includeSubDomains",
	"Content-Security-Policy":           "default-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options":            "nosniff",
	"X-Frame-Options":                   "DENY",
	"Referrer-Policy":                   "no-referrer",
	"Cross-Origin-Opener-Policy":        "same-origin",
	"Cross-Origin-Embedder-Policy":      "require-corp",
	"Cross-Origin-Resource-Policy":      "same-origin",
	"X-Permitted-Cross-Domain-Policies": "none",
	"Cache-Control":                     "no-store",
}

// assertBaseline checks each baseline header is present exactly once with
// its exact value, and nothing discloses the server software.
func assertBaseline(t *testing.T, h http.Header) {
	t.Helper()
	for name, want := range baseline {
		assert.Equal(t, []string{want}, h.Values(name), name)
	}
	pp := h.Values("Permissions-Policy")
	require.Len(t, pp, 1)
	assert.True(t, strings.HasPrefix(pp[0], "accelerometer=(), autoplay=(), camera=()"), pp[0])
	assert.Contains(t, pp[0], "geolocation=()")
	assert.Empty(t, h.Values("Server"))
	assert.Empty(t, h.Values("X-Powered-By"))
	assert.Empty(t, h.Values("Content-Security-Policy-Report-Only"))
	assert.Empty(t, h.Values("X-XSS-Protection"))
}

// recoverer is the smallest panic recovery: the real one lives elsewhere,
// and sits inside the headers middleware like this one.
func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if recover() != nil {
				problem.Write(w, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// newStack wires the middleware in production order around a ServeMux.
func newStack(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	mux.HandleFunc("POST /items", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); bodylimit.IsTooLarge(err) {
			bodylimit.WriteTooLarge(w, 16)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("GET /limited", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		problem.Write(w, http.StatusTooManyRequests, "slow down")
	})
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) {
		panic("boom")
	})
	corsPolicy, err := cors.New(cors.Options{
		AllowedOrigins: []string{appOrigin},
		AllowedMethods: []string{"GET", "POST"},
		AllowedHeaders: []string{"Content-Type"},
	})
	require.NoError(t, err)

	var h http.Handler = recoverer(mux)
	h = bodylimit.Middleware(16)(h)
	h = corsPolicy.Handler(h)
	h = headers.Middleware(headers.DefaultPolicy())(h)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestHeadersOnEveryResponse(t *testing.T) {
	srv := newStack(t)
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		headers    map[string]string
		wantStatus int
	}{
		{"200", "GET", "/ok", "", nil, 200},
		{"201 with body", "POST", "/items", "small", nil, 201},
		{"404 from ServeMux", "GET", "/missing", "", nil, 404},
		{"405 from ServeMux method pattern", "DELETE", "/ok", "", nil, 405},
		{"413 from body limit", "POST", "/items", strings.Repeat("x", 17), nil, 413},
		{"429", "GET", "/limited", "", nil, 429},
		{"500 from recovered panic", "GET", "/panic", "", nil, 500},
		{"CORS preflight 204", "OPTIONS", "/items", "", map[string]string{
			"Origin": appOrigin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
		}, 204},
		{"refused CORS preflight 403", "OPTIONS", "/items", "", map[string]string{
			"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
		}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			require.NoError(t, err)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)

			require.Equal(t, tt.wantStatus, resp.StatusCode)
			assertBaseline(t, resp.Header)
		})
	}
}

func TestStripsServerSoftwareHeaders(t *testing.T) {
	leak := func(w http.ResponseWriter) {
		w.Header().Set("Server", "nginx/1.25.3")
		w.Header().Set("X-Powered-By", "Go/1.26")
	}
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantStatus int
		wantBody   string
	}{
		{"set then Write", func(w http.ResponseWriter, r *http.Request) {
			leak(w)
			_, _ = io.WriteString(w, "hi")
		}, 200, "hi"},
		{"set then WriteHeader", func(w http.ResponseWriter, r *http.Request) {
			leak(w)
			w.WriteHeader(http.StatusAccepted)
		}, 202, ""},
		{"set then return without writing", func(w http.ResponseWriter, r *http.Request) {
			leak(w)
		}, 200, ""},
		{"set then flush via ResponseController", func(w http.ResponseWriter, r *http.Request) {
			leak(w)
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err) // surfaces as a failed request
			}
			_, _ = io.WriteString(w, "streamed")
		}, 200, "streamed"},
		{"set then flush via http.Flusher", func(w http.ResponseWriter, r *http.Request) {
			leak(w)
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "streamed")
		}, 200, "streamed"},
		{"set after 103 Early Hints", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			leak(w)
			_, _ = io.WriteString(w, "late")
		}, 200, "late"},
		{"deadline via ResponseController reaches the real writer", func(w http.ResponseWriter, r *http.Request) {
			leak(w)
			if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
				panic(err)
			}
			_, _ = io.WriteString(w, "ok")
		}, 200, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(headers.Middleware(headers.DefaultPolicy())(tt.handler))
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)

			assert.Equal(t, tt.wantStatus, resp.StatusCode)
			assert.Equal(t, tt.wantBody, string(body))
			assertBaseline(t, resp.Header)
		})
	}
}

// TestHandlersMayOverrideDefaults also proves the shared precomputed values
// are not mutated by one response's changes: the next response is clean.
func TestHandlersMayOverrideDefaults(t *testing.T) {
	srv := httptest.NewServer(headers.Middleware(headers.DefaultPolicy())(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/public":
				w.Header().Set("Cache-Control", "public, max-age=300")
			case "/append":
				w.Header().Add("Cache-Control", "private")
				w.Header().Add("Cross-Origin-Resource-Policy", "cross-origin")
			}
		})))
	defer srv.Close()
	get := func(path string) http.Header {
		resp, err := srv.Client().Get(srv.URL + path)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp.Header
	}

	assert.Equal(t, []string{"public, max-age=300"}, get("/public").Values("Cache-Control"))
	assert.Equal(t, []string{"no-store", "private"}, get("/append").Values("Cache-Control"))
	assertBaseline(t, get("/after"))
}

func TestPolicyVariants(t *testing.T) {
	const csp = "default-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	tests := []struct {
		name   string
		modify func(*headers.Policy)
		want   map[string]string // "" means the header must be absent
	}{
		{"report-only switches the header name", func(p *headers.Policy) { p.CSPReportOnly = true }, map[string]string{
			"Content-Security-Policy":             "",
			"Content-Security-Policy-Report-Only": csp,
		}},
		{"report path adds report-uri and report-to", func(p *headers.Policy) { p.CSPReportPath = "/csp-report" }, map[string]string{
			"Content-Security-Policy": csp + "; report-uri /csp-report; report-to csp-endpoint",
			"Reporting-Endpoints":     `csp-endpoint="/csp-report"`,
		}},
		{"CSP whitespace is normalised", func(p *headers.Policy) { p.CSP = "  default-src   'none' ;; FRAME-ANCESTORS 'none';" }, map[string]string{
			"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
		}},
		{"HSTS zero omits the header", func(p *headers.Policy) {
			p.HSTSMaxAge, p.HSTSIncludeSubdomains = 0, false
		}, map[string]string{"Strict-Transport-Security": ""}},
		{"HSTS preload", func(p *headers.Policy) { p.HSTSPreload = true }, map[string]string{
			"Strict-Transport-Security": "max-age=63072000; includeSubDomains; preload",
		}},
		{"HSTS without subdomains", func(p *headers.Policy) {
			p.HSTSMaxAge, p.HSTSIncludeSubdomains = 365*24*time.Hour, false
		}, map[string]string{"Strict-Transport-Security": "max-age=31536000"}},
		{"empty fields omit headers", func(p *headers.Policy) {
			p.FrameOptions, p.PermissionsPolicy, p.CrossOriginEmbedderPolicy = "", "", ""
		}, map[string]string{"X-Frame-Options": "", "Permissions-Policy": "", "Cross-Origin-Embedder-Policy": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := headers.DefaultPolicy()
			tt.modify(&p)
			require.NoError(t, p.Validate())
			srv := httptest.NewServer(headers.Middleware(p)(http.NotFoundHandler()))
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())

			for name, want := range tt.want {
				if want == "" {
					assert.Empty(t, resp.Header.Values(name), name)
				} else {
					assert.Equal(t, []string{want}, resp.Header.Values(name), name)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*headers.Policy)
		wantErr string // "" means valid
	}{
		{"default is valid", func(p *headers.Policy) {}, ""},
		{"referrer list is valid", func(p *headers.Policy) { p.ReferrerPolicy = "no-referrer, strict-origin-when-cross-origin" }, ""},
		{"all optional headers empty is valid", func(p *headers.Policy) {
			*p = headers.Policy{CSP: "default-src 'none'"}
		}, ""},
		{"unknown referrer token", func(p *headers.Policy) { p.ReferrerPolicy = "no-referer" }, "Referrer-Policy"},
		{"bad token in referrer list", func(p *headers.Policy) { p.ReferrerPolicy = "no-referrer, always" }, `"always"`},
		{"empty token in referrer list", func(p *headers.Policy) { p.ReferrerPolicy = "no-referrer," }, "Referrer-Policy"},
		{"referrer wrong case", func(p *headers.Policy) { p.ReferrerPolicy = "No-Referrer" }, "Referrer-Policy"},
		{"bad COOP", func(p *headers.Policy) { p.CrossOriginOpenerPolicy = "same-site" }, "Cross-Origin-Opener-Policy"},
		{"bad COEP", func(p *headers.Policy) { p.CrossOriginEmbedderPolicy = "require-cors" }, "Cross-Origin-Embedder-Policy"},
		{"bad CORP", func(p *headers.Policy) { p.CrossOriginResourcePolicy = "same-host" }, "Cross-Origin-Resource-Policy"},
		{"bad X-Frame-Options", func(p *headers.Policy) { p.FrameOptions = "ALLOW-FROM https://x" }, "X-Frame-Options"},
		{"empty CSP", func(p *headers.Policy) { p.CSP = "" }, "CSP is empty"},
		{"CSP of separators only", func(p *headers.Policy) { p.CSP = " ; ;" }, "CSP is empty"},
		{"CSP with comma", func(p *headers.Policy) { p.CSP = "default-src 'none', script-src *" }, "comma"},
		{"CSP with newline", func(p *headers.Policy) { p.CSP = "default-src 'none'\r\nX-Evil: 1" }, "control"},
		{"CSP duplicate directive", func(p *headers.Policy) { p.CSP = "default-src 'none'; Default-Src *" }, "twice"},
		{"CSP bad directive name", func(p *headers.Policy) { p.CSP = "default_src 'none'" }, "directive name"},
		{"CSP report-uri and report path", func(p *headers.Policy) {
			p.CSP += "; report-uri /x"
			p.CSPReportPath = "/csp-report"
		}, "report-uri"},
		{"report path relative", func(p *headers.Policy) { p.CSPReportPath = "csp-report" }, "report path"},
		{"report path protocol-relative", func(p *headers.Policy) { p.CSPReportPath = "//evil.example/r" }, "report path"},
		{"report path with semicolon", func(p *headers.Policy) { p.CSPReportPath = "/r; script-src *" }, "report path"},
		{"report path with quote", func(p *headers.Policy) { p.CSPReportPath = `/r"` }, "report path"},
		{"negative HSTS", func(p *headers.Policy) { p.HSTSMaxAge = -time.Second }, "negative"},
		{"fractional HSTS", func(p *headers.Policy) { p.HSTSMaxAge = 1500 * time.Millisecond }, "whole number"},
		{"subdomains without max-age", func(p *headers.Policy) { p.HSTSMaxAge = 0 }, "max-age is zero"},
		{"preload without subdomains", func(p *headers.Policy) {
			p.HSTSPreload, p.HSTSIncludeSubdomains = true, false
		}, "preload"},
		{"preload with short max-age", func(p *headers.Policy) {
			p.HSTSPreload, p.HSTSMaxAge = true, 180*24*time.Hour
		}, "preload"},
		{"permissions policy with newline", func(p *headers.Policy) { p.PermissionsPolicy = "camera=()\n" }, "Permissions-Policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := headers.DefaultPolicy()
			tt.modify(&p)
			err := p.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Panics(t, func() { headers.Middleware(p) }, "an invalid policy must not be served")
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	p := headers.DefaultPolicy()
	p.ReferrerPolicy = "bogus"
	p.CrossOriginOpenerPolicy = "bogus"
	p.CSP = ""
	err := p.Validate()
	require.Error(t, err)
	for _, want := range []string{"Referrer-Policy", "Cross-Origin-Opener-Policy", "CSP is empty"} {
		assert.Contains(t, err.Error(), want)
	}
}

// benchWriter is a minimal ResponseWriter: a fresh header map per request,
// as net/http gives each request, and a discarded body.
type benchWriter struct{ h http.Header }

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) WriteHeader(int)             {}

func BenchmarkMiddleware(b *testing.B) {
	body := []byte(`{"ok":true}`)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	req := httptest.NewRequest(http.MethodGet, "/ok", nil)
	for _, bm := range []struct {
		name string
		h    http.Handler
	}{
		{"bare", handler},
		{"headers", headers.Middleware(headers.DefaultPolicy())(handler)},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bm.h.ServeHTTP(&benchWriter{h: make(http.Header)}, req)
			}
		})
	}
}
