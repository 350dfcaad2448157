package testsupport

import (
	"fmt"
	"os"
	"os/exec"
)

// BuildBinary builds the module's package pkg (an import path, so the
// working directory does not matter) into path, the way app/Dockerfile
// builds the app: -trimpath and CGO_ENABLED=0. It takes no testing.TB
// because TestMain functions use it too; the error carries go build's
// output.
func BuildBinary(path, pkg string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", path, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return nil
}
