package testsupport

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// LockDockerBuilds makes the test the only one building images on the
// machine's Docker engine until it calls the returned release, or ends. `go test ./...` runs packages in
// parallel, and two packages (the image tests and the real deploy) build
// the same Dockerfiles; concurrent BuildKit builds of the same steps on
// one daemon are known to stall for good (moby/buildkit#2440,
// moby/moby#40624), which a cold CI machine hit: a build that never
// returned until the 45-minute test timeout. An advisory lock file
// serialises them across processes; the kernel drops it when the process
// dies, so a killed run leaves no stale lock.
func LockDockerBuilds(t testing.TB) (release func()) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "nbms-docker-builds.lock")
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
		t.Logf("waited %s for another test's Docker builds", waited.Round(time.Second))
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			f.Close()
		})
	}
	t.Cleanup(release)
	return release
}
