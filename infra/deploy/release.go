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
	"reflect"
	"slices"
	"strings"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// releaseIDLength is how many hex digits of the release hash name an app
// release: 12 (48 bits) keeps Docker names short and two releases of one
// stack from ever meeting by chance.
const releaseIDLength = 12

// releaseInputs is everything, known before any resource exists, that
// decides what an app release runs: the image's build inputs (the content
// of its build context, the base image reference, the build arguments) and
// every setting the program writes into the release's containers
// (settingsDigest of their docker.ContainerArgs, the environment
// included). Two programs with the same inputs run the same release; any
// change is a new release, which starts beside the live one (see
// startApp), never an in-place replacement of the live one.
//
// The operator's secrets are in it by digest, the generated ones by their
// generation (nbms:secretGenerations, see releaseSecrets): their values are
// Pulumi outputs, unknown at program time. A generated secret made anew any
// other way (the driver's --replace of its RandomPassword) is not a new
// release: it replaces the live release's containers in place (their
// replacement trigger, secretfiles.go), which costs a short gap.
type releaseInputs struct {
	ContextDigest string            `json:"context"`
	BuildArgs     map[string]string `json:"buildArgs"`
	Containers    string            `json:"containers"`
	Secrets       map[string]string `json:"secrets"`
}

// settingsDigest hashes every setting in args: each exported field of
// docker.ContainerArgs, by name, recursively, whatever its type, so that a
// setting added to newContainer tomorrow is covered without a second edit.
// A Pulumi output (an image digest not built yet, a secret) is unknown at
// program time and reads as "<output>": the build inputs and the secrets'
// digests stand for those.
func settingsDigest(args ...*docker.ContainerArgs) string {
	h := sha256.New()
	for _, a := range args {
		writeSettings(h, reflect.ValueOf(a))
		io.WriteString(h, "\n")
	}
	return hex.EncodeToString(h.Sum(nil))
}

var outputType = reflect.TypeFor[pulumi.Output]()

func writeSettings(w io.Writer, v reflect.Value) {
	if !v.IsValid() {
		io.WriteString(w, "nil")
		return
	}
	if v.Type().Implements(outputType) {
		io.WriteString(w, "<output>")
		return
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			io.WriteString(w, "nil")
			return
		}
		writeSettings(w, v.Elem())
	case reflect.Struct:
		io.WriteString(w, v.Type().String()+"{")
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				fmt.Fprintf(w, "%s:", f.Name)
				writeSettings(w, v.Field(i))
				io.WriteString(w, ",")
			}
		}
		io.WriteString(w, "}")
	case reflect.Slice, reflect.Array:
		io.WriteString(w, "[")
		for i := range v.Len() {
			writeSettings(w, v.Index(i))
			io.WriteString(w, ",")
		}
		io.WriteString(w, "]")
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		io.WriteString(w, "{")
		for _, k := range keys {
			fmt.Fprintf(w, "%q:", fmt.Sprint(k))
			writeSettings(w, v.MapIndex(k))
			io.WriteString(w, ",")
		}
		io.WriteString(w, "}")
	default:
		fmt.Fprintf(w, "%#v", v.Interface())
	}
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
