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
// Entrypoints + Command: files land verbatim with mode 0600, a secret taken
// from the environment is gone before exec, and the real command gets its
// arguments untouched.
func TestFilesPrologueWritesFilesThenExecs(t *testing.T) {
	dir := t.TempDir()
	conf := "worker_processes 1;\nlog_format x '$remote_addr \"$request\"';\n# `not a command` $(neither)\n"
	files := []renderedFile{
		{path: filepath.Join(dir, "nbms", "nginx.conf"), content: conf},
		{path: filepath.Join(dir, "nbms", "tls", "key.pem"), fromEnv: "NBMS_TLS_KEY"},
	}
	entry, args := withFiles(files, "/bin/sh", "-c", `env; printf 'ARG:%s\n' "$@"`, "cmd", "one", "two words", "--")
	var argv []string
	for _, a := range args {
		argv = append(argv, string(a.(pulumi.String)))
	}
	cmd := exec.Command(entry[0], append(entry[1:], argv...)...)
	key := "-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END EC PRIVATE KEY-----"
	cmd.Env = append(os.Environ(), "NBMS_TLS_KEY="+key)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))

	got, err := os.ReadFile(files[0].path)
	require.NoError(t, err)
	assert.Equal(t, conf+"\n", string(got), "written verbatim: no expansion of $, ` or quotes")
	got, err = os.ReadFile(files[1].path)
	require.NoError(t, err)
	assert.Equal(t, key+"\n", string(got))
	for _, f := range files {
		info, err := os.Stat(f.path)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), f.path)
	}
	assert.NotContains(t, string(out), "NBMS_TLS_KEY", "the secret variable is unset before exec")
	assert.NotContains(t, string(out), "c2VjcmV0LWtleS1tYXRlcmlhbA")
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
