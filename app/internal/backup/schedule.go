package backup

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/robfig/cron/v3"
)

// ScheduleOptions configures the backup scheduler.
type ScheduleOptions struct {
	PgBackRest PgBackRest
	// FullSpec and DiffSpec are standard 5-field cron specs (minute hour
	// day-of-month month day-of-week), in UTC.
	FullSpec, DiffSpec string
	// Repos are the pgBackRest repositories (repoN in its config, 1-256)
	// that every scheduled run backs up, one after the other in this
	// order, each with its own `pgbackrest --repo=N backup`: one backup
	// goes to one repository only. A repository that fails does not stop
	// the others. Empty runs one backup without --repo, which pgBackRest
	// sends to its lowest-numbered repository.
	Repos []int
	// ExitOnFailure makes RunSchedule return after the first scheduled run
	// in which a backup failed (once every repository of that run has been
	// tried), or the first failed drill, so the process exits non-zero, the
	// container restarts and the orchestrator's restart alerting fires.
	// Without it failures are only logged (at error level), backups' also
	// counted.
	ExitOnFailure bool
	// AlertURL, when set, receives a POST of each failed run (a Run) and
	// each failed drill (a DrillResult) as JSON.
	AlertURL string
	// CreateStanza runs the idempotent `stanza-create` before scheduling,
	// so a fresh repository needs no manual step and a repository that
	// belongs to another cluster fails at start, not at the first backup.
	CreateStanza bool
	// DrillSpec is the cron spec (5 fields, UTC) of restore drills; empty
	// schedules none. A drill runs as PgBackRest's user, with its config
	// and stanza, never while a backup runs (see Scheduler.Drill), and a
	// failed one is alerted and, with ExitOnFailure, ends Run as a failed
	// backup does.
	DrillSpec string
	Drill     DrillOptions
}

// Flags registers the scheduler flags on fs. production sets the default
// of --exit-on-failure: a failed backup in production must be loud.
func (o *ScheduleOptions) Flags(fs *flag.FlagSet, production bool) {
	fs.StringVar(&o.PgBackRest.ConfigPath, "config", "", "pgbackrest.conf path (default: pgBackRest's own lookup, PGBACKREST_CONFIG)")
	fs.StringVar(&o.PgBackRest.Stanza, "stanza", "", "stanza to back up (default: PGBACKREST_STANZA)")
	fs.StringVar(&o.FullSpec, "full", "30 1 * * 0", "cron spec (5 fields, UTC) of full backups")
	fs.StringVar(&o.DiffSpec, "diff", "30 1 * * 1-6", "cron spec (5 fields, UTC) of differential backups")
	fs.Var((*repoFlag)(&o.Repos), "repo", "pgBackRest repository `N` (1-256) to back up; repeat for several (--repo 1 --repo 2): each scheduled run backs them up one after the other, in this order (default: one backup to pgBackRest's default, the lowest-numbered repository)")
	fs.BoolVar(&o.ExitOnFailure, "exit-on-failure", production, "exit non-zero after a scheduled run in which a backup failed, once it has tried every repository, or after a failed restore drill (the container restarts and alerts)")
	fs.StringVar(&o.AlertURL, "alert-url", "", "URL that receives a JSON POST for each failed backup and restore drill")
	fs.BoolVar(&o.CreateStanza, "create-stanza", true, "run the idempotent stanza-create at start")
	fs.StringVar(&o.DrillSpec, "drill", "", "cron `spec` (5 fields, UTC) of restore drills, e.g. \"15 4 * * 3\"; choose a time without backups: a drill that finds a backup running waits for it, and a backup due while a drill runs or waits is skipped (default: no drills)")
	o.Drill.flags(fs, "drill-")
}

// repoFlag is --repo: each use adds one repository.
type repoFlag []int

func (r *repoFlag) String() string {
	if r == nil {
		return ""
	}
	s := make([]string, len(*r))
	for i, n := range *r {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (r *repoFlag) Set(v string) error {
	n, err := parseRepo(v)
	if err != nil {
		return err
	}
	if err := checkRepo(*r, n); err != nil {
		return err
	}
	*r = append(*r, n)
	return nil
}

// parseRepo reads a repository number; checkRepo checks its range.
func parseRepo(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("repository %q is not a number (want 1-256, the N of pgBackRest's repoN)", v)
	}
	return n, nil
}

// maxRepo is pgBackRest's highest repository number.
const maxRepo = 256

// checkRepo reports why repo n cannot follow repos.
func checkRepo(repos []int, n int) error {
	if n < 1 || n > maxRepo {
		return fmt.Errorf("repository %d is out of range (want 1-%d, the N of pgBackRest's repoN)", n, maxRepo)
	}
	if slices.Contains(repos, n) {
		return fmt.Errorf("repository %d is given twice", n)
	}
	return nil
}

// specParser is the contract's schedule parser (config.CronParser), the
// one the stack config is validated with.
var specParser = config.CronParser

// ValidateSpec reports whether spec is a standard 5-field cron spec.
func ValidateSpec(spec string) error { return parseSpec(specParser, "cron", spec) }

func parseSpec(parser cron.Parser, name, spec string) error {
	if _, err := parser.Parse(spec); err != nil {
		return fmt.Errorf("backup: %s schedule %q: %w (want 5 fields: minute hour day-of-month month day-of-week, e.g. \"30 1 * * 0\")", name, spec, err)
	}
	return nil
}

func (o ScheduleOptions) validate(parser cron.Parser) error {
	var errs []error
	for _, s := range []struct{ name, spec string }{{"full", o.FullSpec}, {"diff", o.DiffSpec}} {
		if err := parseSpec(parser, s.name, s.spec); err != nil {
			errs = append(errs, err)
		}
	}
	for i, n := range o.Repos {
		if err := checkRepo(o.Repos[:i], n); err != nil {
			errs = append(errs, fmt.Errorf("backup: %w", err))
		}
	}
	if o.AlertURL != "" {
		if err := checkAlertURL(o.AlertURL); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case o.DrillSpec != "":
		if err := parseSpec(parser, "drill", o.DrillSpec); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, o.Drill.problems("drill-")...)
		if o.Drill.Repo != 0 && len(o.Repos) > 0 && !slices.Contains(o.Repos, o.Drill.Repo) {
			errs = append(errs, fmt.Errorf("backup: --drill-repo %d is not one of the repositories backed up (--repo %s): a drill proves this scheduler's backups",
				o.Drill.Repo, (*repoFlag)(&o.Repos).String()))
		}
	case o.Drill.Repo != 0 || o.Drill.ScratchDir != "" || o.Drill.StatusFile != "":
		errs = append(errs, errors.New("backup: --drill-repo, --drill-scratch and --drill-status configure restore drills, which only --drill SPEC schedules"))
	}
	return errors.Join(errs...)
}

// Run is the outcome of one scheduled backup to one repository, as logged
// and alerted.
type Run struct {
	Type Type `json:"type"`
	// Repo is the repository backed up (--repo), 0 when ScheduleOptions
	// named none.
	Repo       int    `json:"repo,omitempty"`
	Result     string `json:"result"` // ok, failed or skipped
	DurationMS int64  `json:"duration_ms"`
	Label      string `json:"label,omitempty"`
	SizeBytes  int64  `json:"size_bytes,omitempty"`
	RepoBytes  int64  `json:"repo_size_bytes,omitempty"`
	Error      string `json:"error,omitempty"`
	// Cause names why a failed backup failed, in an operator's words
	// (see Cause); empty when pgBackRest's error is not one it knows.
	Cause  string `json:"cause,omitempty"`
	Stanza string `json:"stanza,omitempty"`
}

// Results of a Run.
const (
	ResultOK      = "ok"
	ResultFailed  = "failed"
	ResultSkipped = "skipped"
)

// Scheduler runs backups, and restore drills, one at a time.
type Scheduler struct {
	opts   ScheduleOptions
	logger *slog.Logger
	parser cron.Parser
	alerts alerter

	gate     gate // entered for the whole of a run, every repository, or a drill
	failures atomic.Int64
	failed   chan error // receives a failed run or drill when ExitOnFailure is set
}

// NewScheduler validates opts.
func NewScheduler(opts ScheduleOptions, logger *slog.Logger) (*Scheduler, error) {
	return newScheduler(opts, logger, specParser)
}

func newScheduler(opts ScheduleOptions, logger *slog.Logger, parser cron.Parser) (*Scheduler, error) {
	if err := opts.validate(parser); err != nil {
		return nil, err
	}
	return &Scheduler{
		opts: opts, logger: logger, parser: parser,
		alerts: newAlerter(opts.AlertURL, logger),
		failed: make(chan error, 1),
	}, nil
}

// RunSchedule runs backups (and drills) on opts' schedules until ctx is
// done (nil error) or, with ExitOnFailure, until a scheduled run in which
// a backup failed has tried every repository (the error, naming the failed
// ones), or a drill failed.
func RunSchedule(ctx context.Context, opts ScheduleOptions, logger *slog.Logger) error {
	s, err := NewScheduler(opts, logger)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Failures is how many backups have failed since the scheduler started.
func (s *Scheduler) Failures() int64 { return s.failures.Load() }

// createStanzas runs stanza-create, which creates the stanza in every
// repository of the config (pgBackRest 2.45 takes no --repo for it). A
// failure stops the scheduler (a repository of another cluster, say),
// unless Repos names several and the first of them holds the stanza: then
// a later one failed, an off-host repository that cannot be reached at
// this start, and that is logged as an error while the first keeps
// getting its backups (the later one's scheduled backups fail loudly).
func (s *Scheduler) createStanzas(ctx context.Context) error {
	stanza := s.opts.PgBackRest.Stanza
	err := s.opts.PgBackRest.StanzaCreate(ctx)
	if err == nil {
		s.logger.Info("backup stanza ready", "stanza", stanza)
		return nil
	}
	s.logger.Error("backup stanza-create failed", "stanza", stanza, "error", err.Error())
	if len(s.opts.Repos) < 2 {
		return err
	}
	first := s.opts.PgBackRest
	first.Repo = s.opts.Repos[0]
	stanzas, infoErr := first.Info(ctx)
	if infoErr != nil {
		return errors.Join(err, infoErr)
	}
	st, findErr := find(stanzas, stanza)
	// 0 ok, 2 no valid backup yet: the stanza is there.
	if findErr != nil || (st.Status.Code != 0 && st.Status.Code != 2) {
		return fmt.Errorf("backup: stanza-create failed and repo%d holds no usable stanza: %w", first.Repo, err)
	}
	s.logger.Error("backup stanza ready in the first repository only: backups to the others fail until they can be reached",
		"stanza", stanza, "repo", first.Repo)
	return nil
}

// Run is RunSchedule for an existing Scheduler.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.opts.CreateStanza {
		if err := s.createStanzas(ctx); err != nil {
			return err
		}
	}
	c := cron.New(cron.WithParser(s.parser), cron.WithLocation(time.UTC),
		cron.WithLogger(cron.DiscardLogger))
	for _, job := range []struct {
		spec string
		t    Type
	}{{s.opts.FullSpec, Full}, {s.opts.DiffSpec, Diff}} {
		t := job.t
		if _, err := c.AddFunc(job.spec, func() { s.Backup(ctx, t) }); err != nil {
			return fmt.Errorf("backup: %s schedule: %w", t, err)
		}
	}
	if s.opts.DrillSpec != "" {
		if _, err := c.AddFunc(s.opts.DrillSpec, func() { s.Drill(ctx) }); err != nil {
			return fmt.Errorf("backup: drill schedule: %w", err)
		}
	}
	c.Start()
	attrs := []any{"full", s.opts.FullSpec, "diff", s.opts.DiffSpec}
	if len(s.opts.Repos) > 0 {
		attrs = append(attrs, "repos", s.opts.Repos)
	}
	if s.opts.DrillSpec != "" {
		attrs = append(attrs, "drill", s.opts.DrillSpec)
		if s.opts.Drill.Repo != 0 {
			attrs = append(attrs, "drill_repo", s.opts.Drill.Repo)
		}
	}
	s.logger.Info("backup scheduler started", append(attrs, "exit_on_failure", s.opts.ExitOnFailure)...)

	var err error
	select {
	case <-ctx.Done():
	case err = <-s.failed:
	}
	// Stop starts no new run; wait for the running one, which a done ctx
	// has already asked to stop (SIGTERM).
	<-c.Stop().Done()
	return err
}

// Backup runs a backup of type t now to each repository of opts.Repos,
// one after the other in their order, or, when Repos is empty, one backup
// without --repo. It returns one Run per repository, and logs each in
// exactly one line. A repository that fails does not stop the others: the
// local repository keeps getting backups while an off-host one is
// unreachable. A call while another, or a drill, is running is skipped as
// a whole, not queued, because a queued backup would start late and
// collide with the next scheduled one.
func (s *Scheduler) Backup(ctx context.Context, t Type) []Run {
	repos := s.opts.Repos
	if len(repos) == 0 {
		repos = []int{0} // no --repo
	}
	runs := make([]Run, len(repos))
	if blocked, ok := s.gate.enter(jobBackup); !ok {
		for i, repo := range repos {
			runs[i] = s.skip(ctx, t, repo, skipped(jobBackup, blocked))
		}
		return runs
	}
	defer s.gate.leave()

	var failed []string
	for i, repo := range repos {
		if i > 0 && ctx.Err() != nil {
			// Stopping (SIGTERM): a backup started now would only fail.
			runs[i] = s.skip(ctx, t, repo, "backup skipped: the scheduler is stopping")
			continue
		}
		runs[i] = s.backup(ctx, t, repo)
		if runs[i].Result == ResultFailed {
			if repo == 0 {
				failed = append(failed, fmt.Sprintf("%s backup failed: %s", t, runs[i].Error))
			} else {
				failed = append(failed, fmt.Sprintf("%s backup to repo%d failed: %s", t, repo, runs[i].Error))
			}
		}
	}
	if len(failed) > 0 && s.opts.ExitOnFailure {
		s.exit(errors.New("backup: " + strings.Join(failed, "; ")))
	}
	return runs
}

// exit makes Run return err (ExitOnFailure).
func (s *Scheduler) exit(err error) {
	select {
	case s.failed <- err:
	default: // Run is already on its way out
	}
}

// Drill runs a restore drill now, with opts' PgBackRest and Drill, through
// the one code path of every drill (recordDrill: status file, log line,
// alert). A running backup it waits for (one info line when it starts
// waiting; backups due meanwhile are skipped); another drill running or
// waiting skips it (a warning, nothing written). ran is false for a
// skipped drill, and for one whose ctx ended while it waited. With
// ExitOnFailure, a failed drill (or its status file not written) makes
// Run return.
func (s *Scheduler) Drill(ctx context.Context) (r DrillResult, ran bool) {
	attrs := []slog.Attr{slog.String("type", DrillType)}
	if s.opts.Drill.Repo != 0 {
		attrs = append(attrs, slog.Int("repo", s.opts.Drill.Repo))
	}
	waiting := func(running string) {
		s.logger.LogAttrs(ctx, slog.LevelInfo, "restore drill waits: a "+running+" is running", attrs...)
	}
	if blocked, ok := s.gate.await(ctx, jobDrill, waiting); !ok {
		if blocked == "" {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "restore drill interrupted while it waited", append(attrs, slog.String("result", ResultSkipped))...)
		} else {
			s.logger.LogAttrs(ctx, slog.LevelWarn, skipped(jobDrill, blocked), append(attrs, slog.String("result", ResultSkipped))...)
		}
		return DrillResult{}, false
	}
	defer s.gate.leave()
	r, err := recordDrill(ctx, s.opts.PgBackRest, s.opts.Drill, s.alerts, s.logger)
	if err != nil && s.opts.ExitOnFailure {
		s.exit(err)
	}
	return r, true
}

func (s *Scheduler) skip(ctx context.Context, t Type, repo int, msg string) Run {
	run := Run{Type: t, Repo: repo, Stanza: s.opts.PgBackRest.Stanza, Result: ResultSkipped}
	s.logger.LogAttrs(ctx, slog.LevelWarn, msg, runAttrs(run)...)
	return run
}

// backup runs one backup of type t to repo (0: no --repo), then logs,
// counts and alerts its outcome.
func (s *Scheduler) backup(ctx context.Context, t Type, repo int) Run {
	run := Run{Type: t, Repo: repo, Stanza: s.opts.PgBackRest.Stanza}
	p := s.opts.PgBackRest
	p.Repo = repo
	start := time.Now()
	err := p.Backup(ctx, t)
	run.DurationMS = time.Since(start).Milliseconds()
	if err == nil {
		run.Result = ResultOK
		// The size comes from the repository itself: what info reports is
		// what a restore would find. With a repository named, info gets
		// --repo too and reads that repository alone. Without --repo,
		// pgBackRest 2.45's info reads every repository and merges their
		// backups into one list, each tagged with database.repo-key: the
		// newest entry need not be this repository's, and picking by
		// repo-key would still tie the check of the local repo1's backup
		// to the off-host repo2 (info waits out an unreachable S3's
		// timeouts and reports the stanza "different across repos").
		if stanzas, infoErr := p.Info(ctx); infoErr != nil {
			err = fmt.Errorf("backup finished but info failed: %w", infoErr)
		} else if stanza, findErr := find(stanzas, p.Stanza); findErr != nil {
			err = findErr
		} else if b, ok := stanza.latest(); !ok || b.Type != t {
			err = fmt.Errorf("backup finished but the newest backup in the repository is not a %s backup", t)
		} else {
			run.Label, run.SizeBytes, run.RepoBytes = b.Label, b.Info.Size, b.Info.Repository.Size
		}
	}
	if err != nil {
		run.Result, run.Error, run.Cause = ResultFailed, err.Error(), Cause(err)
		n := s.failures.Add(1)
		attrs := append(runAttrs(run), slog.Int64("failures_total", n))
		s.logger.LogAttrs(ctx, slog.LevelError, "backup failed", attrs...)
		s.alerts.post(run)
		return run
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "backup finished", runAttrs(run)...)
	return run
}

func runAttrs(r Run) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("type", string(r.Type)),
		slog.String("result", r.Result),
		slog.Int64("duration_ms", r.DurationMS),
	}
	if r.Repo != 0 {
		attrs = append(attrs, slog.Int("repo", r.Repo))
	}
	if r.Stanza != "" {
		attrs = append(attrs, slog.String("stanza", r.Stanza))
	}
	if r.Label != "" {
		attrs = append(attrs, slog.String("label", r.Label),
			slog.Int64("size_bytes", r.SizeBytes), slog.Int64("repo_size_bytes", r.RepoBytes))
	}
	if r.Error != "" {
		attrs = append(attrs, slog.String("error", r.Error))
	}
	if r.Cause != "" {
		attrs = append(attrs, slog.String("cause", r.Cause))
	}
	return attrs
}
