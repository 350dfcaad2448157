package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/nbms-deploy/nbms/infra/driver"
)

// Usage errors (engine flags that are not the stack's URNs and a
// bindAddress that is not this host's included) are refused with exit
// status 2 and a message naming the fix, before any Pulumi command runs.
// (The engine paths are covered by infra/enginetest.)
func TestUsageErrorsExitWithStatus2(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	assert.NoError(t, err)
	noPack := filepath.Join(t.TempDir(), "nbms-policy")
	pack := filepath.Join(t.TempDir(), "nbms-policy")
	assert.NoError(t, os.WriteFile(pack, []byte("#!/bin/sh\n"), 0o755))
	testNet := filepath.Join(t.TempDir(), "bindAddress")
	assert.NoError(t, os.WriteFile(testNet, []byte("192.0.2.10\n"), 0o600))
	prod, err := os.ReadFile(filepath.Join(root, "Pulumi.prod.yaml"))
	assert.NoError(t, err)
	recovering := filepath.Join(t.TempDir(), "Pulumi.prod.yaml")
	assert.NoError(t, os.WriteFile(recovering, append(prod, "  nbms:recover: latest\n"...), 0o600))
	const appURN = "urn:pulumi:prod::nbms::nbms:deploy:App$docker:index/container:Container::app-0123456789ab"
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
		{"a --replace URN of another stack", []string{"up", "--stack", "prod", "--replace", appURN, "--replace", "urn:pulumi:dev::nbms::x::y"}, "x",
			`--replace "urn:pulumi:dev::nbms::x::y": not a URN of stack prod: it must start with "urn:pulumi:prod::"`},
		{"a --target that is no URN", []string{"preview", "--stack", "prod", "--target", "app-0123456789ab"}, "x", `--target "app-0123456789ab": not a URN of stack prod`},
		{"--replace on destroy", []string{"destroy", "--stack", "prod", "--replace", appURN}, "x", "--replace applies to [preview up], not to destroy"},
		{"--refresh on outputs", []string{"outputs", "--stack", "prod", "--refresh"}, "x", "--refresh applies to [preview up rollback destroy], not to outputs"},
		{"recover without the off-host passphrase", []string{"recover", "--stack", "prod", "--root", root}, "x",
			"recover reads the off-host repository, which only its passphrase opens: give the one kept off the host (generatedSecrets.backupCipherPass) with --secret-file backupCipherPass=FILE"},
		{"--to on up", []string{"up", "--stack", "prod", "--root", root, "--to", "latest"}, "x", "--to applies to recover, not to up"},
		{"nbms:recover in the stack file", []string{"up", "--stack", "prod", "--root", root, "--stack-file", recovering}, "x",
			"nbms:recover is set in " + recovering + ": a recovery runs through `nbms-deploy recover`"},
		{"the committed bindAddress is not this host's", []string{"preview", "--stack", "prod", "--root", root, "--policy-pack", pack}, "x",
			"nbms:bindAddress 203.0.113.10 is not an address of this host"},
		{"an operator's bindAddress is not this host's", []string{"up", "--stack", "prod", "--root", root, "--policy-pack", pack, "--config-file", "bindAddress=" + testNet}, "x",
			"nbms:bindAddress 192.0.2.10 is not an address of this host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PULUMI_CONFIG_PASSPHRASE", tc.passphrase)
			t.Setenv("PULUMI_CONFIG_PASSPHRASE_FILE", "")
			t.Setenv("PULUMI_BACKEND_URL", "file://"+t.TempDir())
			// This host's Docker engine.
			t.Setenv("DOCKER_HOST", "")
			t.Setenv("DOCKER_CONTEXT", "")
			t.Setenv("PULUMI_DEBUG_PROVIDERS", "")
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			assert.Equal(t, driver.ExitUsage, code, stderr.String())
			assert.Contains(t, stderr.String(), tc.want)
		})
	}
}
