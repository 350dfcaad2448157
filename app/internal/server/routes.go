package server

import (
	_ "embed"
	"encoding/json"
	"net/http"

	"github.com/nbms-deploy/nbms/app/internal/problem"
)

//go:embed static/index.html
var landingHTML []byte

// landingPage answers GET / with a small static page. A host whose root is
// 404 cannot even be graded by header scanners (MDN Observatory).
func landingPage() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(landingHTML)
	})
}

// publicAPIIndex lists the public API so a client can discover it.
func publicAPIIndex() http.Handler {
	body, _ := json.Marshal(map[string]any{
		"name": "NBMS public API",
		"links": map[string]string{
			"indicators": PublicAPIPrefix + "indicators",
			"sites":      PublicAPIPrefix + "sites",
		},
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// jsonErrors answers the mux's own refusals (no route: 404; wrong method:
// 405 with Allow) as problem+json instead of net/http's text/plain.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			// Serve through the mux, not h: only ServeHTTP fills in the
			// pattern's path values ({code}) on the request.
			mux.ServeHTTP(w, r)
			return
		}
		// The mux's fallback writes only a status, an Allow header and a
		// text body; capture the first two and answer in JSON.
		probe := &statusProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.status == 0 || probe.status == http.StatusMovedPermanently || probe.status == http.StatusTemporaryRedirect || probe.status == http.StatusPermanentRedirect {
			// A redirect (path cleaning, trailing slash): let the mux answer.
			h.ServeHTTP(w, r)
			return
		}
		if allow := probe.header.Values("Allow"); len(allow) > 0 {
			w.Header()["Allow"] = allow
		}
		problem.Write(w, probe.status, "")
	})
}

// statusProbe is a ResponseWriter that records the status and headers and
// discards the body.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
func (p *statusProbe) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
