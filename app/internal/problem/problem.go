// Package problem writes RFC 9457 "problem details" JSON error bodies.
//
// Every refusal the app makes (400, 403, 404, 405, 413, 429, 500, 503) goes
// through Write so that clients always get the same machine-readable shape
// and no handler is tempted to leak internals in an ad-hoc error string.
package problem

import (
	"encoding/json"
	"net/http"
)

// ContentType is the media type of every error body (RFC 9457 section 3).
const ContentType = "application/problem+json"

// Details is the body of an error response. Field names follow RFC 9457.
type Details struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Errors names each invalid input field; used by validation failures.
	Errors map[string]string `json:"errors,omitempty"`
}

// Write sends a problem+json response with the given status. The title is
// always the standard status text, so callers cannot vary it by accident;
// detail is a human sentence that must never contain secrets or internals.
func Write(w http.ResponseWriter, status int, detail string) {
	WriteDetails(w, Details{Status: status, Detail: detail})
}

// WriteDetails sends d, filling Type and Title from the status when empty.
func WriteDetails(w http.ResponseWriter, d Details) {
	if d.Type == "" {
		d.Type = "about:blank"
	}
	if d.Title == "" {
		d.Title = http.StatusText(d.Status)
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	// An error body is never worth caching and may be user-specific.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(d.Status)
	_ = json.NewEncoder(w).Encode(d)
}
