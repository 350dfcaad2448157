package recovery_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/recovery"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const dbPassword = "pg-pass-w0rd-xyz"

type panicCall struct {
	r         *http.Request
	recovered any
	stack     []byte
}

// hook records onPanic calls; the server goroutine writes, the test reads.
type hook struct {
	mu    sync.Mutex
	calls []panicCall
}

func (h *hook) onPanic(r *http.Request, recovered any, stack []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, panicCall{r, recovered, stack})
}

func (h *hook) get() []panicCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// logLines parses the JSON lines in buf, keyed by message.
func logLines(t *testing.T, buf fmt.Stringer) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out[m["msg"].(string)] = m
	}
	return out
}

// newServer runs h behind the production order of middlewares:
// RequestID, AccessLog, recovery.
func newServer(t *testing.T, h http.HandlerFunc, onPanic func(*http.Request, any, []byte)) (*httptest.Server, *testsupport.SyncBuffer) {
	t.Helper()
	buf := &testsupport.SyncBuffer{}
	logger := slog.New(logging.NewHandler(buf, slog.LevelInfo, logging.NewRedactor(dbPassword)))
	withSecurityHeader := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Frame-Options", "DENY")
			next.ServeHTTP(w, r)
		})
	}
	chain := logging.RequestID(logging.AccessLog(logger, nil)(withSecurityHeader(recovery.Middleware(logger, onPanic)(h))))
	srv := httptest.NewUnstartedServer(chain)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, buf
}

type oddValue struct{ code int }

func TestPanicBeforeResponseIs500Problem(t *testing.T) {
	tests := []struct {
		name      string
		value     any
		wantInLog string
	}{
		{"string", "db down: postgres://nbms:" + dbPassword + "@db/nbms", "db down: postgres://nbms:[REDACTED]@db/nbms"},
		{"error", errors.New("boom password=" + dbPassword), "boom password=[REDACTED]"},
		{"other value", oddValue{code: 7}, "{code:7}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hk hook
			srv, buf := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.Header().Set("Content-Length", "12345")
				panic(tt.value)
			}, hk.onPanic)

			resp, err := srv.Client().Get(srv.URL + "/explode?x=1")
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())

			assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
			assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"), "outer security headers survive")
			assert.NotEqual(t, "12345", resp.Header.Get("Content-Length"), "stale body headers are dropped")
			var p map[string]any
			require.NoError(t, json.Unmarshal(body, &p))
			assert.Equal(t, float64(500), p["status"])
			assert.Equal(t, recovery.Detail, p["detail"])
			assert.NotContains(t, string(body), "db down")
			assert.NotContains(t, string(body), "boom")
			assert.NotContains(t, string(body), "goroutine", "no stack in the body")

			requestID := resp.Header.Get("X-Request-Id")
			lines := logLines(t, buf)
			pl := lines["panic recovered"]
			require.NotNil(t, pl, buf.String())
			assert.Equal(t, "ERROR", pl["level"])
			assert.Equal(t, requestID, pl["request_id"])
			assert.Equal(t, tt.wantInLog, pl["panic"])
			assert.Equal(t, false, pl["response_started"])
			assert.Contains(t, pl["stack"], "recovery_test.go", "the stack points at the panicking code")
			assert.NotContains(t, buf.String(), dbPassword)

			access := lines["request"]
			require.NotNil(t, access)
			assert.Equal(t, float64(500), access["status_code"])

			calls := hk.get()
			require.Len(t, calls, 1)
			assert.Equal(t, tt.value, calls[0].recovered)
			assert.Contains(t, string(calls[0].stack), "runtime/debug.Stack")
			assert.Equal(t, "/explode", calls[0].r.URL.Path)
			assert.Equal(t, requestID, logging.RequestIDFrom(calls[0].r.Context()))
		})
	}
}

func TestPanicAfterResponseStartedAbortsConnection(t *testing.T) {
	var hk hook
	srv, buf := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"items":[`)
		http.NewResponseController(w).Flush()
		panic("half way")
	}, hk.onPanic)

	resp, err := srv.Client().Get(srv.URL + "/stream")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the status was already sent")
	_, err = io.ReadAll(resp.Body)
	assert.Error(t, err, "the client must see a broken body, not a complete-looking one")
	require.NoError(t, resp.Body.Close())

	pl := logLines(t, buf)["panic recovered"]
	require.NotNil(t, pl)
	assert.Equal(t, true, pl["response_started"])
	assert.Equal(t, "half way", pl["panic"])
	assert.Len(t, hk.get(), 1)
}

func TestErrAbortHandlerIsRepanicked(t *testing.T) {
	var buf bytes.Buffer
	var hk hook
	logger := slog.New(logging.NewHandler(&buf, slog.LevelInfo, nil))
	h := recovery.Middleware(logger, hk.onPanic)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	rec := httptest.NewRecorder()
	assert.PanicsWithValue(t, http.ErrAbortHandler, func() {
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	})
	assert.Empty(t, buf.String(), "net/http's sentinel is not an error to log")
	assert.Empty(t, hk.get())
	assert.False(t, rec.Flushed)
	assert.Empty(t, rec.Body.String())
}

func TestNoPanicPassesThrough(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(logging.NewHandler(&buf, slog.LevelInfo, nil))
	h := recovery.Middleware(logger, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, isFlusher := w.(http.Flusher)
		assert.True(t, isFlusher)
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.Copy(w, io.LimitReader(strings.NewReader("payload"), 3)) // via ReadFrom
		assert.NoError(t, http.NewResponseController(w).Flush())
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	assert.Equal(t, http.StatusAccepted, rec.Code)
	assert.Equal(t, "pay", rec.Body.String())
	assert.True(t, rec.Flushed, "Flush reaches the underlying writer")
	assert.Empty(t, buf.String())
}

func TestNilOnPanic(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(logging.NewHandler(&buf, slog.LevelInfo, nil))
	h := recovery.Middleware(logger, nil)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		var sites []string
		_ = sites[len(r.URL.Path)] // a runtime error, not a deliberate panic
	}))
	rec := httptest.NewRecorder()
	assert.NotPanics(t, func() { h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil)) })
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.Contains(t, buf.String(), "index out of range")
}
