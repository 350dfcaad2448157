package deploy

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
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

// Every setting of a container enters the release hash, the ones the
// program does not write today included: a setting added to newContainer
// tomorrow makes a new release instead of replacing the live one in place.
// Each exported field of docker.ContainerArgs whose type has a sample below
// is set in turn, and the digest must change; the fields with other types
// (lists of nested objects) are covered by the walker's struct and slice
// cases, checked on the ones the program does write.
func TestSettingsDigestCoversEveryContainerSetting(t *testing.T) {
	samples := map[reflect.Type]reflect.Value{
		reflect.TypeFor[pulumi.StringInput]():      reflect.ValueOf(pulumi.String("x")),
		reflect.TypeFor[pulumi.StringPtrInput]():   reflect.ValueOf(pulumi.String("x")),
		reflect.TypeFor[pulumi.BoolPtrInput]():     reflect.ValueOf(pulumi.Bool(true)),
		reflect.TypeFor[pulumi.IntPtrInput]():      reflect.ValueOf(pulumi.Int(7)),
		reflect.TypeFor[pulumi.StringArrayInput](): reflect.ValueOf(pulumi.StringArray{pulumi.String("x")}),
		reflect.TypeFor[pulumi.StringMapInput]():   reflect.ValueOf(pulumi.StringMap{"k": pulumi.String("v")}),
		reflect.TypeFor[pulumi.IntArrayInput]():    reflect.ValueOf(pulumi.IntArray{pulumi.Int(7)}),
	}
	base := settingsDigest(&docker.ContainerArgs{})
	typ := reflect.TypeFor[docker.ContainerArgs]()
	covered := 0
	for i := range typ.NumField() {
		f := typ.Field(i)
		sample, ok := samples[f.Type]
		if !ok {
			continue
		}
		args := &docker.ContainerArgs{}
		reflect.ValueOf(args).Elem().Field(i).Set(sample)
		assert.NotEqual(t, base, settingsDigest(args), "docker.ContainerArgs.%s is not in the release hash", f.Name)
		covered++
	}
	assert.Greater(t, covered, 40, "most of the provider's container settings are plain values")

	// Nested objects: a value inside a list of structs counts too.
	withCheck := func(interval string) *docker.ContainerArgs {
		return &docker.ContainerArgs{Healthcheck: &docker.ContainerHealthcheckArgs{
			Tests: pulumi.ToStringArray([]string{"CMD", "x"}), Interval: pulumi.String(interval),
		}, Volumes: docker.ContainerVolumeArray{docker.ContainerVolumeArgs{VolumeName: pulumi.String("v"), ReadOnly: pulumi.Bool(true)}}}
	}
	assert.NotEqual(t, settingsDigest(withCheck("10s")), settingsDigest(withCheck("11s")))
	assert.Equal(t, settingsDigest(withCheck("10s")), settingsDigest(withCheck("10s")), "stable")
	// An output (an image not built yet, a secret) is the same unknown
	// whatever it will be: its inputs stand for it.
	a, b := withCheck("10s"), withCheck("10s")
	a.Image, b.Image = pulumi.String("x").ToStringOutput(), pulumi.String("y").ToStringOutput()
	assert.Equal(t, settingsDigest(a), settingsDigest(b))
}
