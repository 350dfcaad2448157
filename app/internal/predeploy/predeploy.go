// Package predeploy runs the checks a release must pass before it takes
// traffic: the env contract and its deploy checks (the Go counterpart of
// Django's `check --deploy`), the database and Redis connections, pending
// migrations and the writable file roots. It only reports; the command
// decides the exit status from Report.Failed.
package predeploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
)

// Status of one check.
type Status string

// The statuses. Skipped checks are listed so the reader sees what was not
// verified and why; they never count as passing silently.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Result is the outcome of one check.
type Result struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Status Status `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// Report is every result in the order the checks ran.
type Report struct {
	Profile config.Profile `json:"profile"`
	Results []Result       `json:"results"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, res := range r.Results {
		if res.Status == Fail {
			return true
		}
	}
	return false
}

// Counts returns how many checks passed, failed and were skipped.
func (r Report) Counts() (pass, fail, skip int) {
	for _, res := range r.Results {
		switch res.Status {
		case Pass:
			pass++
		case Fail:
			fail++
		case Skip:
			skip++
		}
	}
	return
}

// Probe checks one external dependency.
type Probe func(ctx context.Context) error

// Inputs are what Run checks. Settings may be partially filled when
// LoadErr is set; the checks that need a dependency are then skipped.
type Inputs struct {
	Settings *config.Settings
	LoadErr  error
	Database Probe
	Redis    Probe
	// PendingMigrations returns the versions not yet applied; nil when the
	// migration check is skipped (--skip-migrate-check).
	PendingMigrations func(ctx context.Context) ([]string, error)
	// SkipMigrateReason explains why PendingMigrations is nil.
	SkipMigrateReason string
	// Timeout bounds each network check.
	Timeout time.Duration
}

// Run executes every check.
func Run(ctx context.Context, in Inputs) Report {
	s := in.Settings
	if s == nil {
		s = &config.Settings{}
	}
	rep := Report{Profile: s.Profile}
	add := func(id, title string, err error) {
		res := Result{ID: id, Title: title, Status: Pass}
		if err != nil {
			res.Status, res.Detail = Fail, err.Error()
		}
		rep.Results = append(rep.Results, res)
	}
	skip := func(id, title, why string) {
		rep.Results = append(rep.Results, Result{ID: id, Title: title, Status: Skip, Detail: why})
	}

	add("NBMS-ENV", "the environment satisfies the env contract", contractErr(in.LoadErr))
	add("NBMS-C000", "the production profile is selected", profileErr(s.Profile))

	// Deploy checks are shown for every profile: predeploy answers "would
	// this configuration be accepted in production?".
	var cerr *config.Error
	errors.As(in.LoadErr, &cerr)
	for _, c := range config.DeployChecks() {
		title := c.Title + " (" + strings.Join(c.Vars, ", ") + ")"
		if cerr != nil && mentionsAny(cerr, c.Vars) {
			skip(c.ID, title, "variable invalid: see NBMS-ENV")
			continue
		}
		add(c.ID, title, c.Run(s))
	}

	timeout := in.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	probe := func(id, title string, p Probe) {
		if p == nil {
			skip(id, title, "not configured (see NBMS-ENV)")
			return
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		add(id, title, p(cctx))
	}
	probe("NBMS-DB", "PostgreSQL answers", in.Database)
	probe("NBMS-REDIS", "Redis answers", in.Redis)

	switch {
	case in.PendingMigrations == nil:
		skip("NBMS-MIGRATE", "no migration is pending", in.SkipMigrateReason)
	default:
		cctx, cancel := context.WithTimeout(ctx, timeout)
		pending, err := in.PendingMigrations(cctx)
		cancel()
		if err == nil && len(pending) > 0 {
			err = fmt.Errorf("%d pending: %s; run `nbms migrate up`", len(pending), strings.Join(pending, ", "))
		}
		add("NBMS-MIGRATE", "no migration is pending", err)
	}

	add("NBMS-STATIC", "STATIC_ROOT is a writable directory", writableDir(s.StaticRoot))
	add("NBMS-MEDIA", "MEDIA_ROOT is a writable directory", writableDir(s.MediaRoot))
	return rep
}

func contractErr(err error) error {
	if err == nil {
		return nil
	}
	var cerr *config.Error
	if errors.As(err, &cerr) {
		lines := make([]string, len(cerr.Problems))
		for i, p := range cerr.Problems {
			lines[i] = p.String()
		}
		return errors.New(strings.Join(lines, "\n"))
	}
	return err
}

func profileErr(p config.Profile) error {
	if p != config.Prod {
		return fmt.Errorf("NBMS_ENV is %q; predeploy-check judges a production configuration", p)
	}
	return nil
}

func mentionsAny(cerr *config.Error, names []string) bool {
	for _, p := range cerr.Problems {
		for _, n := range names {
			if p.Var == n && p.Check == "" {
				return true
			}
		}
	}
	return false
}

// writableDir proves the directory accepts a new file, the way the app will
// use it, rather than trusting permission bits (read-only mounts, ACLs).
func writableDir(dir string) error {
	if dir == "" {
		return errors.New("not set")
	}
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, errors.Unwrap(err))
	}
	if !info.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".predeploy-*")
	if err != nil {
		return fmt.Errorf("%s is not writable: %w", dir, errors.Unwrap(err))
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(filepath.Clean(name))
}

// WriteText prints the report as an aligned table followed by a summary.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "STATUS\tCHECK\tDESCRIPTION\n")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", strings.ToUpper(string(res.Status)), res.ID, res.Title)
		if res.Detail != "" {
			for _, line := range strings.Split(res.Detail, "\n") {
				fmt.Fprintf(tw, "\t\t  → %s\n", line)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	pass, fail, skip := r.Counts()
	verdict := "ready to deploy"
	if fail > 0 {
		verdict = "NOT ready to deploy"
	}
	_, err := fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped: %s\n", pass, fail, skip, verdict)
	return err
}

// WriteJSON prints the report for machines.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
