package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// releaseIDLength is how many hex digits of the release hash name an app
// release: 12 (48 bits) keeps Docker names short and two releases of one
// stack from ever meeting by chance.
const releaseIDLength = 12

// releaseInputs is everything, known before any resource exists, that
// decides what an app container runs: the image's build inputs (the
// content of its build context, the base image reference, the build
// arguments) and the container's own settings (the plain environment and
// every plain setting of its spec). Two programs with the same inputs run
// the same release; any change is a new release, which starts beside the
// live one (see startApp).
//
// The operator's secrets are in it by digest. Not in it: the generated
// secrets (Pulumi outputs, unknown at program time). A rotated generated
// secret replaces the live release's containers in place (their
// replacement trigger, secretfiles.go), which costs a short gap.
type releaseInputs struct {
	ContextDigest string            `json:"context"`
	BuildArgs     map[string]string `json:"buildArgs"`
	Env           map[string]string `json:"env"`
	Container     any               `json:"container"`
	Secrets       map[string]string `json:"secrets"`
}

// releaseID hashes the inputs into a release identifier.
func releaseID(in releaseInputs) (string, error) {
	data, err := json.Marshal(in) // map keys are sorted: the encoding is stable
	if err != nil {
		return "", fmt.Errorf("deploy: hashing the app release: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:releaseIDLength], nil
}

// contextDigest hashes the files of a Docker build context that the build
// sees: every regular file under dir that its .dockerignore does not
// exclude, by path, mode and content, in lexical order. It follows the
// same rules as Docker and pulumi-docker (moby/patternmatcher), so a change
// that rebuilds the image is a change of this digest and a change the
// build ignores is not.
func contextDigest(dir string) (string, error) {
	var patterns []string
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("deploy: reading %s/.dockerignore: %w", dir, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("deploy: %w", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return "", fmt.Errorf("deploy: %s/.dockerignore: %w", dir, err)
	}
	h := sha256.New()
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if e.IsDir() {
			if excluded && !mayReinclude(pm, rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if excluded || !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "%s\x00%o\x00", rel, info.Mode().Perm())
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("deploy: hashing the build context %s: %w", dir, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// mayReinclude reports whether an exception pattern (!path) could bring back
// something under an excluded directory, which must then still be walked.
func mayReinclude(pm *patternmatcher.PatternMatcher, dir string) bool {
	for _, p := range pm.Patterns() {
		if p.Exclusion() && strings.HasPrefix(p.String()+"/", dir+"/") {
			return true
		}
	}
	return false
}
