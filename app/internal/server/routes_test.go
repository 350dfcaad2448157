package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/problem"
)

func TestJSONErrorsKeepsPathValuesAndAnswersProblems(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{code}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.PathValue("code")))
	})
	mux.HandleFunc("GET /dir/", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("dir")) })
	h := jsonErrors(mux)

	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/items/A.1", nil))
	assert.Equal(t, "A.1", w.Body.String(), "path wildcards reach the handler")

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/items/A.1", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, w.Code)
	assert.Equal(t, problem.ContentType, w.Header().Get("Content-Type"))
	assert.Contains(t, w.Header().Get("Allow"), "GET")

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/missing", nil))
	assert.Equal(t, http.StatusNotFound, w.Code)
	var d problem.Details
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &d))
	assert.Equal(t, 404, d.Status)

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/dir", nil))
	assert.Contains(t, []int{http.StatusMovedPermanently, http.StatusTemporaryRedirect}, w.Code, "the mux's own trailing-slash redirect is kept")
	assert.Equal(t, "/dir/", w.Header().Get("Location"))
}
