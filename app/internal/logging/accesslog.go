package logging

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
	"unicode/utf8"
)

// Caps on client-controlled text in the access log, so one request cannot
// write a megabyte log line.
const (
	maxUserAgentLen = 256
	maxPathLen      = 1024
	maxMethodLen    = 32
)

// SetUserID records who made the request, for AccessLog's line. The auth
// layer calls it once it knows; id should be an opaque identifier, never an
// e-mail address. It must be called before the handler returns, from the
// request's goroutine or one the handler waits for. Outside AccessLog and
// RequestID it does nothing.
func SetUserID(ctx context.Context, id string) {
	if st := stateFrom(ctx); st != nil {
		st.userID = id
	}
}

// UserIDFrom returns the ID given to SetUserID for this request, or "".
func UserIDFrom(ctx context.Context) string {
	if st := stateFrom(ctx); st != nil {
		return st.userID
	}
	return ""
}

// AccessLog writes one line per request to logger when the handler
// returns (or panics through it): message "request" with request_id,
// user_id ("" when anonymous, so every line has the same fields), method,
// path (never the query string, which may carry tokens), status_code,
// latency_ms, bytes (response body), client_ip and a truncated user_agent.
// The level is error for 5xx, warn for 4xx and info otherwise; a handler
// that writes nothing has answered 200.
//
// clientIP should be the server's trusted-proxy resolver so logs and rate
// limits agree on who the client is; nil means the host of r.RemoteAddr.
//
// Place it inside RequestID and outside the panic recovery middleware, so
// that the line carries the request ID and the 500 written for a panic.
func AccessLog(logger *slog.Logger, clientIP func(*http.Request) string) func(http.Handler) http.Handler {
	if clientIP == nil {
		clientIP = remoteHost
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			st := stateFrom(r.Context())
			if st == nil {
				st = &requestState{}
				r = withState(r, st)
			}
			rec := &responseRecorder{ResponseWriter: w}
			finished := false
			// Deferred so that a request whose handler panics past us
			// (http.ErrAbortHandler, an aborted half-written response)
			// still gets its line; the panic itself carries on.
			defer func() {
				status := rec.status
				switch {
				case rec.wroteHeader:
				case finished:
					status = http.StatusOK // net/http sends 200 for an empty reply
				default:
					status = http.StatusInternalServerError
				}
				logRequest(logger, r, st, status, rec.bytes, time.Since(start), clientIP(r), !finished)
			}()
			next.ServeHTTP(rec, r)
			finished = true
		})
	}
}

func logRequest(logger *slog.Logger, r *http.Request, st *requestState, status int, bytes int64, latency time.Duration, clientIP string, aborted bool) {
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !logger.Enabled(ctx, level) {
		return
	}
	attrs := [...]slog.Attr{
		slog.String("request_id", st.id),
		slog.String("user_id", st.userID),
		slog.String("method", truncateUTF8(r.Method, maxMethodLen)),
		slog.String("path", truncateUTF8(r.URL.Path, maxPathLen)),
		slog.Int("status_code", status),
		slog.Float64("latency_ms", float64(latency)/float64(time.Millisecond)),
		slog.Int64("bytes", bytes),
		slog.String("client_ip", clientIP),
		slog.String("user_agent", truncateUTF8(r.UserAgent(), maxUserAgentLen)),
		slog.Bool("aborted", true),
	}
	n := len(attrs)
	if !aborted {
		n-- // only unusual lines carry the flag
	}
	logger.LogAttrs(ctx, level, "request", attrs[:n]...)
}

func remoteHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// responseRecorder notes the status and body size on their way out. It
// implements Unwrap so http.ResponseController reaches the connection
// (flush, hijack, deadlines), and Flush and ReadFrom directly because
// older code type-asserts http.Flusher and io.Copy looks for io.ReaderFrom
// (the sendfile path).
type responseRecorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (rr *responseRecorder) WriteHeader(code int) {
	if !rr.wroteHeader {
		// 1xx responses (103 Early Hints) precede the real one; 101 ends
		// the HTTP exchange and is final.
		if code < 200 && code != http.StatusSwitchingProtocols {
			rr.ResponseWriter.WriteHeader(code)
			return
		}
		rr.status, rr.wroteHeader = code, true
	}
	rr.ResponseWriter.WriteHeader(code)
}

func (rr *responseRecorder) Write(p []byte) (int, error) {
	rr.implicitOK()
	n, err := rr.ResponseWriter.Write(p)
	rr.bytes += int64(n)
	return n, err
}

func (rr *responseRecorder) ReadFrom(src io.Reader) (int64, error) {
	rr.implicitOK()
	n, err := io.Copy(rr.ResponseWriter, src)
	rr.bytes += n
	return n, err
}

func (rr *responseRecorder) Flush() {
	rr.implicitOK()
	_ = http.NewResponseController(rr.ResponseWriter).Flush()
}

func (rr *responseRecorder) Unwrap() http.ResponseWriter { return rr.ResponseWriter }

// implicitOK records what net/http does when the body starts before any
// WriteHeader call: the status is 200.
func (rr *responseRecorder) implicitOK() {
	if !rr.wroteHeader {
		rr.status, rr.wroteHeader = http.StatusOK, true
	}
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
