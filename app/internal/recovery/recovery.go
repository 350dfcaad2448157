// Package recovery turns a panicking handler into a logged 500 instead of a
// dropped connection, without telling the client anything about the panic.
package recovery

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// Detail is the whole explanation a client gets for a panic: the panic
// value and the stack stay in the log and the error tracker.
const Detail = "The server hit an unexpected error. Quote the X-Request-Id response header when reporting it."

// Middleware recovers panics from next. It logs each one at error level
// with the request ID, the panic value and the stack (through logger, so
// they are redacted), then calls onPanic when it is non-nil (the Sentry
// hook, errtrack.Reporter.CapturePanic).
//
// If the response has not started it answers 500 application/problem+json
// with a generic detail. If it has, the status is already on the wire:
// the panic is logged and the connection aborted (as net/http itself does),
// so the client sees a broken response rather than a truncated one that
// looks complete.
//
// http.ErrAbortHandler is net/http's "abort quietly" sentinel: it is
// re-panicked untouched and not logged.
//
// Place it inside logging.AccessLog so the access log records the 500.
func Middleware(logger *slog.Logger, onPanic func(r *http.Request, recovered any, stack []byte)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tw := &startTracker{ResponseWriter: w}
			defer func() {
				recovered := recover()
				if recovered == nil {
					return
				}
				if recovered == http.ErrAbortHandler {
					panic(recovered)
				}
				stack := debug.Stack()
				logger.LogAttrs(r.Context(), slog.LevelError, "panic recovered",
					slog.String("request_id", logging.RequestIDFrom(r.Context())),
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					panicAttr(recovered),
					slog.String("stack", string(stack)),
					slog.Bool("response_started", tw.started),
				)
				if !tw.started {
					clearRepresentationHeaders(w.Header())
					problem.Write(w, http.StatusInternalServerError, Detail)
				}
				// After the reply, so a failing hook cannot cost the client
				// its 500.
				if onPanic != nil {
					onPanic(r, recovered, stack)
				}
				if tw.started {
					panic(http.ErrAbortHandler)
				}
			}()
			next.ServeHTTP(tw, r)
		})
	}
}

// panicAttr keeps errors as errors (the log handler scrubs their text) and
// prints anything else, so a struct with unexported fields is not logged
// as "{}".
func panicAttr(recovered any) slog.Attr {
	switch v := recovered.(type) {
	case error:
		return slog.Any("panic", v)
	case string:
		return slog.String("panic", v)
	default:
		return slog.String("panic", fmt.Sprintf("%+v", v))
	}
}

// clearRepresentationHeaders drops headers the handler set for the body it
// never finished; security headers set by outer middleware stay.
func clearRepresentationHeaders(h http.Header) {
	for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Range", "Content-Disposition", "Etag", "Last-Modified"} {
		h.Del(k)
	}
}

// startTracker notes whether the status line has gone out. Unwrap keeps
// http.ResponseController working; Flush and ReadFrom are forwarded
// because callers type-assert them.
type startTracker struct {
	http.ResponseWriter
	started bool
}

func (t *startTracker) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		t.started = true
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *startTracker) Write(p []byte) (int, error) {
	t.started = true
	return t.ResponseWriter.Write(p)
}

func (t *startTracker) ReadFrom(src io.Reader) (int64, error) {
	t.started = true
	return io.Copy(t.ResponseWriter, src)
}

func (t *startTracker) Flush() {
	t.started = true
	_ = http.NewResponseController(t.ResponseWriter).Flush()
}

func (t *startTracker) Unwrap() http.ResponseWriter { return t.ResponseWriter }
