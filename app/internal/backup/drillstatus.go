package backup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DefaultMaxDrillAge matches a weekly drill, with two hours of slack for a
// slow one.
const DefaultMaxDrillAge = 7*24*time.Hour + 2*time.Hour

// DrillCheckName is the name of backup-status's check of the last drill.
const DrillCheckName = "restore drill"

// writeDrillStatus replaces path with r as JSON: a temporary file in the
// same directory, renamed over it, so that a reader (backup-status) sees
// the last drill or the one before, never half of one.
func writeDrillStatus(path string, r DrillResult) error {
	if path == "" {
		// A drill without DrillOptions.StatusFile, which the checks of
		// the scheduler's and backup-drill's options refuse.
		return errors.New("backup: no drill status file")
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	// Readable by monitoring and auditors: it holds no secret.
	if err == nil {
		err = f.Chmod(0o644)
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// ReadDrillStatus reads the status file a drill wrote.
func ReadDrillStatus(path string) (DrillResult, error) {
	var r DrillResult
	data, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("backup: decoding drill status %s: %w", path, err)
	}
	if r.Type != DrillType {
		return r, fmt.Errorf("backup: %s is not a drill status (type %q)", path, r.Type)
	}
	if r.OK && r.Amcheck == nil {
		return r, fmt.Errorf("backup: %s: a passed drill without amcheck figures is not one of this program's", path)
	}
	return r, nil
}

// EvaluateDrill is the "restore drill" check of the status file at path,
// at now: ok only when the last drill passed and finished at most maxAge
// before now. It returns the last drill too, nil when there is none to
// read.
func EvaluateDrill(path string, now time.Time, maxAge time.Duration) (Check, *DrillResult) {
	c := Check{Name: DrillCheckName}
	r, err := ReadDrillStatus(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Detail = fmt.Sprintf("no restore drill has run yet: %s does not exist", path)
		return c, nil
	case err != nil:
		c.Detail = fmt.Sprintf("cannot read the last drill's status: %v", err)
		return c, nil
	}
	age := now.Sub(r.FinishedAt)
	when := fmt.Sprintf("finished %s ago (max %s), from %s", roundAge(age), maxAge, drillRepoName(r.Repo))
	if !r.OK {
		cause := ""
		if r.Cause != "" {
			cause = r.Cause + ": "
		}
		c.Detail = fmt.Sprintf("last drill FAILED, %s: %s%s", when, cause, r.Error)
		return c, &r
	}
	c.OK = age <= maxAge
	c.Detail = fmt.Sprintf("last drill passed, %s, backup %s: rows %s; amcheck: %d btree indexes, %d tables",
		when, r.Label, rowList(r.RowCounts), r.Amcheck.Indexes, r.Amcheck.Relations)
	return c, &r
}

func drillRepoName(repo int) string {
	if repo == 0 {
		return "pgBackRest's default repository"
	}
	return fmt.Sprintf("repo%d", repo)
}

// rowList is "audit_events=5 users=1", sorted by table.
func rowList(counts map[string]int64) string {
	var b strings.Builder
	for i, table := range slices.Sorted(maps.Keys(counts)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", table, counts[table])
	}
	return b.String()
}
