package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A restore drill is the restore drill script
// (infra/images/db/nbms-restore-drill.sh, installed in the backup image as
// nbms-restore-drill; scripts/ops/pgbackrest_restore_drill.sh is a link to
// it) run with --amcheck: it
// restores the latest backup of one repository into a scratch directory,
// starts the copy, counts the rows of the main tables, runs pg_amcheck
// over its tables and btree indexes, prints a JSON summary and removes
// the copy. The scheduler runs one on its --drill schedule, `nbms
// backup-drill` runs one now; both through recordDrill, so that each
// drill is logged, written to the status file and alerted the same way.

// DrillType is the type of a DrillResult, in the status file and in the
// alert body: what tells a receiver a failed drill from a failed backup
// (whose type is full, diff or incr).
const DrillType = "restore_drill"

// Defaults of DrillOptions' flags.
const (
	// DefaultDrillCommand is the drill script's name in the backup image.
	DefaultDrillCommand = "nbms-restore-drill"
	// DefaultDrillTables are the app's main tables.
	DefaultDrillTables = "audit_events,monitoring_sites,organisations,users"
)

// DrillOptions configures restore drills.
type DrillOptions struct {
	// Repo is the repository restored from, WAL included (the script's
	// --repo); 0 leaves pgBackRest's default.
	Repo int
	// Tables lists, comma-separated, the tables whose rows are counted.
	// The script checks the names.
	Tables string
	// Command is the drill script, a path or a name on PATH.
	Command string
	// ScratchDir, when set, is where each drill restores, into a new
	// directory of its own; empty leaves the script's default (mktemp -d
	// in $TMPDIR). It needs room for one copy of the database.
	ScratchDir string
	// StatusFile receives each drill's DrillResult as JSON, replaced
	// whole.
	StatusFile string
}

// flags registers o's flags on fs, each name with prefix ("drill-" for
// the scheduler's, which has flags of its own named repo and status).
func (o *DrillOptions) flags(fs *flag.FlagSet, prefix string) {
	fs.Var((*drillRepoFlag)(&o.Repo), prefix+"repo", "pgBackRest repository `N` (1-256) the drill restores from, backup and WAL (default: pgBackRest's choice: the first repository with a suitable backup, each WAL segment from the first that has it)")
	fs.StringVar(&o.Tables, prefix+"tables", DefaultDrillTables, "comma-separated `tables` whose rows the drill counts")
	fs.StringVar(&o.Command, prefix+"command", DefaultDrillCommand, "the restore drill script (scripts/ops/pgbackrest_restore_drill.sh), a `path` or a name on PATH")
	fs.StringVar(&o.ScratchDir, prefix+"scratch", "", "absolute `directory` in which each drill restores into a new directory, removed afterwards (and by the next drill when a kill left it); one drill at a time uses it (a lock file there); it needs room for one copy of the database (default: the script's, mktemp -d in $TMPDIR)")
	fs.StringVar(&o.StatusFile, prefix+"status", "", "`file` that receives each drill's result as JSON, for backup-status --drill-status (required for a drill)")
}

// drillRepoFlag is a drill's repository: one, unlike the scheduler's
// --repo.
type drillRepoFlag int

func (r *drillRepoFlag) String() string {
	if r == nil || *r == 0 {
		return ""
	}
	return strconv.Itoa(int(*r))
}

func (r *drillRepoFlag) Set(v string) error {
	n, err := parseRepo(v)
	if err == nil {
		err = checkRepo(nil, n)
	}
	if err != nil {
		return err
	}
	*r = drillRepoFlag(n)
	return nil
}

// problems reports every problem of o, naming its flags with prefix.
func (o DrillOptions) problems(prefix string) []error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("backup: --"+prefix+format, args...))
	}
	if o.Repo != 0 {
		if err := checkRepo(nil, o.Repo); err != nil {
			add("repo: %w", err)
		}
	}
	if o.Command == "" {
		add("command must name the restore drill script")
	}
	if o.ScratchDir != "" && !filepath.IsAbs(o.ScratchDir) {
		add("scratch %q must be an absolute path", o.ScratchDir)
	} else if fi, err := os.Stat(o.ScratchDir); o.ScratchDir != "" && (err != nil || !fi.IsDir()) {
		add("scratch %q must be an existing directory (it holds the drills' lock)", o.ScratchDir)
	}
	if o.StatusFile == "" {
		add("status is required: the file where each drill's result is recorded (backup-status --drill-status reads it)")
	} else if fi, err := os.Stat(filepath.Dir(o.StatusFile)); err != nil || !fi.IsDir() {
		add("status %q: its directory %s does not exist", o.StatusFile, filepath.Dir(o.StatusFile))
	}
	return errs
}

// Amcheck is what the drill's pg_amcheck checked, finding no corruption.
type Amcheck struct {
	// Indexes is the number of btree indexes checked (bt_index_check with
	// heapallindexed), system catalogs' included.
	Indexes int `json:"indexes"`
	// Relations is the number of tables checked (verify_heapam): heap
	// and TOAST relations.
	Relations int     `json:"relations"`
	Seconds   float64 `json:"seconds"`
}

// DrillResult is the outcome of one drill: the status file's content, the
// alert's body, and the fields of its log line. Its type, result, repo,
// stanza, duration_ms, label, error and cause mean what a Run's do, so a
// receiver of backup alerts reads a drill's too.
type DrillResult struct {
	Type   string `json:"type"`   // DrillType
	Result string `json:"result"` // ResultOK or ResultFailed
	OK     bool   `json:"ok"`
	Stanza string `json:"stanza,omitempty"`
	// Repo is the repository restored from, 0 for pgBackRest's default.
	Repo       int       `json:"repo,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	DurationMS int64     `json:"duration_ms"`
	// Label is the backup set restored.
	Label            string           `json:"label,omitempty"`
	MigrationVersion int64            `json:"migration_version,omitempty"`
	RowCounts        map[string]int64 `json:"row_counts,omitempty"`
	Amcheck          *Amcheck         `json:"amcheck,omitempty"`
	RestoreSeconds   float64          `json:"restore_seconds,omitempty"`
	RecoverySeconds  float64          `json:"recovery_seconds,omitempty"`
	// Error is the tail of the script's stderr, which ends with its
	// verdict; Cause names the failure when it is one Cause knows, or
	// corruption amcheck found.
	Error string `json:"error,omitempty"`
	Cause string `json:"cause,omitempty"`
	// LeftoversRemoved are the copies of earlier drills, killed before
	// they could remove them, that this drill removed first.
	LeftoversRemoved []string `json:"leftovers_removed,omitempty"`
}

// err is the failed drill as an error, nil for a passed one.
func (r DrillResult) err() error {
	if r.OK {
		return nil
	}
	return fmt.Errorf("backup: restore drill%s failed: %s", fromRepo(r.Repo), r.Error)
}

func fromRepo(repo int) string {
	if repo == 0 {
		return ""
	}
	return " from repo" + strconv.Itoa(repo)
}

// drillSummary is the part of the script's JSON summary a DrillResult
// keeps.
type drillSummary struct {
	Result           string           `json:"result"`
	Stanza           string           `json:"stanza"`
	BackupSet        string           `json:"backup_set"`
	MigrationVersion int64            `json:"migration_version"`
	RowCounts        map[string]int64 `json:"row_counts"`
	Amcheck          *Amcheck         `json:"amcheck"`
	RestoreSeconds   float64          `json:"restore_seconds"`
	RecoverySeconds  float64          `json:"recovery_seconds"`
}

// drillErrorLines is how much of the script's stderr a failed drill's
// error keeps: the verdict, its last line, and the details before it
// (pgBackRest's error and the lines under it, pg_amcheck's report, or the
// end of the copy's server log).
const drillErrorLines = 8

// runDrill runs the drill script once, as p's user (p.CommandPrefix) with
// p's config and stanza, and returns its result. It logs nothing. With a
// scratch directory it holds that directory's lock for the run and first
// removes the copies earlier drills left there (scratch.go).
func (o DrillOptions) runDrill(ctx context.Context, p PgBackRest) DrillResult {
	start := time.Now()
	r := DrillResult{Type: DrillType, Stanza: p.Stanza, Repo: o.Repo, StartedAt: start.UTC()}
	var err error
	if o.ScratchDir != "" {
		var lock *os.File
		if lock, err = lockScratch(o.ScratchDir); err == nil {
			defer lock.Close()
			r.LeftoversRemoved, err = removeLeftovers(o.ScratchDir)
		}
	}
	var s drillSummary
	if err == nil {
		s, err = o.exec(ctx, p)
	}
	r.FinishedAt = time.Now().UTC()
	r.DurationMS = r.FinishedAt.Sub(start).Milliseconds()
	if err != nil {
		r.Result, r.Error, r.Cause = ResultFailed, err.Error(), drillCause(err)
		return r
	}
	r.Result, r.OK = ResultOK, true
	if s.Stanza != "" {
		r.Stanza = s.Stanza // the script's, from PGBACKREST_STANZA when p names none
	}
	r.Label, r.MigrationVersion, r.RowCounts, r.Amcheck = s.BackupSet, s.MigrationVersion, s.RowCounts, s.Amcheck
	r.RestoreSeconds, r.RecoverySeconds = s.RestoreSeconds, s.RecoverySeconds
	return r
}

func (o DrillOptions) exec(ctx context.Context, p PgBackRest) (drillSummary, error) {
	args := []string{"--amcheck", "--tables", o.Tables}
	if p.ConfigPath != "" {
		args = append(args, "--config", p.ConfigPath)
	}
	if p.Stanza != "" {
		args = append(args, "--stanza", p.Stanza)
	}
	if o.Repo != 0 {
		args = append(args, "--repo", strconv.Itoa(o.Repo))
	}
	if o.ScratchDir != "" {
		// New, so the script creates it and removes it at its end.
		scratch := filepath.Join(o.ScratchDir, scratchPrefix+time.Now().UTC().Format("20060102T150405Z")+"-"+rand.Text()[:8])
		args = append(args, "--scratch", scratch)
		// For a script killed before its own cleanup could run
		// (SIGKILL): its copy of the database must not stay behind.
		defer func() { _ = os.RemoveAll(scratch) }()
	}
	argv := append(slices.Clone(p.CommandPrefix), o.Command)
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
	// SIGTERM, not SIGKILL: the script's trap stops the copy and removes
	// the scratch directory.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return drillSummary{}, &commandError{
			err:    fmt.Errorf("%s: %w: %s", o.Command, err, lastLines(stderr.String(), drillErrorLines)),
			stderr: stderr.String(),
		}
	}
	// The summary is the one line on stdout.
	var s drillSummary
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &s); err != nil {
		return s, fmt.Errorf("%s exited 0 without a JSON summary: %w: %s", o.Command, err, lastLines(stdout.String(), 1))
	}
	if s.Result != ResultOK {
		return s, fmt.Errorf("%s exited 0 with result %q", o.Command, s.Result)
	}
	if s.Amcheck == nil {
		return s, fmt.Errorf("%s exited 0 without amcheck figures: does it know --amcheck?", o.Command)
	}
	return s, nil
}

// amcheckVerdict starts the script's last line when pg_amcheck found
// corruption.
const amcheckVerdict = "drill FAILED: amcheck reported corruption"

// drillCause names why a drill failed: corruption amcheck found, or
// pgBackRest's error (Cause), from the restore or from the copy's
// archive-get (the server log the script shows).
func drillCause(err error) string {
	var ce *commandError
	if errors.As(err, &ce) && strings.Contains(ce.stderr, amcheckVerdict) {
		return "corruption found by amcheck"
	}
	return Cause(err)
}

// recordDrill is every drill's one code path, scheduled or not: run the
// script, write the status file, log the outcome in one line ("restore
// drill passed" at info level, "restore drill failed" at error level) and
// alert a failure. The error is the failed drill's, or the status file's
// that could not be written.
//
// A drill that ctx stopped (SIGTERM: the container stops) says nothing
// about the backups: it is logged as interrupted, at warn level, and
// neither written nor alerted, so the status file keeps the last drill
// that ran to its end.
func recordDrill(ctx context.Context, p PgBackRest, o DrillOptions, alerts alerter, logger *slog.Logger) (DrillResult, error) {
	r := o.runDrill(ctx, p)
	if !r.OK && ctx.Err() != nil {
		logger.LogAttrs(ctx, slog.LevelWarn, "restore drill interrupted", drillAttrs(r)...)
		return r, fmt.Errorf("backup: restore drill interrupted: %w", context.Cause(ctx))
	}
	statusErr := writeDrillStatus(o.StatusFile, r)
	if r.OK {
		logger.LogAttrs(ctx, slog.LevelInfo, "restore drill passed", drillAttrs(r)...)
	} else {
		logger.LogAttrs(ctx, slog.LevelError, "restore drill failed", drillAttrs(r)...)
		alerts.post(r)
	}
	if statusErr != nil {
		logger.Error("restore drill status not written", "file", o.StatusFile, "error", statusErr.Error())
	}
	return r, errors.Join(r.err(), statusErr)
}

func drillAttrs(r DrillResult) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("type", r.Type),
		slog.String("result", r.Result),
		slog.Int64("duration_ms", r.DurationMS),
	}
	if r.Repo != 0 {
		attrs = append(attrs, slog.Int("repo", r.Repo))
	}
	if r.Stanza != "" {
		attrs = append(attrs, slog.String("stanza", r.Stanza))
	}
	if r.OK {
		attrs = append(attrs,
			slog.String("label", r.Label),
			slog.Int64("migration_version", r.MigrationVersion),
			slog.Any("row_counts", r.RowCounts),
			slog.Group("amcheck", slog.Int("indexes", r.Amcheck.Indexes), slog.Int("relations", r.Amcheck.Relations),
				slog.Float64("seconds", r.Amcheck.Seconds)),
			slog.Float64("restore_seconds", r.RestoreSeconds),
			slog.Float64("recovery_seconds", r.RecoverySeconds))
	}
	if r.Error != "" {
		attrs = append(attrs, slog.String("error", r.Error))
	}
	if r.Cause != "" {
		attrs = append(attrs, slog.String("cause", r.Cause))
	}
	if len(r.LeftoversRemoved) > 0 {
		attrs = append(attrs, slog.Any("leftovers_removed", r.LeftoversRemoved))
	}
	return attrs
}

// DrillRunOptions configures `nbms backup-drill`: one drill, now.
type DrillRunOptions struct {
	PgBackRest PgBackRest
	Drill      DrillOptions
	AlertURL   string
}

// Flags registers backup-drill's flags on fs.
func (o *DrillRunOptions) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.PgBackRest.ConfigPath, "config", "", "pgbackrest.conf path (default: pgBackRest's own lookup, PGBACKREST_CONFIG)")
	fs.StringVar(&o.PgBackRest.Stanza, "stanza", "", "stanza to restore (default: PGBACKREST_STANZA)")
	o.Drill.flags(fs, "")
	fs.StringVar(&o.AlertURL, "alert-url", "", "URL that receives a JSON POST when the drill fails")
}

// Validate reports every problem of o.
func (o DrillRunOptions) Validate() error {
	errs := o.Drill.problems("")
	if o.AlertURL != "" {
		if err := checkAlertURL(o.AlertURL); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RunDrill runs one drill now, as the scheduler runs its scheduled ones
// (recordDrill), but without its serialisation: it does not know of a
// scheduler's backup in another process. The error is a failed drill's,
// or the status file's.
func RunDrill(ctx context.Context, o DrillRunOptions, logger *slog.Logger) (DrillResult, error) {
	if err := o.Validate(); err != nil {
		return DrillResult{}, err
	}
	return recordDrill(ctx, o.PgBackRest, o.Drill, newAlerter(o.AlertURL, logger), logger)
}
