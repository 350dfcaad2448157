package server

import (
	"encoding/json"
	"net/http"

	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/static"
)

// landingPage answers GET / with a small static page. A host whose root is
// 404 cannot even be graded by header scanners (MDN Observatory).
func landingPage() http.Handler {
	page := static.LandingPage()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
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
// 405 with Allow) as problem+json instead of net/http's text/plain. The
// mux marks those with http.Error's text/plain content type; handlers of
// this app answer errors with problem.Write, so a text/plain 404 or 405
// can only come from the mux. Matching once, in ServeHTTP, keeps the
// routing cost to a single lookup.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&muxErrorWriter{ResponseWriter: w}, r)
	})
}

// muxErrorWriter turns http.Error's text/plain 404 and 405 into problem
// details and drops the text body that follows.
type muxErrorWriter struct {
	http.ResponseWriter
	swallow bool
}

func (w *muxErrorWriter) WriteHeader(code int) {
	if (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) &&
		w.Header().Get("Content-Type") == "text/plain; charset=utf-8" {
		w.swallow = true
		problem.Write(w.ResponseWriter, code, "")
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *muxErrorWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *muxErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
