package static

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/nginx"
)

func TestCollectPublishesHashedFilesAndManifest(t *testing.T) {
	root := t.TempDir()
	manifest, err := Collect(root)
	require.NoError(t, err)

	names, err := Files()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"api.html", "index.html", "openapi.json"}, names)
	immutable := regexp.MustCompile(nginx.HashedNamePattern)
	for _, name := range names {
		original, err := assets.ReadFile("assets/" + name)
		require.NoError(t, err)
		hashed := manifest[name]
		assert.Regexp(t, immutable, hashed, "nginx must recognise %s as immutable", hashed)
		assert.NotRegexp(t, immutable, name, "the stable name must not be cached forever")
		for _, published := range []string{hashed, name} {
			got, err := os.ReadFile(filepath.Join(root, published))
			require.NoError(t, err)
			assert.Equal(t, original, got)
			info, err := os.Stat(filepath.Join(root, published))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o644), info.Mode().Perm(), "readable by nginx")
		}
	}

	var onDisk Manifest
	raw, err := os.ReadFile(filepath.Join(root, ManifestName))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &onDisk))
	assert.Equal(t, manifest, onDisk)

	var doc map[string]any
	openapi, err := os.ReadFile(filepath.Join(root, manifest["openapi.json"]))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(openapi, &doc), "the OpenAPI document is valid JSON")
	assert.Equal(t, "3.1.0", doc["openapi"])
}

func TestCollectIsIdempotentAndKeepsOlderReleases(t *testing.T) {
	root := t.TempDir()
	old := filepath.Join(root, "openapi.000000000000.json")
	require.NoError(t, os.WriteFile(old, []byte("{}"), 0o644))
	first, err := Collect(root)
	require.NoError(t, err)
	second, err := Collect(root)
	require.NoError(t, err)
	assert.Equal(t, first, second)
	assert.FileExists(t, old, "a page still open may reference the previous release's file")
	leftovers, err := filepath.Glob(filepath.Join(root, ".collect-*"))
	require.NoError(t, err)
	assert.Empty(t, leftovers, "no temporary file remains")
}

func TestCollectRefusesAMissingRoot(t *testing.T) {
	_, err := Collect(filepath.Join(t.TempDir(), "missing"))
	assert.ErrorContains(t, err, "static root")
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err = Collect(file)
	assert.ErrorContains(t, err, "not a directory")
}

func TestHashedNameChangesWithContent(t *testing.T) {
	a := HashedName("x/app.css", []byte("a"))
	b := HashedName("x/app.css", []byte("b"))
	assert.NotEqual(t, a, b)
	assert.Regexp(t, `^x/app\.[0-9a-f]{12}\.css$`, a)
}

func TestLandingPageIsTheEmbeddedIndex(t *testing.T) {
	page := LandingPage()
	assert.Contains(t, string(page), "<title>NBMS")
	assert.NotContains(t, string(page), "<script", "the API's CSP allows no script")
}
