// Package static holds the app's static assets (the landing page, the
// API's browsable page and its OpenAPI document) and publishes them for nginx: `nbms
// collectstatic` copies each one to STATIC_ROOT under a content-hashed name
// and writes a manifest, so nginx can cache them forever (immutable) and a
// new release never serves a stale copy under an old name.
package static

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed assets
var assets embed.FS

// LandingPage is the page the app serves at /; it is published with the
// other assets too.
func LandingPage() []byte {
	b, err := assets.ReadFile("assets/index.html")
	if err != nil {
		panic("static: index.html is not embedded: " + err.Error()) // a build defect
	}
	return b
}

// ManifestName is the manifest's file name inside the static root.
const ManifestName = "manifest.json"

// hashLength is how many hex digits of the SHA-256 go into a name: 48 bits
// make an accidental collision between two releases' files negligible.
const hashLength = 12

// Manifest maps each asset's logical path to its published, hashed path.
type Manifest map[string]string

// Files lists the embedded assets' logical paths, sorted.
func Files() ([]string, error) {
	var out []string
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		out = append(out, strings.TrimPrefix(p, "assets/"))
		return nil
	})
	sort.Strings(out)
	return out, err
}

// HashedName inserts the content hash before the extension:
// openapi.json → openapi.0123456789ab.json.
func HashedName(name string, content []byte) string {
	sum := sha256.Sum256(content)
	digest := hex.EncodeToString(sum[:])[:hashLength]
	ext := path.Ext(name)
	return strings.TrimSuffix(name, ext) + "." + digest + ext
}

// Collect publishes every asset into root (which must exist) and writes
// the manifest; unhashed copies are published too, for stable links such
// as /static/api.html. Each file is written to a temporary name and
// renamed, so nginx never serves a half-written file. Files from earlier
// releases are left in place: pages still open in browsers may reference
// them during a rolling deploy.
func Collect(root string) (Manifest, error) {
	info, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("static root: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("static root %s is not a directory", root)
	}
	names, err := Files()
	if err != nil {
		return nil, err
	}
	manifest := Manifest{}
	for _, name := range names {
		content, err := assets.ReadFile("assets/" + name)
		if err != nil {
			return nil, err
		}
		hashed := HashedName(name, content)
		for _, published := range []string{hashed, name} {
			if err := writeAtomic(filepath.Join(root, filepath.FromSlash(published)), content); err != nil {
				return nil, err
			}
		}
		manifest[name] = hashed
	}
	encoded, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(filepath.Join(root, ManifestName), append(encoded, '\n')); err != nil {
		return nil, err
	}
	return manifest, nil
}

func writeAtomic(dst string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".collect-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(content)
	if werr == nil {
		werr = tmp.Sync()
	}
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	// Readable by nginx, which runs as another user.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
