package deploy_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/deploy"
)

// The shell scripts the program passes to `sh -c` pass shellcheck as POSIX
// sh, as the repository's script files do (make lint): they run in
// containers, where a mistake shows only at deploy time.
func TestInlineShellScriptsPassShellcheck(t *testing.T) {
	for name, script := range map[string]string{
		"RedisScript": deploy.RedisScript, "CacheLoginScript": deploy.CacheLoginScript, "FilesPrologue": deploy.FilesPrologue,
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command("shellcheck", "--shell=sh", "-")
			cmd.Stdin = strings.NewReader("#!/bin/sh\n" + script + "\n")
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "shellcheck (installed by make setup) on %s:\n%s", name, out)
		})
	}
}
