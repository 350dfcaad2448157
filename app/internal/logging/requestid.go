package logging

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"

	"github.com/nbms-deploy/nbms/app/config"
)

// RequestIDHeader carries the request ID in both directions. It is written
// in canonical form so that setting it does not allocate.
const RequestIDHeader = "X-Request-Id"

// requestState is what the middlewares of this package keep per request.
// RequestID and AccessLog share one value (and one context entry) so the
// pair costs a single request clone whichever of them runs first.
type requestState struct {
	id string
	// userID is written by SetUserID deeper in the chain and read by
	// AccessLog once the handler has returned.
	userID string
}

type stateKey struct{}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

func withState(r *http.Request, st *requestState) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
}

// RequestID gives every request an ID, stores it in the context (see
// RequestIDFrom) and echoes it in the X-Request-Id response header so a
// user can quote it. An incoming X-Request-Id is kept only when it is 1–64
// characters of [A-Za-z0-9._-], which keeps log lines and headers free of
// injected text; otherwise a fresh 128-bit random ID (32 hex digits) is
// used.
//
// The incoming ID is trusted from any client: it is only a correlation
// aid, and the character set leaves it nothing to inject. Put a proxy that
// overwrites the header in front if correlation must not be spoofable.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		if st := stateFrom(r.Context()); st != nil {
			st.id = id // AccessLog ran first and made the state already
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, withState(r, &requestState{id: id}))
	})
}

// RequestIDFrom returns the ID RequestID gave the request, or "" outside it.
func RequestIDFrom(ctx context.Context) string {
	if st := stateFrom(ctx); st != nil {
		return st.id
	}
	return ""
}

// FromContext returns base with a request_id attribute when ctx belongs
// to a request that went through RequestID, so that handler log lines can
// be joined with the access log line. Otherwise it returns base.
func FromContext(ctx context.Context, base *slog.Logger) *slog.Logger {
	if id := RequestIDFrom(ctx); id != "" {
		return base.With(slog.String("request_id", id))
	}
	return base
}

// validRequestID is config.RequestIDPattern, spelled out for speed: it runs
// on every request (TestValidRequestIDIsThePattern holds them together).
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > config.MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isKeyByte(c) && c != '.' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var raw [16]byte
	rand.Read(raw[:]) // never fails: crypto/rand crashes the program instead
	var text [32]byte
	hex.Encode(text[:], raw[:])
	return string(text[:])
}
