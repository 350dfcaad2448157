// Package report renders a rules.Report for auditors and CI: Markdown, a
// self-contained HTML page, JSON and SARIF 2.1.0. The renderings carry no
// timestamps, so the same input always yields the same bytes (golden tests,
// reproducible CI artefacts).
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nbms-deploy/nbms/policy/rules"
)

// Meta says what was evaluated and by what.
type Meta struct {
	Tool    string `json:"tool"`
	Version string `json:"version"`
	// Source is the input file's base name.
	Source string `json:"source"`
}

// Files are the names WriteAll writes in the output directory.
var Files = []string{"report.md", "report.html", "report.json", "report.sarif"}

// WriteAll writes every rendering into dir, creating it if needed.
func WriteAll(dir string, rep rules.Report, m Meta) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	writers := []func(io.Writer, rules.Report, Meta) error{Markdown, HTML, JSON, SARIF}
	for i, name := range Files {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		werr := writers[i](f, rep, m)
		cerr := f.Close()
		if werr != nil {
			return fmt.Errorf("%s: %w", name, werr)
		}
		if cerr != nil {
			return cerr
		}
	}
	return nil
}

// Summary counts policy outcomes.
type Summary struct {
	Policies        int      `json:"policies"`
	Passed          int      `json:"passed"`
	Failed          int      `json:"failed"`
	CannotEvaluate  int      `json:"cannotEvaluate"`
	Disabled        int      `json:"disabled"`
	MandatoryFailed []string `json:"mandatoryFailed"`
}

// Summarize counts the policies of a report by status.
func Summarize(rep rules.Report) Summary {
	s := Summary{Policies: len(rep.Policies), MandatoryFailed: []string{}}
	for _, p := range rep.Policies {
		switch p.Status {
		case "pass":
			s.Passed++
		case "fail":
			s.Failed++
			if p.Level == rules.Mandatory {
				s.MandatoryFailed = append(s.MandatoryFailed, p.Name)
			}
		case "cannot-evaluate":
			s.CannotEvaluate++
		case "disabled":
			s.Disabled++
		}
	}
	return s
}

// JSON writes the machine-readable report.
func JSON(w io.Writer, rep rules.Report, m Meta) error {
	doc := struct {
		Meta
		Result        string                 `json:"result"`
		Summary       Summary                `json:"summary"`
		Policies      []rules.PolicyResult   `json:"policies"`
		Resources     []rules.ResourceResult `json:"resources"`
		StackFindings []rules.Finding        `json:"stackFindings"`
	}{m, result(rep), Summarize(rep), rep.Policies, rep.Resources, rep.StackFindings}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(doc)
}

func result(rep rules.Report) string {
	if rep.MandatoryFailed() {
		return "fail"
	}
	return "pass"
}

// Markdown writes the human report for pull requests and CI summaries.
func Markdown(w io.Writer, rep rules.Report, m Meta) error {
	var b strings.Builder
	s := Summarize(rep)
	fmt.Fprintf(&b, "# NBMS policy audit\n\n")
	fmt.Fprintf(&b, "Source: `%s` · Policy pack: %s %s\n\n", m.Source, m.Tool, m.Version)
	if rep.MandatoryFailed() {
		fmt.Fprintf(&b, "**Result: FAIL** — mandatory policies failed: %s\n\n", strings.Join(s.MandatoryFailed, ", "))
	} else {
		fmt.Fprintf(&b, "**Result: PASS** — no mandatory policy failed\n\n")
	}
	fmt.Fprintf(&b, "%d policies: %d passed, %d failed, %d could not be evaluated, %d disabled.\n\n",
		s.Policies, s.Passed, s.Failed, s.CannotEvaluate, s.Disabled)
	b.WriteString("## Summary\n\n| Policy | Level | Status | Violations | Cannot evaluate |\n|---|---|---|---|---|\n")
	for _, p := range rep.Policies {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %d | %d |\n", p.Name, p.Level, statusLabel(p.Status), p.Violations, p.CannotEvaluate)
	}
	b.WriteString("\n## Findings by resource\n")
	any := false
	remediation := remediations(rep)
	for _, r := range rep.Resources {
		if len(r.Findings) == 0 {
			continue
		}
		any = true
		fmt.Fprintf(&b, "\n### `%s`\n\nType `%s`\n\n", r.URN, r.Type)
		for _, f := range r.Findings {
			writeFindingMD(&b, f, remediation)
		}
	}
	if len(rep.StackFindings) > 0 {
		any = true
		b.WriteString("\n### Stack\n\n")
		for _, f := range rep.StackFindings {
			writeFindingMD(&b, f, remediation)
		}
	}
	if !any {
		b.WriteString("\nNo findings.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeFindingMD(b *strings.Builder, f rules.Finding, remediation map[string]string) {
	fmt.Fprintf(b, "- **[%s] `%s`** (%s): %s\n", f.Level, f.Policy, f.Kind, mdEscape(f.Message))
	if f.Kind != rules.CannotEvaluate {
		fmt.Fprintf(b, "  - Remediation: %s\n", mdEscape(remediation[f.Policy]))
	}
}

// mdEscape keeps a message on one list line.
func mdEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "|", `\|`)
}

func remediations(rep rules.Report) map[string]string {
	m := map[string]string{}
	for _, p := range rep.Policies {
		m[p.Name] = p.Remediation
	}
	return m
}

func statusLabel(status string) string {
	switch status {
	case "pass":
		return "✅ pass"
	case "fail":
		return "❌ fail"
	case "cannot-evaluate":
		return "⚠️ cannot evaluate"
	}
	return "➖ " + status
}
