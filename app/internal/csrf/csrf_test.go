package csrf_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/csrf"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const trusted = "https://app.example.org"

func TestHandler(t *testing.T) {
	const self = "<self>" // replaced by the test server's own origin
	tests := []struct {
		name         string
		method       string
		secFetchSite string
		origin       string
		wantStatus   int
	}{
		{"cross-site POST refused", "POST", "cross-site", "https://evil.example", 403},
		{"cross-site DELETE refused", "DELETE", "cross-site", "https://evil.example", 403},
		{"same-origin POST passes", "POST", "same-origin", self, 200},
		{"user-initiated (none) POST passes", "POST", "none", "", 200},
		{"trusted origin same-site POST passes", "POST", "same-site", trusted, 200},
		{"trusted origin cross-site POST passes", "POST", "cross-site", trusted, 200},
		{"untrusted same-site POST refused", "POST", "same-site", "https://other.example.org", 403},
		{"trusted origin with different case refused", "POST", "same-site", "https://APP.example.org", 403},
		{"trusted origin with explicit port refused", "POST", "same-site", "https://app.example.org:443", 403},
		{"non-browser POST without headers passes", "POST", "", "", 200},
		{"old browser same-origin POST passes", "POST", "", self, 200},
		{"old browser cross-origin POST refused", "POST", "", "https://evil.example", 403},
		{"cross-site GET passes", "GET", "cross-site", "https://evil.example", 200},
		{"cross-site HEAD passes", "HEAD", "cross-site", "https://evil.example", 200},
		{"cross-site OPTIONS passes", "OPTIONS", "cross-site", "https://evil.example", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs testsupport.SyncBuffer
			p, err := csrf.New([]string{trusted}, slog.New(slog.NewJSONHandler(&logs, nil)))
			require.NoError(t, err)
			srv := httptest.NewServer(p.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "changed")
			})))
			defer srv.Close()

			req, err := http.NewRequest(tt.method, srv.URL+"/api/items?token=secret", nil)
			require.NoError(t, err)
			if tt.secFetchSite != "" {
				req.Header.Set("Sec-Fetch-Site", tt.secFetchSite)
			}
			switch tt.origin {
			case "":
			case self:
				req.Header.Set("Origin", srv.URL)
			default:
				req.Header.Set("Origin", tt.origin)
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)

			require.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
			if tt.wantStatus == http.StatusOK {
				assert.Empty(t, logs.String(), "a passing request is not a security event")
				if tt.method != "HEAD" {
					assert.Equal(t, "changed", string(body))
				}
				return
			}
			assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			var prob struct{ Status int }
			require.NoError(t, json.Unmarshal(body, &prob))
			assert.Equal(t, 403, prob.Status)
			assert.NotContains(t, string(body), "changed")

			var entry map[string]any
			require.NoError(t, json.Unmarshal([]byte(logs.String()), &entry), logs.String())
			assert.Equal(t, "WARN", entry["level"])
			assert.Equal(t, tt.method, entry["method"])
			assert.Equal(t, "/api/items", entry["path"], "query strings stay out of logs")
			assert.Equal(t, tt.origin, entry["origin"])
			assert.Equal(t, tt.secFetchSite, entry["sec_fetch_site"])
		})
	}
}

func TestNewRejectsBadTrustedOrigins(t *testing.T) {
	for _, origin := range []string{
		"app.example.org",
		"https://app.example.org/",
		"https://app.example.org/app",
		"https://app.example.org?x",
		"https://App.example.org",
		"https://app.example.org:443",
		"http://app.example.org:80",
		"https://*.example.org",
		"ftp://app.example.org",
		"https://user@app.example.org",
		"",
	} {
		t.Run(origin, func(t *testing.T) {
			p, err := csrf.New([]string{trusted, origin}, nil)
			require.Error(t, err)
			assert.Nil(t, p)
			assert.Contains(t, err.Error(), origin)
		})
	}
}

func TestNewAcceptsNoTrustedOrigins(t *testing.T) {
	p, err := csrf.New(nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NotNil(t, p)

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.Header.Set("Sec-Fetch-Site", "same-site")
	req.Header.Set("Origin", trusted)
	p.Handler(http.NotFoundHandler()).ServeHTTP(rec, req)
	assert.Equal(t, http.StatusForbidden, rec.Code, "same-site is refused when nothing is trusted")
}
