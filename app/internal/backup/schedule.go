package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
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
	// ExitOnFailure makes RunSchedule return after the first failed backup,
	// so the process exits non-zero, the container restarts and the
	// orchestrator's restart alerting fires. Without it failures are only
	// logged (at error level) and counted.
	ExitOnFailure bool
	// AlertURL, when set, receives a POST of the failed run as JSON.
	AlertURL string
	// CreateStanza runs the idempotent `stanza-create` before scheduling,
	// so a fresh repository needs no manual step and a repository that
	// belongs to another cluster fails at start, not at the first backup.
	CreateStanza bool
}

// Flags registers the scheduler flags on fs. production sets the default
// of --exit-on-failure: a failed backup in production must be loud.
func (o *ScheduleOptions) Flags(fs *flag.FlagSet, production bool) {
	fs.StringVar(&o.PgBackRest.ConfigPath, "config", "", "pgbackrest.conf path (default: pgBackRest's own lookup, PGBACKREST_CONFIG)")
	fs.StringVar(&o.PgBackRest.Stanza, "stanza", "", "stanza to back up (default: PGBACKREST_STANZA)")
	fs.StringVar(&o.FullSpec, "full", "30 1 * * 0", "cron spec (5 fields, UTC) of full backups")
	fs.StringVar(&o.DiffSpec, "diff", "30 1 * * 1-6", "cron spec (5 fields, UTC) of differential backups")
	fs.BoolVar(&o.ExitOnFailure, "exit-on-failure", production, "exit non-zero after a failed backup (the container restarts and alerts)")
	fs.StringVar(&o.AlertURL, "alert-url", "", "URL that receives a JSON POST for each failed backup")
	fs.BoolVar(&o.CreateStanza, "create-stanza", true, "run the idempotent stanza-create at start")
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
	if o.AlertURL != "" {
		u, err := url.Parse(o.AlertURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("backup: alert URL %q must be an absolute http(s) URL", o.AlertURL))
		}
	}
	return errors.Join(errs...)
}

// Run is the outcome of one scheduled backup, as logged and alerted.
type Run struct {
	Type       Type   `json:"type"`
	Result     string `json:"result"` // ok, failed or skipped
	DurationMS int64  `json:"duration_ms"`
	Label      string `json:"label,omitempty"`
	SizeBytes  int64  `json:"size_bytes,omitempty"`
	RepoBytes  int64  `json:"repo_size_bytes,omitempty"`
	Error      string `json:"error,omitempty"`
	Stanza     string `json:"stanza,omitempty"`
}

// Results of a Run.
const (
	ResultOK      = "ok"
	ResultFailed  = "failed"
	ResultSkipped = "skipped"
)

// Scheduler runs backups one at a time.
type Scheduler struct {
	opts   ScheduleOptions
	logger *slog.Logger
	parser cron.Parser
	client *http.Client

	running  sync.Mutex // held for the whole of a backup
	failures atomic.Int64
	failed   chan Run // receives failures when ExitOnFailure is set
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
		client: &http.Client{Timeout: 10 * time.Second},
		failed: make(chan Run, 1),
	}, nil
}

// RunSchedule runs backups on opts' schedules until ctx is done (nil
// error) or, with ExitOnFailure, until a backup fails (the error).
func RunSchedule(ctx context.Context, opts ScheduleOptions, logger *slog.Logger) error {
	s, err := NewScheduler(opts, logger)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Failures is how many backups have failed since the scheduler started.
func (s *Scheduler) Failures() int64 { return s.failures.Load() }

// Run is RunSchedule for an existing Scheduler.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.opts.CreateStanza {
		if err := s.opts.PgBackRest.StanzaCreate(ctx); err != nil {
			s.logger.Error("backup stanza-create failed", "stanza", s.opts.PgBackRest.Stanza, "error", err.Error())
			return err
		}
		s.logger.Info("backup stanza ready", "stanza", s.opts.PgBackRest.Stanza)
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
	c.Start()
	s.logger.Info("backup scheduler started", "full", s.opts.FullSpec, "diff", s.opts.DiffSpec,
		"exit_on_failure", s.opts.ExitOnFailure)

	var err error
	select {
	case <-ctx.Done():
	case run := <-s.failed:
		err = fmt.Errorf("backup: %s backup failed: %s", run.Type, run.Error)
	}
	// Stop starts no new run; wait for the running one, which a done ctx
	// has already asked to stop (SIGTERM).
	<-c.Stop().Done()
	return err
}

// Backup runs one backup of type t now, unless another is running: then
// it is skipped, not queued, because a queued backup would start late and
// collide with the next scheduled one. Every call logs exactly one line.
func (s *Scheduler) Backup(ctx context.Context, t Type) Run {
	run := Run{Type: t, Stanza: s.opts.PgBackRest.Stanza}
	if !s.running.TryLock() {
		run.Result = ResultSkipped
		s.logger.LogAttrs(ctx, slog.LevelWarn, "backup skipped: another backup is running", runAttrs(run)...)
		return run
	}
	defer s.running.Unlock()

	start := time.Now()
	err := s.opts.PgBackRest.Backup(ctx, t)
	run.DurationMS = time.Since(start).Milliseconds()
	if err == nil {
		run.Result = ResultOK
		// The size comes from the repository itself: what info reports is
		// what a restore would find.
		if stanzas, infoErr := s.opts.PgBackRest.Info(ctx); infoErr != nil {
			err = fmt.Errorf("backup finished but info failed: %w", infoErr)
		} else if stanza, findErr := find(stanzas, s.opts.PgBackRest.Stanza); findErr != nil {
			err = findErr
		} else if b, ok := stanza.latest(); !ok || b.Type != t {
			err = fmt.Errorf("backup finished but the newest backup in the repository is not a %s backup", t)
		} else {
			run.Label, run.SizeBytes, run.RepoBytes = b.Label, b.Info.Size, b.Info.Repository.Size
		}
	}
	if err != nil {
		run.Result, run.Error = ResultFailed, err.Error()
		n := s.failures.Add(1)
		attrs := append(runAttrs(run), slog.Int64("failures_total", n))
		s.logger.LogAttrs(ctx, slog.LevelError, "backup failed", attrs...)
		s.alert(run)
		if s.opts.ExitOnFailure {
			select {
			case s.failed <- run:
			default: // Run is already on its way out
			}
		}
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
	return attrs
}

// alert POSTs the failed run to AlertURL. Its own failure is logged, never
// fatal: the failure it reports is already logged and counted.
func (s *Scheduler) alert(run Run) {
	if s.opts.AlertURL == "" {
		return
	}
	body, _ := json.Marshal(run) // a Run always marshals
	resp, err := s.client.Post(s.opts.AlertURL, "application/json", bytes.NewReader(body))
	if err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode >= 300 {
			err = fmt.Errorf("status %s", resp.Status)
		}
	}
	if err != nil {
		// The URL often carries a token (chat webhooks): log the cause only.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		s.logger.Error("backup alert not delivered", "error", err.Error())
	}
}
