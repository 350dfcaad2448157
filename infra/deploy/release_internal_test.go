package deploy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The context digest changes with what the build sees and only with that:
// the same rules as the repository's .dockerignore (everything but go.mod,
// go.sum and app/, without app's tests).
func TestContextDigestFollowsTheDockerignore(t *testing.T) {
	dir := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		full := filepath.Join(dir, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	}
	ignore, err := os.ReadFile(filepath.Join("..", "..", ".dockerignore"))
	require.NoError(t, err)
	write(".dockerignore", string(ignore))
	write("go.mod", "module x\n")
	write("app/main.go", "package main\n")
	write("app/internal/x/x_test.go", "package x\n")
	write("app/internal/x/testdata/f", "data\n")
	write("infra/deploy/program.go", "package deploy\n")
	write("README.md", "readme\n")

	digest := func() string {
		t.Helper()
		d, err := contextDigest(dir)
		require.NoError(t, err)
		return d
	}
	first := digest()
	assert.Equal(t, first, digest(), "stable")
	for _, ignored := range []string{"app/internal/x/x_test.go", "app/internal/x/testdata/f", "infra/deploy/program.go", "README.md"} {
		write(ignored, "changed\n")
		assert.Equal(t, first, digest(), "%s is not in the build context", ignored)
	}
	write("app/main.go", "package main // changed\n")
	second := digest()
	assert.NotEqual(t, first, second, "app/ is in the build context")
	write("go.mod", "module x // changed\n")
	assert.NotEqual(t, second, digest(), "go.mod is in the build context")
	write("app/new.go", "package main\n")
	third := digest()
	require.NoError(t, os.Chmod(filepath.Join(dir, "app/new.go"), 0o755))
	assert.NotEqual(t, third, digest(), "a file's mode is part of it")
}
