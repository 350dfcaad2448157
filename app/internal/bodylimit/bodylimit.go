// Package bodylimit caps the size of request bodies.
//
// Without a cap, a single client can make the server buffer or spill to disk
// an unbounded body (json.Decoder, ParseMultipartForm and FormValue all read
// as much as they are given). Middleware installs the cap once, in front of
// every handler, so no handler can forget it:
//
//   - a request whose Content-Length already exceeds the limit is refused
//     with 413 before a single body byte is read;
//   - every other body (including chunked bodies of unknown length) is
//     wrapped in http.MaxBytesReader, so reading past the limit fails with
//     *http.MaxBytesError and the server closes the connection afterwards.
//
// A handler that hits the limit while streaming answers with WriteTooLarge:
//
//	var tooBig *http.MaxBytesError
//	if errors.As(err, &tooBig) {
//		bodylimit.WriteTooLarge(w, tooBig.Limit)
//		return
//	}
package bodylimit

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// Override gives the requests under PathPrefix their own limit, typically a
// larger one for upload endpoints than the global JSON limit.
//
// PathPrefix matches whole path segments: "/api/uploads" covers
// "/api/uploads" and "/api/uploads/photo" but not "/api/uploadsX", so an
// unrelated route cannot inherit a larger limit by sharing a name prefix.
type Override struct {
	PathPrefix string
	Limit      int64
}

// Middleware limits request bodies to defaultLimit bytes, or to the Limit of
// the longest Override whose PathPrefix matches the request path.
//
// A limit of 0 admits only empty bodies. Middleware panics on a negative
// limit or on a PathPrefix that does not start with "/": both are wiring
// mistakes that must stop the process at startup, not surface per request.
func Middleware(defaultLimit int64, overrides ...Override) func(http.Handler) http.Handler {
	if defaultLimit < 0 {
		panic(fmt.Sprintf("bodylimit: negative default limit %d", defaultLimit))
	}
	sorted := make([]Override, len(overrides))
	copy(sorted, overrides)
	for _, o := range sorted {
		if !strings.HasPrefix(o.PathPrefix, "/") {
			panic(fmt.Sprintf("bodylimit: path prefix %q must start with /", o.PathPrefix))
		}
		if o.Limit < 0 {
			panic(fmt.Sprintf("bodylimit: negative limit %d for %q", o.Limit, o.PathPrefix))
		}
	}
	// Longest prefix first, so the first match is the most specific one.
	sort.SliceStable(sorted, func(i, j int) bool {
		return len(sorted[i].PathPrefix) > len(sorted[j].PathPrefix)
	})

	limitFor := func(path string) int64 {
		for _, o := range sorted {
			if matchesPrefix(path, o.PathPrefix) {
				return o.Limit
			}
		}
		return defaultLimit
	}

	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			limit := limitFor(r.URL.Path)
			if r.ContentLength > limit {
				// Refuse on the declared length alone: reading the body
				// would only waste bandwidth (and, with Expect:
				// 100-continue, not answering 100 spares the client
				// from sending it at all).
				WriteTooLarge(w, limit)
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, limit)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// matchesPrefix reports whether prefix covers path on a segment boundary.
func matchesPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// IsTooLarge reports whether err (or an error it wraps) is the error
// http.MaxBytesReader returns once a body exceeds its limit.
func IsTooLarge(err error) bool {
	var tooBig *http.MaxBytesError
	return errors.As(err, &tooBig)
}

// WriteTooLarge answers 413 Content Too Large as problem+json, naming the
// limit so that a legitimate client knows how far to shrink its request.
func WriteTooLarge(w http.ResponseWriter, limit int64) {
	problem.Write(w, http.StatusRequestEntityTooLarge,
		fmt.Sprintf("request body exceeds the limit of %d bytes", limit))
}
