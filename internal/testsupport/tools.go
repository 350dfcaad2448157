package testsupport

import (
	"os"
	"path/filepath"
	"testing"
)

// Tool is the path of a program `make setup` installs into the module's
// .tools directory (scripts/setup.sh). A test that needs one fails,
// naming the fix, when it is not there.
func Tool(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testsupport.Tool: no go.mod above the working directory")
		}
		dir = parent
	}
	path := filepath.Join(dir, ".tools", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is not installed (%v): run `make setup`", name, err)
	}
	return path
}
