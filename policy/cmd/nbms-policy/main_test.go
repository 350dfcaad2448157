package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/policy/internal/fixture"
	"github.com/nbms-deploy/nbms/policy/report"
	"github.com/nbms-deploy/nbms/policy/rules"
)

func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

func brokenStack() []fixture.Res {
	rs := fixture.Good()
	for i := range rs {
		if rs[i].URN == fixture.URN(rules.ContainerType, "cache") {
			c := fixture.Clone(rs[i].Inputs)
			c["ports"] = []any{map[string]any{"internal": 6379.0, "external": 6379.0}}
			rs[i].Inputs = c
		}
	}
	return rs
}

func TestAudit(t *testing.T) {
	goodPreview := write(t, "preview.json", fixture.Preview(fixture.Good()))
	badState := write(t, "state.json", fixture.StackExport(brokenStack()))
	advisoryConfig := write(t, "policy-config.json", []byte(`{"docker-container-restrict-published-ports": "advisory", "nbms-stack-isolate-data-tier": {"enforcementLevel": "advisory"}}`))
	typoConfig := write(t, "typo.json", []byte(`{"docker-container-restrict-publish-ports": "advisory"}`))
	notJSON := write(t, "junk.json", []byte("Previewing update (prod)"))

	cases := []struct {
		name string
		args []string
		code int
	}{
		{"good preview passes (secrets blinded: advisory only)", []string{"--preview", goodPreview}, 0},
		{"broken state fails a mandatory policy", []string{"--state", badState}, 1},
		{"config makes the failures advisory", []string{"--state", badState, "--config", advisoryConfig}, 0},
		{"unknown policy in config", []string{"--state", badState, "--config", typoConfig}, 2},
		{"not JSON", []string{"--preview", notJSON}, 2},
		{"state file given as preview", []string{"--preview", badState}, 2},
		{"both inputs", []string{"--preview", goodPreview, "--state", badState}, 2},
		{"no input", []string{}, 2},
		{"unknown flag", []string{"--preview", goodPreview, "--fast"}, 2},
		{"missing file", []string{"--preview", filepath.Join(t.TempDir(), "nope.json")}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			var stdout, stderr bytes.Buffer
			code := run(append(append([]string{"audit"}, tc.args...), "--out", out), &stdout, &stderr)
			assert.Equal(t, tc.code, code, "stdout: %s\nstderr: %s", stdout.String(), stderr.String())
			if tc.code == 2 {
				assert.NotEmpty(t, stderr.String())
				return
			}
			for _, name := range report.Files {
				_, err := os.Stat(filepath.Join(out, name))
				assert.NoError(t, err, name)
			}
			data, err := os.ReadFile(filepath.Join(out, "report.json"))
			require.NoError(t, err)
			var doc struct {
				Result string `json:"result"`
			}
			require.NoError(t, json.Unmarshal(data, &doc))
			assert.Equal(t, map[int]string{0: "pass", 1: "fail"}[tc.code], doc.Result)
			for _, s := range fixture.SecretStrings {
				for _, name := range report.Files {
					data, _ := os.ReadFile(filepath.Join(out, name))
					assert.NotContains(t, string(data), s, name)
				}
			}
		})
	}
}

func TestAuditNamesTheFailedPolicy(t *testing.T) {
	badState := write(t, "state.json", fixture.StackExport(brokenStack()))
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, run([]string{"audit", "--state", badState, "--out", out}, &stdout, &stderr))
	assert.Contains(t, stdout.String(), "docker-container-restrict-published-ports")
	assert.Contains(t, stdout.String(), "nbms-stack-isolate-data-tier")
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	require.NoError(t, err)
	assert.Contains(t, string(md), "only the proxy may publish ports")
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 0, run([]string{"--help"}, &stdout, &stderr))
	assert.Contains(t, stdout.String(), "nbms-policy audit")
}
