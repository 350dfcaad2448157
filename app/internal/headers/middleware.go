package headers

import (
	"net/http"
)

// field is one precomputed response header. key is already canonical and
// value has len == cap == 1, so a handler's Header().Add copies it instead
// of appending into the slice every response shares; Set replaces it.
type field struct {
	key   string
	value []string
}

// Middleware returns a middleware that sets the headers of p on every
// response before calling next, and keeps Server and X-Powered-By from
// leaving (they advertise software versions to attackers).
//
// It also sets Cache-Control: no-store, because API responses are
// user-specific by default. A handler serving public, cacheable data may
// override it explicitly with w.Header().Set("Cache-Control", "public,
// max-age=...") before writing (and should send Vary: Origin if CORS applies).
//
// All header values are built here, once; a request costs one small
// allocation (the ResponseWriter wrapper) plus the map inserts.
//
// Middleware panics if p is invalid: call p.Validate at startup to get an
// error instead. A policy that cannot be served must stop the process.
func Middleware(p Policy) func(http.Handler) http.Handler {
	if err := p.Validate(); err != nil {
		panic(err)
	}
	var fields []field
	for _, f := range p.Fields() {
		fields = append(fields, field{key: http.CanonicalHeaderKey(f.Name), value: []string{f.Value}})
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			for _, f := range fields {
				h[f.key] = f.value
			}
			sw := &stripWriter{ResponseWriter: w}
			next.ServeHTTP(sw, r)
			if !sw.wroteHeader {
				// net/http writes the header after the handler returns
				// when the handler wrote nothing.
				stripLeaky(h)
			}
		})
	}
}

// Field is one response header of a Policy.
type Field struct{ Name, Value string }

// Fields renders p into the headers every response carries, in a fixed
// order: what Middleware installs, and what the edge proxy sends on the
// responses it answers itself (infra/nginx), so that the two sets are one.
func (p Policy) Fields() []Field {
	var fs []Field
	add := func(name, value string) {
		if value != "" {
			fs = append(fs, Field{Name: name, Value: value})
		}
	}
	add("Strict-Transport-Security", p.hstsValue())

	directives, _ := parseCSP(p.CSP) // validated by the caller
	if p.CSPReportPath != "" {
		directives = append(directives,
			directive{name: "report-uri", value: p.CSPReportPath},
			directive{name: "report-to", value: reportEndpointName})
		add("Reporting-Endpoints", reportEndpointName+`="`+p.CSPReportPath+`"`)
	}
	if p.CSPReportOnly {
		add("Content-Security-Policy-Report-Only", serializeCSP(directives))
	} else {
		add("Content-Security-Policy", serializeCSP(directives))
	}

	add("X-Content-Type-Options", "nosniff")
	add("X-Frame-Options", p.FrameOptions)
	add("Referrer-Policy", p.ReferrerPolicy)
	add("Cross-Origin-Opener-Policy", p.CrossOriginOpenerPolicy)
	add("Cross-Origin-Embedder-Policy", p.CrossOriginEmbedderPolicy)
	add("Cross-Origin-Resource-Policy", p.CrossOriginResourcePolicy)
	add("Permissions-Policy", p.PermissionsPolicy)
	add("X-Permitted-Cross-Domain-Policies", "none")
	add("Cache-Control", "no-store")
	return fs
}

// stripLeaky deletes headers that disclose the server software. The keys
// are canonical, so the map is addressed directly without re-canonicalising.
func stripLeaky(h http.Header) {
	delete(h, "Server")
	delete(h, "X-Powered-By")
}

// stripWriter removes leaky headers at the moment the header is committed:
// on WriteHeader, on the first Write, and on Flush.
type stripWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (w *stripWriter) WriteHeader(code int) {
	// Also for 1xx responses, which send the header map too.
	stripLeaky(w.Header())
	if code >= 200 {
		w.wroteHeader = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *stripWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		stripLeaky(w.Header())
		w.wroteHeader = true
	}
	return w.ResponseWriter.Write(b)
}

// FlushError strips before flushing, since a flush commits the header.
// http.ResponseController prefers this method over Unwrap, so a flush
// through a controller cannot bypass the strip either.
func (w *stripWriter) FlushError() error {
	if !w.wroteHeader {
		stripLeaky(w.Header())
		w.wroteHeader = true
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush keeps the wrapper an http.Flusher for code that type-asserts.
func (w *stripWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the underlying writer for
// deadlines, hijacking and full duplex.
func (w *stripWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
