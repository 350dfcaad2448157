package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/nbms-deploy/nbms/infra/driver"
)

// Usage errors are refused with exit status 2 and a message naming the fix,
// before any Pulumi command runs. (The engine paths are covered by
// infra/enginetest.)
func TestUsageErrorsExitWithStatus2(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	assert.NoError(t, err)
	noPack := filepath.Join(t.TempDir(), "nbms-policy")
	cases := []struct {
		name       string
		args       []string
		passphrase string
		want       string
	}{
		{"no command", nil, "x", "usage: nbms-deploy"},
		{"unknown command", []string{"deploy", "--stack", "prod"}, "x", `unknown command "deploy"`},
		{"no stack", []string{"preview"}, "x", "--stack is required"},
		{"unknown stack", []string{"preview", "--stack", "staging", "--root", root}, "x", "Pulumi.staging.yaml"},
		{"bad key=path flag", []string{"up", "--stack", "prod", "--secret-file", "tlsKey"}, "x", "want key=path"},
		{"unreadable secret file", []string{"up", "--stack", "prod", "--root", root, "--secret-file", "tlsKey=/nonexistent/key.pem"}, "x", "nbms:tlsKey"},
		{"no passphrase", []string{"up", "--stack", "prod", "--root", root}, "", "set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE"},
		{"no policy pack", []string{"preview", "--stack", "prod", "--root", root, "--policy-pack", noPack}, "x", "run `make policy`"},
		{"stray argument", []string{"outputs", "--stack", "prod", "extra"}, "x", "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PULUMI_CONFIG_PASSPHRASE", tc.passphrase)
			t.Setenv("PULUMI_CONFIG_PASSPHRASE_FILE", "")
			t.Setenv("PULUMI_BACKEND_URL", "file://"+t.TempDir())
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			assert.Equal(t, driver.ExitUsage, code, stderr.String())
			assert.Contains(t, stderr.String(), tc.want)
		})
	}
}
