package headers_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/headers"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// logRecords parses every JSON log line written to logs so far.
func logRecords(t *testing.T, logs *testsupport.SyncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), sc.Text())
		out = append(out, rec)
	}
	return out
}

const legacyReport = `{"csp-report":{
	"document-uri":"https://api.example.org/api/items?token=secret#frag",
	"referrer":"",
	"blocked-uri":"https://cdn.evil.example/x.js?session=abc",
	"violated-directive":"script-src-elem",
	"effective-directive":"script-src-elem",
	"original-policy":"default-src 'none'",
	"disposition":"enforce",
	"source-file":"https://api.example.org/docs?x=1",
	"line-number":12,"column-number":7,"status-code":200,
	"script-sample":"alert('private')"}}`

const apiReports = `[
	{"type":"deprecation","age":1,"url":"https://api.example.org/","body":{"id":"x"}},
	{"type":"csp-violation","age":2,"url":"https://api.example.org/api/items",
	 "user_agent":"Mozilla/5.0","body":{
		"documentURL":"https://api.example.org/api/items?q=1",
		"blockedURL":"inline",
		"effectiveDirective":"style-src-attr",
		"originalPolicy":"default-src 'none'",
		"disposition":"enforce",
		"sample":"color:red",
		"statusCode":200,"lineNumber":1,"columnNumber":2}}]`

func TestCSPReportHandler(t *testing.T) {
	const maxBytes = 4096
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		chunked     bool
		wantStatus  int
		wantLogs    []map[string]any // subset of each logged record
	}{
		{"legacy report-uri format", "POST", "application/csp-report", legacyReport, false, 204, []map[string]any{{
			"level": "WARN", "msg": "csp violation",
			"document-uri":        "https://api.example.org/api/items",
			"blocked-uri":         "https://cdn.evil.example/x.js",
			"violated-directive":  "script-src-elem",
			"effective-directive": "script-src-elem",
			"disposition":         "enforce",
			"source-file":         "https://api.example.org/docs",
			"line-number":         float64(12), "column-number": float64(7), "status-code": float64(200),
		}}},
		{"reporting API format skips other report types", "POST", "application/reports+json", apiReports, false, 204, []map[string]any{{
			"level": "WARN", "msg": "csp violation",
			"document-uri":        "https://api.example.org/api/items",
			"blocked-uri":         "inline",
			"violated-directive":  "style-src-attr",
			"effective-directive": "style-src-attr",
			"line-number":         float64(1),
		}}},
		{"plain JSON with charset", "POST", "application/json; charset=utf-8", legacyReport, true, 204, []map[string]any{{
			"violated-directive": "script-src-elem",
		}}},
		{"long field truncated", "POST", "application/csp-report",
			`{"csp-report":{"violated-directive":"img-src","blocked-uri":"https://x.example/` + strings.Repeat("é", 400) + `"}}`, false, 204,
			[]map[string]any{{"blocked-uri": "https://x.example/" + strings.Repeat("é", 119) + "…"}}},
		{"oversized by Content-Length", "POST", "application/csp-report", `{"csp-report":{"x":"` + strings.Repeat("a", maxBytes) + `"}}`, false, 413, nil},
		{"oversized chunked", "POST", "application/csp-report", `{"csp-report":{"x":"` + strings.Repeat("a", maxBytes) + `"}}`, true, 413, nil},
		{"malformed JSON", "POST", "application/csp-report", `{"csp-report":`, false, 400, nil},
		{"trailing garbage", "POST", "application/csp-report", legacyReport + `{}`, false, 400, nil},
		{"not a CSP report", "POST", "application/json", `{"hello":"world"}`, false, 400, nil},
		{"empty CSP report", "POST", "application/json", `{"csp-report":{}}`, false, 400, nil},
		{"reports without CSP violations", "POST", "application/reports+json", `[{"type":"deprecation","body":{}}]`, false, 400, nil},
		{"wrong field type", "POST", "application/csp-report", `{"csp-report":{"violated-directive":42}}`, false, 400, nil},
		{"wrong content type", "POST", "text/plain", legacyReport, false, 415, nil},
		{"GET refused", "GET", "", "", false, 405, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs testsupport.SyncBuffer
			logger := slog.New(slog.NewJSONHandler(&logs, nil))
			srv := httptest.NewServer(headers.CSPReportHandler(logger, maxBytes))
			defer srv.Close()

			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length
			}
			req, err := http.NewRequest(tt.method, srv.URL+"/csp-report", body)
			require.NoError(t, err)
			if tt.chunked {
				req.ContentLength = -1
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			respBody, err := io.ReadAll(resp.Body)
			require.NoError(t, err)

			require.Equal(t, tt.wantStatus, resp.StatusCode, string(respBody))
			records := logRecords(t, &logs)
			require.Len(t, records, len(tt.wantLogs))
			for i, want := range tt.wantLogs {
				for k, v := range want {
					assert.Equal(t, v, records[i][k], k)
				}
				line := fmt.Sprint(records[i])
				for _, secret := range []string{"token=secret", "session=abc", "private", "color:red", "original"} {
					assert.NotContains(t, line, secret)
				}
			}
			switch {
			case tt.wantStatus == http.StatusNoContent:
				assert.Empty(t, respBody)
			default:
				assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
				var p struct {
					Status int
					Detail string
				}
				require.NoError(t, json.Unmarshal(respBody, &p))
				assert.Equal(t, tt.wantStatus, p.Status)
				if tt.wantStatus == http.StatusRequestEntityTooLarge {
					assert.Contains(t, p.Detail, "4096 bytes")
				}
				if tt.wantStatus == http.StatusMethodNotAllowed {
					assert.Equal(t, "POST", resp.Header.Get("Allow"))
				}
			}
		})
	}
}

func TestCSPReportHandlerCapsLogLinesPerBody(t *testing.T) {
	var logs testsupport.SyncBuffer
	srv := httptest.NewServer(headers.CSPReportHandler(slog.New(slog.NewJSONHandler(&logs, nil)), 1<<20))
	defer srv.Close()

	one := `{"type":"csp-violation","body":{"effectiveDirective":"img-src","blockedURL":"https://x.example/"}}`
	reports := "[" + strings.TrimSuffix(strings.Repeat(one+",", 25), ",") + "]"
	resp, err := srv.Client().Post(srv.URL, "application/reports+json", strings.NewReader(reports))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())

	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	records := logRecords(t, &logs)
	require.Len(t, records, 10)
	assert.Equal(t, float64(15), records[0]["reports_dropped"])
}
