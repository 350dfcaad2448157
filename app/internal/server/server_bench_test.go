package server_test

// The cost of the whole middleware chain against the same trivial handler
// served bare. Run: go test -run '^$' -bench . -benchmem ./app/internal/server
// Compare the ns/op of the Chain and Bare variants of each pair; the
// loopback pair is what a client sees, the in-process pair isolates the
// middleware's own work.

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/headers"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/app/internal/server"
)

func trivial(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true}`))
}

func benchHandlers(b *testing.B) (chain, bare http.Handler) {
	s, err := config.Parse(map[string]string{
		"NBMS_ENV": "prod", "SECRET_KEY": "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj",
		"DATABASE_URL": "postgres://u@127.0.0.1/test", "REDIS_URL": "redis://127.0.0.1:6379/0",
		"ALLOWED_HOSTS": "nbms.example.org", "CSRF_TRUSTED_ORIGINS": "https://nbms.example.org",
		"CORS_ALLOWED_ORIGINS": "https://portal.example.org", "TRUSTED_PROXY_CIDRS": "127.0.0.1/32",
	})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	chain, err = server.New(server.Deps{
		Settings: s, Logger: logger, Health: health.New(health.Options{}),
		Mount: func(mux *http.ServeMux) { mux.HandleFunc("GET /api/public/ping", trivial) },
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/public/ping", trivial)
	return chain, mux
}

func newRequest() *http.Request {
	r := httptest.NewRequest("GET", "http://nbms.example.org/api/public/ping", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("X-Forwarded-Proto", "https")
	r.Header.Set("X-Forwarded-For", "198.51.100.7")
	r.Header.Set("Origin", "https://portal.example.org")
	return r
}

func benchInProcess(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, newRequest())
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
	}
}

func BenchmarkInProcessBare(b *testing.B) {
	_, bare := benchHandlers(b)
	benchInProcess(b, bare)
}

func BenchmarkInProcessChain(b *testing.B) {
	chain, _ := benchHandlers(b)
	benchInProcess(b, chain)
}

func benchLoopback(b *testing.B, h http.Handler) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	req, err := http.NewRequest("GET", srv.URL+"/api/public/ping", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Host = "nbms.example.org"
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-For", "198.51.100.7")
	req.Header.Set("Origin", "https://portal.example.org")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
}

func BenchmarkLoopbackBare(b *testing.B) {
	_, bare := benchHandlers(b)
	benchLoopback(b, bare)
}

// BenchmarkLoopbackHeadersOnly serves the bare handler with the security
// headers alone: the client must read the same response bytes as from the
// chain, which separates the cost of the headers on the wire from the cost
// of the rest of the middleware.
func BenchmarkLoopbackHeadersOnly(b *testing.B) {
	_, bare := benchHandlers(b)
	benchLoopback(b, headers.Middleware(headers.DefaultPolicy())(bare))
}

func BenchmarkLoopbackChain(b *testing.B) {
	chain, _ := benchHandlers(b)
	benchLoopback(b, chain)
}
