package backup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// A drill's scratch directory (DrillOptions.ScratchDir) holds one copy of
// the database at a time. Two things keep it that way:
//   - each drill holds an exclusive lock on scratchLockName there for its
//     whole run, so a drill by hand (nbms backup-drill, another process)
//     and a scheduled one never restore side by side, nor remove each
//     other's copy;
//   - under that lock, a drill first removes the copies that earlier
//     drills left: the script removes its copy on any exit it sees, but a
//     drill killed with its container (SIGKILL, a host restart) sees none,
//     and its copy would stay on the volume for good.

// scratchLockName is the lock file in a scratch directory.
const scratchLockName = ".nbms-drill.lock"

// scratchPrefix starts the name of each drill's own directory under the
// scratch directory: only those are removed as leftovers.
const scratchPrefix = "nbms-drill-"

// lockScratch takes the scratch directory's lock, or fails at once naming
// the drill that holds it. Closing the file releases it (so does the
// process's end, however it ends).
func lockScratch(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, scratchLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("backup: drill scratch lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("backup: another restore drill is using %s (its lock %s is held): one copy of the database at a time", dir, scratchLockName)
		}
		return nil, fmt.Errorf("backup: drill scratch lock: %w", err)
	}
	return f, nil
}

// removeLeftovers removes the copies earlier drills left in dir (call it
// holding dir's lock) and returns their paths.
func removeLeftovers(dir string) ([]string, error) {
	left, err := filepath.Glob(filepath.Join(dir, scratchPrefix+"*"))
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, path := range left {
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
		}
	}
	return left, errors.Join(errs...)
}
