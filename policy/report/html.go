package report

import (
	"html/template"
	"io"

	"github.com/nbms-deploy/nbms/policy/rules"
)

// page is self-contained on purpose: auditors open it from a CI artefact or
// an e-mail, often offline, and a page that fetches nothing leaks nothing.
var page = template.Must(template.New("report").Funcs(template.FuncMap{"status": statusLabel}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>NBMS policy audit — {{.Meta.Source}}</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1b1b1b}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2}
code{font-family:ui-monospace,monospace;font-size:.9em}
.result{padding:.6rem 1rem;border-radius:4px;font-weight:600}
.fail{background:#fde2e2;color:#8a1111}
.pass{background:#e3f6e5;color:#14532d}
.finding{margin:.5rem 0;padding:.5rem .75rem;border-left:4px solid #999;background:#fafafa}
.finding.mandatory{border-color:#c62828}
.finding.advisory{border-color:#f9a825}
.remediation{color:#333;margin-top:.25rem}
</style>
</head>
<body>
<h1>NBMS policy audit</h1>
<p>Source: <code>{{.Meta.Source}}</code> · Policy pack: {{.Meta.Tool}} {{.Meta.Version}}</p>
{{if .Failed}}<p class="result fail" id="result">FAIL — mandatory policies failed: {{range $i, $n := .Summary.MandatoryFailed}}{{if $i}}, {{end}}{{$n}}{{end}}</p>
{{else}}<p class="result pass" id="result">PASS — no mandatory policy failed</p>
{{end}}
<h2>Summary</h2>
<table id="summary">
<thead><tr><th>Policy</th><th>Level</th><th>Status</th><th>Violations</th><th>Cannot evaluate</th></tr></thead>
<tbody>
{{range .Report.Policies}}<tr class="summary-row" data-policy="{{.Name}}" data-status="{{.Status}}"><td><code>{{.Name}}</code><br><small>{{.Description}}</small></td><td>{{.Level}}</td><td>{{status .Status}}</td><td>{{.Violations}}</td><td>{{.CannotEvaluate}}</td></tr>
{{end}}</tbody>
</table>
<h2>Findings by resource</h2>
{{range .Resources}}{{if .Findings}}<section class="resource" data-urn="{{.URN}}">
<h3><code>{{.URN}}</code></h3>
<p>Type <code>{{.Type}}</code></p>
{{range .Findings}}{{template "finding" .}}{{end}}</section>
{{end}}{{end}}{{if .StackFindings}}<section class="resource" data-urn="stack">
<h3>Stack</h3>
{{range .StackFindings}}{{template "finding" .}}{{end}}</section>
{{end}}{{if not .Report.Findings}}<p>No findings.</p>{{end}}
</body>
</html>
{{define "finding"}}<div class="finding {{.Level}}" data-policy="{{.Policy}}"><strong>[{{.Level}}] <code>{{.Policy}}</code></strong> ({{.Kind}}): {{.Message}}{{if ne .Kind "cannot-evaluate"}}<div class="remediation">Remediation: {{.Remediation}}</div>{{end}}</div>
{{end}}`))

// HTML writes the self-contained HTML report: inline CSS, no scripts, no
// external assets.
func HTML(w io.Writer, rep rules.Report, m Meta) error {
	remediation := remediations(rep)
	view := func(fs []rules.Finding) []findingView {
		out := make([]findingView, len(fs))
		for i, f := range fs {
			out[i] = findingView{Finding: f, Remediation: remediation[f.Policy]}
		}
		return out
	}
	data := htmlData{Meta: m, Report: rep, Summary: Summarize(rep), Failed: rep.MandatoryFailed(), StackFindings: view(rep.StackFindings)}
	for _, r := range rep.Resources {
		data.Resources = append(data.Resources, resourceView{URN: r.URN, Type: r.Type, Findings: view(r.Findings)})
	}
	return page.Execute(w, data)
}

type findingView struct {
	rules.Finding
	Remediation string
}

type resourceView struct {
	URN, Type string
	Findings  []findingView
}

type htmlData struct {
	Meta          Meta
	Report        rules.Report
	Summary       Summary
	Failed        bool
	Resources     []resourceView
	StackFindings []findingView
}
