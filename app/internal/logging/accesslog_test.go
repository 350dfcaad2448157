package logging_test

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/logging"
)

func fixedIP(ip string) func(*http.Request) string {
	return func(*http.Request) string { return ip }
}

// serve runs h behind RequestID and AccessLog on a real server and returns
// the response (body read and closed) and the access log output.
func serve(t *testing.T, h http.Handler, req func(url string) *http.Request) (*http.Response, []byte, *bytes.Buffer) {
	t.Helper()
	logger, buf := newTestLogger()
	srv := httptest.NewUnstartedServer(logging.RequestID(logging.AccessLog(logger, fixedIP("203.0.113.9"))(h)))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // "superfluous WriteHeader" is tested on purpose
	srv.Start()
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req(srv.URL))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp, body, buf
}

func get(path string) func(string) *http.Request {
	return func(base string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, base+path, nil)
		return r
	}
}

func TestAccessLogLine(t *testing.T) {
	const queryToken = "qs-token-value-123"
	longUA := strings.Repeat("Mozilla/5.0 ", 40) // 480 bytes
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond)
		logging.SetUserID(r.Context(), "u-42")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("hello"))
	})
	resp, _, buf := serve(t, h, func(base string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, base+"/api/things?token="+queryToken+"&page=2", strings.NewReader("{}"))
		r.Header.Set("User-Agent", longUA)
		return r
	})
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	raw := buf.String()
	assert.NotContains(t, raw, queryToken)
	assert.NotContains(t, raw, "page=2", "no part of the query string is logged")

	line := decodeLine(t, buf)
	assert.Equal(t, "request", line["msg"])
	assert.Equal(t, "INFO", line["level"])
	assert.Equal(t, resp.Header.Get("X-Request-Id"), line["request_id"])
	assert.Equal(t, "u-42", line["user_id"])
	assert.Equal(t, "POST", line["method"])
	assert.Equal(t, "/api/things", line["path"])
	assert.Equal(t, float64(201), line["status_code"])
	assert.Equal(t, float64(5), line["bytes"])
	assert.Equal(t, "203.0.113.9", line["client_ip"])
	assert.Equal(t, longUA[:256], line["user_agent"])
	assert.NotContains(t, line, "aborted")
	latency, ok := line["latency_ms"].(float64)
	require.True(t, ok, "latency_ms is a JSON number")
	assert.GreaterOrEqual(t, latency, 2.0)
	assert.Less(t, latency, 5000.0)
	// Sub-millisecond precision is kept: the number is written as a float.
	m := regexp.MustCompile(`"latency_ms":([0-9.eE+-]+)`).FindStringSubmatch(raw)
	require.Len(t, m, 2)
	assert.Contains(t, m[1], ".")
}

func TestAccessLogLevelAndStatus(t *testing.T) {
	tests := []struct {
		name       string
		h          http.HandlerFunc
		wantStatus int
		wantLevel  string
		wantBytes  float64
	}{
		{"nothing written is 200", func(http.ResponseWriter, *http.Request) {}, 200, "INFO", 0},
		{"body without WriteHeader is 200", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "abc") }, 200, "INFO", 3},
		{"redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/x", http.StatusFound) }, 302, "INFO", 25},
		{"not found", http.NotFound, 404, "WARN", 19},
		{"bad request", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(400) }, 400, "WARN", 0},
		{"server error", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }, 500, "ERROR", 0},
		{"unavailable", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, 503, "ERROR", 0},
		{"second WriteHeader ignored", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(418); w.WriteHeader(500) }, 418, "WARN", 0},
		{"1xx is not the final status", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusNoContent)
		}, 204, "INFO", 0},
		{"ReadFrom counts bytes", func(w http.ResponseWriter, _ *http.Request) {
			// LimitedReader has no WriteTo, so io.Copy uses our ReadFrom.
			n, err := io.Copy(w, io.LimitReader(strings.NewReader(strings.Repeat("z", 100)), 70))
			if err != nil || n != 70 {
				panic("copy failed")
			}
		}, 200, "INFO", 70},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _, buf := serve(t, tt.h, get("/p"))
			assert.Equal(t, tt.wantStatus, resp.StatusCode)
			line := decodeLine(t, buf)
			assert.Equal(t, float64(tt.wantStatus), line["status_code"])
			assert.Equal(t, tt.wantLevel, line["level"])
			assert.Equal(t, tt.wantBytes, line["bytes"])
			assert.Equal(t, "", line["user_id"], "anonymous requests log an empty user_id")
		})
	}
}

func TestRequestID(t *testing.T) {
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name     string
		incoming string
		kept     bool
	}{
		{"absent", "", false},
		{"valid", "abc-123_X.y", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"65 chars", strings.Repeat("a", 65), false},
		{"space", "bad id", false},
		{"markup", "<script>", false},
		{"newline escape attempt", "a%0Ab", false},
		{"non-ASCII", "idé", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen string
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = logging.RequestIDFrom(r.Context())
			})
			resp, _, buf := serve(t, h, func(base string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, base+"/", nil)
				if tt.incoming != "" {
					r.Header.Set("X-Request-ID", tt.incoming)
				}
				return r
			})
			echoed := resp.Header.Get("X-Request-ID")
			assert.Equal(t, seen, echoed, "handler and response see the same id")
			assert.Equal(t, echoed, decodeLine(t, buf)["request_id"])
			if tt.kept {
				assert.Equal(t, tt.incoming, echoed)
			} else {
				assert.Regexp(t, hex32, echoed)
			}
		})
	}
}

func TestRequestIDGeneratesDistinctIDs(t *testing.T) {
	ids := map[string]bool{}
	h := logging.RequestID(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		ids[rec.Header().Get("X-Request-Id")] = true
	}
	assert.Len(t, ids, 100)
}

func TestMiddlewareOrderDoesNotMatter(t *testing.T) {
	// AccessLog outside RequestID: the line still gets the id, and the auth
	// layer's SetUserID still reaches it.
	logger, buf := newTestLogger()
	h := logging.AccessLog(logger, nil)(logging.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logging.SetUserID(r.Context(), "u-7")
	})))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "198.51.100.4:5555"
	h.ServeHTTP(rec, req)

	line := decodeLine(t, buf)
	assert.Equal(t, rec.Header().Get("X-Request-Id"), line["request_id"])
	assert.NotEmpty(t, line["request_id"])
	assert.Equal(t, "u-7", line["user_id"])
	assert.Equal(t, "198.51.100.4", line["client_ip"], "nil clientIP falls back to the RemoteAddr host")
}

func TestAccessLogWithoutRequestID(t *testing.T) {
	logger, buf := newTestLogger()
	h := logging.AccessLog(logger, fixedIP("192.0.2.1"))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logging.SetUserID(r.Context(), "u-9")
		assert.Equal(t, "u-9", logging.UserIDFrom(r.Context()))
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	line := decodeLine(t, buf)
	assert.Equal(t, "", line["request_id"])
	assert.Equal(t, "u-9", line["user_id"])
}

func TestSetUserIDOutsideMiddlewareIsNoop(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	logging.SetUserID(r.Context(), "u-1")
	assert.Equal(t, "", logging.UserIDFrom(r.Context()))
	assert.Equal(t, "", logging.RequestIDFrom(r.Context()))
}

func TestAccessLogLogsRequestThatPanicsThrough(t *testing.T) {
	logger, buf := newTestLogger()
	h := logging.AccessLog(logger, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	assert.PanicsWithValue(t, http.ErrAbortHandler, func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/boom", nil))
	}, "the panic is not swallowed")
	line := decodeLine(t, buf)
	assert.Equal(t, float64(500), line["status_code"])
	assert.Equal(t, "ERROR", line["level"])
	assert.Equal(t, true, line["aborted"])
}

func TestResponseWriterKeepsFlusherAndController(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, isFlusher := w.(http.Flusher)
		assert.True(t, isFlusher, "http.Flusher is still implemented")
		rc := http.NewResponseController(w)
		// These reach the real connection only through Unwrap.
		assert.NoError(t, rc.SetWriteDeadline(time.Now().Add(time.Minute)))
		assert.NoError(t, rc.EnableFullDuplex())
		_, _ = io.WriteString(w, "part1")
		assert.NoError(t, rc.Flush())
		_, _ = io.WriteString(w, "part2")
	})
	resp, body, buf := serve(t, h, get("/stream"))
	assert.Equal(t, "part1part2", string(body))
	assert.Equal(t, []string{"chunked"}, resp.TransferEncoding, "flush forced a chunked response")
	line := decodeLine(t, buf)
	assert.Equal(t, float64(200), line["status_code"])
	assert.Equal(t, float64(10), line["bytes"])
}

func TestFromContext(t *testing.T) {
	logger, buf := newTestLogger()
	var id string
	h := logging.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id = logging.RequestIDFrom(r.Context())
		logging.FromContext(r.Context(), logger).Info("inside handler")
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	line := decodeLine(t, buf)
	assert.Equal(t, id, line["request_id"])

	plain := logging.FromContext(httptest.NewRequest(http.MethodGet, "/", nil).Context(), logger)
	assert.Same(t, logger, plain, "no request id: the base logger is returned as is")
}

// discardWriter is the cheapest possible ResponseWriter, so the benchmarks
// measure the middleware and not the recorder.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func benchmarkHandler(b *testing.B, h http.Handler, incomingID bool) {
	req := httptest.NewRequest(http.MethodGet, "/api/v1/sites/42?page=2", nil)
	req.Header.Set("User-Agent", "bench/1.0")
	if incomingID {
		req.Header.Set("X-Request-Id", "0123456789abcdef0123456789abcdef")
	}
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	_, _ = w.Write([]byte("ok"))
})

func BenchmarkBareHandler(b *testing.B) { benchmarkHandler(b, okHandler, false) }

func BenchmarkRequestIDAccessLog(b *testing.B) {
	logger := slog.New(logging.NewHandler(io.Discard, slog.LevelInfo, logging.NewRedactor("some-secret-value")))
	h := logging.RequestID(logging.AccessLog(logger, nil)(okHandler))
	b.Run("generated id", func(b *testing.B) { benchmarkHandler(b, h, false) })
	b.Run("incoming id", func(b *testing.B) { benchmarkHandler(b, h, true) })
	// The same chain over slog's own JSON handler: the difference is the
	// cost of redaction.
	plain := slog.New(slog.NewJSONHandler(io.Discard, nil))
	hp := logging.RequestID(logging.AccessLog(plain, nil)(okHandler))
	b.Run("incoming id, unredacted handler", func(b *testing.B) { benchmarkHandler(b, hp, true) })
}
