package report_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/policy/internal/fixture"
	"github.com/nbms-deploy/nbms/policy/report"
	"github.com/nbms-deploy/nbms/policy/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var meta = report.Meta{Tool: "nbms-policy", Version: "0.1.0", Source: "preview.json"}

// mixedReport evaluates a stack with a mandatory violation on two
// containers, a stack-policy violation on a network and an unknown image.
func mixedReport() rules.Report {
	rs := fixture.Good()
	for i := range rs {
		switch rs[i].URN {
		case fixture.URN(rules.ContainerType, "app"):
			c := fixture.Clone(rs[i].Inputs)
			c["privileged"] = true
			c["image"] = fixture.Unknown()
			rs[i].Inputs = c
		case fixture.URN(rules.ContainerType, "cache"):
			c := fixture.Clone(rs[i].Inputs)
			c["image"] = "redis:latest"
			rs[i].Inputs = c
		case fixture.URN(rules.NetworkType, "internal"):
			rs[i].Inputs = fixture.Network(fixture.Stack+"-internal", false)
		}
	}
	return rules.Evaluate(fixture.Resources(rs), rules.Config{})
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	assert.Equal(t, string(want), string(got))
}

func TestGoldenReports(t *testing.T) {
	rep := mixedReport()
	require.True(t, rep.MandatoryFailed())
	for _, tc := range []struct {
		file  string
		write func(*bytes.Buffer) error
	}{
		{"report.golden.md", func(b *bytes.Buffer) error { return report.Markdown(b, rep, meta) }},
		{"report.golden.json", func(b *bytes.Buffer) error { return report.JSON(b, rep, meta) }},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var b bytes.Buffer
			require.NoError(t, tc.write(&b))
			golden(t, tc.file, b.Bytes())
			for _, s := range fixture.SecretStrings {
				assert.NotContains(t, b.String(), s)
			}
		})
	}
}

func TestSARIFShape(t *testing.T) {
	rep := mixedReport()
	var b bytes.Buffer
	require.NoError(t, report.SARIF(&b, rep, meta))
	var log struct {
		Schema  string `json:"$schema"`
		Version string `json:"version"`
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name  string `json:"name"`
					Rules []struct {
						ID               string                `json:"id"`
						ShortDescription struct{ Text string } `json:"shortDescription"`
						Help             struct{ Text string } `json:"help"`
					} `json:"rules"`
				} `json:"driver"`
			} `json:"tool"`
			Results []struct {
				RuleID    string                `json:"ruleId"`
				RuleIndex int                   `json:"ruleIndex"`
				Level     string                `json:"level"`
				Message   struct{ Text string } `json:"message"`
				Locations []struct {
					LogicalLocations []struct {
						Name string `json:"name"`
						Kind string `json:"kind"`
					} `json:"logicalLocations"`
				} `json:"locations"`
			} `json:"results"`
		} `json:"runs"`
	}
	dec := json.NewDecoder(&b)
	dec.DisallowUnknownFields()
	require.NoError(t, json.Unmarshal(b.Bytes(), &log))
	assert.Equal(t, "2.1.0", log.Version)
	assert.Equal(t, report.SARIFSchema, log.Schema)
	require.Len(t, log.Runs, 1)
	run := log.Runs[0]
	assert.Equal(t, "nbms-policy", run.Tool.Driver.Name)
	ids := map[string]int{}
	for i, r := range run.Tool.Driver.Rules {
		ids[r.ID] = i
		assert.NotEmpty(t, r.ShortDescription.Text)
		assert.NotEmpty(t, r.Help.Text)
	}
	for _, r := range rules.All() {
		assert.Contains(t, ids, r.Name)
	}
	require.Len(t, run.Results, len(rep.Findings()))
	levels := map[string]bool{}
	for _, res := range run.Results {
		i, ok := ids[res.RuleID]
		require.True(t, ok, "result rule %s is not declared", res.RuleID)
		assert.Equal(t, i, res.RuleIndex)
		assert.Contains(t, []string{"error", "warning"}, res.Level)
		levels[res.Level] = true
		require.Len(t, res.Locations, 1)
		require.Len(t, res.Locations[0].LogicalLocations, 1)
		assert.True(t, strings.HasPrefix(res.Locations[0].LogicalLocations[0].Name, "urn:pulumi:"), res.Locations[0].LogicalLocations[0].Name)
		assert.NotEmpty(t, res.Message.Text)
	}
	assert.True(t, levels["error"] && levels["warning"], "mandatory → error and cannot-evaluate → warning both present")
}

// TestHTMLInChromium renders the page in a real headless browser and reads
// the summary rows back from the DOM it built.
func TestHTMLInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	require.NoError(t, err, "Debian package chromium must be installed (apt-get install -y chromium)")
	rep := mixedReport()
	dir := t.TempDir()
	require.NoError(t, report.WriteAll(dir, rep, meta))
	page, err := os.ReadFile(filepath.Join(dir, "report.html"))
	require.NoError(t, err)
	assert.NotRegexp(t, `(?i)<(script|link)\b|src=|https?://[^"<\s]*\.(css|js)`, string(page), "self-contained: no external assets")

	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--no-first-run", "--user-data-dir="+t.TempDir(), "--dump-dom", "file://"+filepath.Join(dir, "report.html"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	dom := stdout.String()

	rows := regexp.MustCompile(`<tr class="summary-row" data-policy="([^"]+)" data-status="([^"]+)">`).FindAllStringSubmatch(dom, -1)
	require.Len(t, rows, len(rep.Policies))
	status := map[string]string{}
	for _, r := range rows {
		status[r[1]] = r[2]
	}
	assert.Equal(t, "fail", status["docker-container-disallow-privileged"])
	assert.Equal(t, "fail", status["nbms-stack-isolate-data-tier"])
	assert.Equal(t, "pass", status["docker-container-configure-memory-limit"])
	assert.Contains(t, dom, `id="result">FAIL — mandatory policies failed:`)
	assert.Contains(t, dom, `data-urn="`+fixture.URN(rules.ContainerType, "app")+`"`)
	for _, s := range fixture.SecretStrings {
		assert.NotContains(t, dom, s)
	}
}
