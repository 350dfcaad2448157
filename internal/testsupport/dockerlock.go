package testsupport

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// LockDockerEngine makes the test the only one using the machine's Docker
// engine until it ends. `go test ./...` runs packages in parallel, and two
// of them (the image tests and the real deploy) use the engine:
//   - both build the same Dockerfiles, and concurrent BuildKit builds of
//     the same steps on one daemon are known to stall for good
//     (moby/buildkit#2440, moby/moby#40624), which a cold CI machine hit: a
//     build that never returned until the 45-minute test timeout;
//   - the real deploy restarts the daemon itself (a host reboot), which
//     would kill whatever another test runs on it.
//
// An advisory lock file serialises them across processes; the kernel drops
// it when the process dies, so a killed run leaves no stale lock. Within
// one process, call it once per test: a second lock on a new descriptor
// waits for the first.
func LockDockerEngine(t testing.TB) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "nbms-docker-engine.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("docker build lock: %v", err)
	}
	start := time.Now()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("docker build lock %s: %v", path, err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Logf("waited %s for another test's use of the Docker engine", waited.Round(time.Second))
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
}
