package problem

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWrite(t *testing.T) {
	w := httptest.NewRecorder()
	Write(w, http.StatusRequestEntityTooLarge, "body exceeds 1024 bytes")
	assert.Equal(t, 413, w.Code)
	assert.Equal(t, ContentType, w.Header().Get("Content-Type"))
	assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	assert.Equal(t, "nosniff", w.Header().Get("X-Content-Type-Options"))
	var d Details
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &d))
	assert.Equal(t, Details{Type: "about:blank", Title: "Request Entity Too Large", Status: 413, Detail: "body exceeds 1024 bytes"}, d)
}

func TestWriteDetailsKeepsFieldErrors(t *testing.T) {
	w := httptest.NewRecorder()
	WriteDetails(w, Details{Status: 400, Errors: map[string]string{"code": "required"}})
	var d map[string]any
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &d))
	assert.Equal(t, map[string]any{"code": "required"}, d["errors"])
	assert.Equal(t, "Bad Request", d["title"])
	assert.NotContains(t, d, "detail", "an empty detail is omitted")
}
