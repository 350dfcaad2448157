package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The prologue runs under the real /bin/sh exactly as Docker runs
// Entrypoints + Command: files land verbatim with mode 0600, and the real
// command gets its arguments untouched.
func TestFilesPrologueWritesFilesThenExecs(t *testing.T) {
	dir := t.TempDir()
	conf := "worker_processes 1;\nlog_format x '$remote_addr \"$request\"';\n# `not a command` $(neither)\n"
	files := []renderedFile{
		{path: filepath.Join(dir, "nbms", "nginx.conf"), content: conf},
		{path: filepath.Join(dir, "nbms", "tls", "cert.pem"), content: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
	}
	entry, args := withFiles(files, "/bin/sh", "-c", `printf 'ARG:%s\n' "$@"`, "cmd", "one", "two words", "--")
	var argv []string
	for _, a := range args {
		argv = append(argv, string(a.(pulumi.String)))
	}
	cmd := exec.Command(entry[0], append(entry[1:], argv...)...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))

	got, err := os.ReadFile(files[0].path)
	require.NoError(t, err)
	assert.Equal(t, conf+"\n", string(got), "written verbatim: no expansion of $, ` or quotes")
	got, err = os.ReadFile(files[1].path)
	require.NoError(t, err)
	assert.Equal(t, files[1].content+"\n", string(got), "parent directories made")
	for _, f := range files {
		info, err := os.Stat(f.path)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), f.path)
	}
	assert.Equal(t, []string{"ARG:one", "ARG:two words", "ARG:--"}, strings.Split(strings.TrimSpace(string(out[strings.Index(string(out), "ARG:"):])), "\n"))
}

func TestFilesPrologueFailsOnAnUnwritablePath(t *testing.T) {
	entry, args := withFiles([]renderedFile{{path: "/proc/nbms/x.conf", content: "x"}}, "/bin/echo", "must not run")
	var argv []string
	for _, a := range args {
		argv = append(argv, string(a.(pulumi.String)))
	}
	out, err := exec.Command(entry[0], append(entry[1:], argv...)...).CombinedOutput()
	require.Error(t, err, "set -e stops the container instead of starting without its config")
	assert.NotContains(t, string(out), "must not run")
}
