package headers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/nbms-deploy/nbms/app/internal/bodylimit"
	"github.com/nbms-deploy/nbms/app/internal/problem"
)

const (
	// maxReportField bounds each logged string: report fields are chosen
	// by whoever sends the report, and URLs can be arbitrarily long.
	maxReportField = 256
	// maxReportsPerBody bounds log lines per request, so one body cannot
	// flood the logs with thousands of tiny reports.
	maxReportsPerBody = 10
)

// CSPReportHandler receives Content-Security-Policy violation reports and
// logs each one at warn level; mount it with a method pattern on the path
// given as Policy.CSPReportPath (e.g. "POST /csp-report").
//
// It accepts both wire formats: the legacy report-uri object
// ({"csp-report": {...}}, application/csp-report) and the Reporting API
// array (application/reports+json); application/json is accepted for either.
// Bodies above maxBytes are refused with 413 (see bodylimit; a negative
// maxBytes panics); malformed reports get 400; others get 204.
//
// Logged URLs lose their query and fragment, which may carry tokens, and
// every field is truncated. Script samples and the original policy are not
// logged. Reports are sent by browsers from the page's origin; if this
// handler sits behind csrf, the reporting pages must be same-origin or
// trusted.
func CSPReportHandler(logger *slog.Logger, maxBytes int64) http.Handler {
	h := &reportHandler{logger: logger, maxBytes: maxBytes}
	return bodylimit.Middleware(maxBytes)(h)
}

type reportHandler struct {
	logger   *slog.Logger
	maxBytes int64
}

// violation is the subset of a CSP report worth logging, in either format.
type violation struct {
	DocumentURI, BlockedURI, ViolatedDirective, EffectiveDirective string
	Disposition, SourceFile                                        string
	LineNumber, ColumnNumber, StatusCode                           int
}

// legacyReport is the report-uri format (CSP Level 2).
type legacyReport struct {
	Report *struct {
		DocumentURI        string `json:"document-uri"`
		BlockedURI         string `json:"blocked-uri"`
		ViolatedDirective  string `json:"violated-directive"`
		EffectiveDirective string `json:"effective-directive"`
		Disposition        string `json:"disposition"`
		SourceFile         string `json:"source-file"`
		LineNumber         int    `json:"line-number"`
		ColumnNumber       int    `json:"column-number"`
		StatusCode         int    `json:"status-code"`
	} `json:"csp-report"`
}

// apiReport is one entry of a Reporting API (report-to) upload.
type apiReport struct {
	Type string `json:"type"`
	Body *struct {
		DocumentURL        string `json:"documentURL"`
		BlockedURL         string `json:"blockedURL"`
		EffectiveDirective string `json:"effectiveDirective"`
		Disposition        string `json:"disposition"`
		SourceFile         string `json:"sourceFile"`
		LineNumber         int    `json:"lineNumber"`
		ColumnNumber       int    `json:"columnNumber"`
		StatusCode         int    `json:"statusCode"`
	} `json:"body"`
}

var errNoViolation = errors.New("no CSP violation in report")

func (h *reportHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		problem.Write(w, http.StatusMethodNotAllowed, "CSP reports must be POSTed")
		return
	}
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mediaType {
	case "application/csp-report", "application/reports+json", "application/json":
	default:
		problem.Write(w, http.StatusUnsupportedMediaType,
			"CSP reports must be application/csp-report, application/reports+json or application/json")
		return
	}
	body, err := io.ReadAll(r.Body)
	if bodylimit.IsTooLarge(err) {
		bodylimit.WriteTooLarge(w, h.maxBytes)
		return
	}
	if err != nil {
		problem.Write(w, http.StatusBadRequest, "could not read CSP report")
		return
	}
	violations, err := parseViolations(body)
	if err != nil {
		problem.Write(w, http.StatusBadRequest, "malformed CSP report")
		return
	}
	dropped := 0
	if len(violations) > maxReportsPerBody {
		dropped = len(violations) - maxReportsPerBody
		violations = violations[:maxReportsPerBody]
	}
	for _, v := range violations {
		h.log(r.Context(), v, dropped)
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseViolations decodes either format; the first non-space byte tells
// which (the Reporting API always sends an array).
func parseViolations(body []byte) ([]violation, error) {
	if bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("[")) {
		var reports []apiReport
		if err := json.Unmarshal(body, &reports); err != nil {
			return nil, err
		}
		var out []violation
		for _, rep := range reports {
			// Other report types (deprecation, intervention...) can share
			// the endpoint; they are not ours to log.
			if rep.Type != "csp-violation" || rep.Body == nil || rep.Body.EffectiveDirective == "" {
				continue
			}
			b := rep.Body
			out = append(out, violation{
				DocumentURI: b.DocumentURL, BlockedURI: b.BlockedURL,
				ViolatedDirective: b.EffectiveDirective, EffectiveDirective: b.EffectiveDirective,
				Disposition: b.Disposition, SourceFile: b.SourceFile,
				LineNumber: b.LineNumber, ColumnNumber: b.ColumnNumber, StatusCode: b.StatusCode,
			})
		}
		if len(out) == 0 {
			return nil, errNoViolation
		}
		return out, nil
	}

	var legacy legacyReport
	if err := json.Unmarshal(body, &legacy); err != nil {
		return nil, err
	}
	rep := legacy.Report
	if rep == nil || (rep.ViolatedDirective == "" && rep.EffectiveDirective == "") {
		return nil, errNoViolation
	}
	return []violation{{
		DocumentURI: rep.DocumentURI, BlockedURI: rep.BlockedURI,
		ViolatedDirective: rep.ViolatedDirective, EffectiveDirective: rep.EffectiveDirective,
		Disposition: rep.Disposition, SourceFile: rep.SourceFile,
		LineNumber: rep.LineNumber, ColumnNumber: rep.ColumnNumber, StatusCode: rep.StatusCode,
	}}, nil
}

func (h *reportHandler) log(ctx context.Context, v violation, dropped int) {
	attrs := []slog.Attr{
		slog.String("document-uri", clean(withoutQuery(v.DocumentURI))),
		slog.String("blocked-uri", clean(withoutQuery(v.BlockedURI))),
		slog.String("violated-directive", clean(v.ViolatedDirective)),
		slog.String("effective-directive", clean(v.EffectiveDirective)),
		slog.String("disposition", clean(v.Disposition)),
		slog.String("source-file", clean(withoutQuery(v.SourceFile))),
		slog.Int("line-number", v.LineNumber),
		slog.Int("column-number", v.ColumnNumber),
		slog.Int("status-code", v.StatusCode),
	}
	if dropped > 0 {
		attrs = append(attrs, slog.Int("reports_dropped", dropped))
	}
	h.logger.LogAttrs(ctx, slog.LevelWarn, "csp violation", attrs...)
}

// withoutQuery drops the query and fragment of a URL-like string.
func withoutQuery(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		return s[:i]
	}
	return s
}

// clean truncates s to maxReportField bytes without splitting a UTF-8
// sequence.
func clean(s string) string {
	if len(s) <= maxReportField {
		return s
	}
	cut := maxReportField
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
