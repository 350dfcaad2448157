package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/proxy"
)

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = w.Write([]byte("ok"))
})

func isProbe(r *http.Request) bool { return r.URL.Path == "/healthz" || r.URL.Path == "/readyz" }

// logLines decodes every JSON log record written to buf.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), sc.Text())
		out = append(out, rec)
	}
	return out
}

func requireProblem(t *testing.T, rec *httptest.ResponseRecorder, status int) problem.Details {
	t.Helper()
	require.Equal(t, status, rec.Code)
	assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	var d problem.Details
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &d), rec.Body.String())
	assert.Equal(t, status, d.Status)
	return d
}

func TestAllowedHosts(t *testing.T) {
	allowed := []string{"www.example.org", ".Example.NET", "[::1]", "*"}
	tests := []struct {
		name string
		host string
		path string
		ok   bool
	}{
		{name: "exact", host: "www.example.org", ok: true},
		{name: "case-insensitive, port stripped", host: "WWW.Example.ORG:8443", ok: true},
		{name: "trailing dot", host: "www.example.org.", ok: true},
		{name: "parent of an exact entry", host: "example.org"},
		{name: "subdomain of an exact entry", host: "a.www.example.org"},
		{name: "other domain", host: "evil.example"},
		{name: "dot entry matches the domain itself", host: "example.net", ok: true},
		{name: "dot entry matches subdomains", host: "a.b.example.net:80", ok: true},
		{name: "dot entry is not a suffix match", host: "badexample.net"},
		{name: "IPv6 literal with port", host: "[::1]:8080", ok: true},
		{name: "star entry is literal, matches nothing", host: "anything.example"},
		{name: "empty host", host: ""},
		{name: "path smuggled before an allowed suffix", host: "evil.example/.example.net"},
		{name: "userinfo smuggled", host: "evil.example@www.example.org"},
		{name: "backslash smuggled", host: `evil.example\.example.net`},
		{name: "unbracketed IPv6", host: "::1"},
		{name: "empty port", host: "www.example.org:"},
		{name: "probe with pod IP is exempt", host: "10.1.2.3:8080", path: "/healthz", ok: true},
		{name: "readiness probe is exempt", host: "10.1.2.3:8080", path: "/readyz", ok: true},
		{name: "pod IP without probe path is refused", host: "10.1.2.3:8080", path: "/api/v1/sites"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			logger := slog.New(slog.NewJSONHandler(&logs, nil))
			h := proxy.AllowedHosts(allowed, isProbe, logger)(okHandler)

			path := tt.path
			if path == "" {
				path = "/reports"
			}
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.Host = tt.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if tt.ok {
				assert.Equal(t, http.StatusOK, rec.Code)
				assert.Equal(t, "ok", rec.Body.String())
				assert.Empty(t, logs.String(), "an allowed request is not logged")
				return
			}
			requireProblem(t, rec, http.StatusBadRequest)
			lines := logLines(t, &logs)
			require.Len(t, lines, 1)
			assert.Equal(t, "WARN", lines[0]["level"])
			assert.Equal(t, "host.rejected", lines[0]["event"])
			// Backslash is the log escape character, so it is itself escaped.
			assert.Equal(t, strings.ReplaceAll(tt.host, `\`, `\\`), lines[0]["host"])
			assert.Equal(t, "192.0.2.1", lines[0]["client_ip"])
		})
	}
}

// A hostile Host is truncated and its control characters escaped before
// logging, so it can neither forge records nor flood the log.
func TestAllowedHostsLogIsSanitised(t *testing.T) {
	tests := []struct {
		name string
		host string
	}{
		{name: "CRLF and a forged record", host: "evil\r\n{\"level\":\"ERROR\",\"msg\":\"forged\"}"},
		{name: "terminal escape", host: "evil\x1b[31mred"},
		{name: "oversized", host: strings.Repeat("a", 5000) + ".example"},
		{name: "oversized multibyte", host: strings.Repeat("é", 400)},
		{name: "invalid UTF-8", host: "evil\xff\xfe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := proxy.AllowedHosts([]string{"www.example.org"}, nil, slog.New(slog.NewJSONHandler(&logs, nil)))(okHandler)
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Host = tt.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			requireProblem(t, rec, http.StatusBadRequest)
			lines := logLines(t, &logs)
			require.Len(t, lines, 1, "exactly one record, nothing forged")
			logged, ok := lines[0]["host"].(string)
			require.True(t, ok)
			assert.LessOrEqual(t, len(logged), 255*4+3, "bounded even after escaping")
			for _, r := range logged {
				assert.False(t, unicode.IsControl(r), "control character %U reached the log", r)
				assert.NotEqual(t, unicode.ReplacementChar, r, "invalid UTF-8 must be escaped, not replaced")
			}
			if len(tt.host) > 255 {
				assert.True(t, strings.HasSuffix(logged, "…"), "truncation is visible")
				assert.Less(t, len(logged), len(tt.host))
			}
		})
	}
}

// Over a real connection with Forwarded in front, the allowlist sees the
// public host a trusted proxy forwarded, and ignores an untrusted one's.
func TestAllowedHostsBehindForwarded(t *testing.T) {
	tests := []struct {
		name          string
		trusted       []string
		host          string
		forwardedHost string
		want          int
	}{
		{name: "trusted proxy forwards an allowed host", trusted: []string{"127.0.0.1"}, host: "app:8080", forwardedHost: "www.example.org", want: http.StatusOK},
		{name: "trusted proxy forwards a foreign host", trusted: []string{"127.0.0.1"}, host: "www.example.org", forwardedHost: "evil.example", want: http.StatusBadRequest},
		{name: "untrusted peer cannot launder a host", trusted: []string{"10.0.0.0/8"}, host: "evil.example", forwardedHost: "www.example.org", want: http.StatusBadRequest},
		{name: "untrusted peer addressing an allowed host", trusted: []string{"10.0.0.0/8"}, host: "www.example.org", forwardedHost: "evil.example", want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := proxy.Forwarded(mustPrefixes(t, tt.trusted...))(
				proxy.AllowedHosts([]string{"www.example.org"}, isProbe, slog.New(slog.NewJSONHandler(&logs, nil)))(okHandler))
			srv := httptest.NewServer(h)
			defer srv.Close()

			req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
			require.NoError(t, err)
			req.Host = tt.host
			req.Header.Set("X-Forwarded-Host", tt.forwardedHost)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tt.want, resp.StatusCode)
			if tt.want == http.StatusBadRequest {
				assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
				lines := logLines(t, &logs)
				require.Len(t, lines, 1)
				assert.Equal(t, "evil.example", lines[0]["host"])
			}
		})
	}
}
