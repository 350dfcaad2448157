package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/backup"
	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/standby"
	"github.com/nbms-deploy/nbms/app/internal/static"
)

// runMigrate applies or lists the embedded schema migrations. It needs a
// direct PostgreSQL connection (see package migrate): DATABASE_URL must not
// point at PgBouncer in transaction mode when running `up`. `up` runs with
// MIGRATE_LOCK_TIMEOUT and MIGRATE_STATEMENT_TIMEOUT as the session's
// lock_timeout and statement_timeout, and both run under ONESHOT_TIMEOUT
// (see runOneShot), which bounds the wait for another runner's lock too.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "up" && args[0] != "status") {
		fmt.Fprintln(stderr, "Usage: nbms migrate up|status")
		return exitUsage
	}
	s, ok := loadSettings(stderr)
	if !ok {
		return config.ExitConfig
	}
	db, err := migrate.Open(s.DatabaseURL)
	if err != nil {
		fmt.Fprintln(stderr, "nbms migrate:", err)
		return exitFail
	}
	defer db.Close()
	if args[0] == "status" {
		return runOneShot(ctx, "migrate status", s, stderr, func(ctx context.Context) int {
			return migrateStatus(ctx, db, stdout, stderr)
		})
	}
	return runOneShot(ctx, "migrate up", s, stderr, func(ctx context.Context) int {
		applied, err := migrate.Up(ctx, db,
			migrate.WithLockTimeout(s.MigrateLockTimeout),
			migrate.WithStatementTimeout(s.MigrateStatementTimeout))
		for _, m := range applied {
			fmt.Fprintf(stdout, "applied %05d %s (%s)\n", m.Version, m.Name, m.Duration.Round(1e6))
		}
		switch {
		case err != nil && timedOut(ctx):
			return exitFail // runOneShot says why
		case err != nil:
			fmt.Fprintln(stderr, "nbms migrate up:", err)
			return exitFail
		case len(applied) == 0:
			fmt.Fprintln(stdout, "no pending migration")
		}
		return exitOK
	})
}

func migrateStatus(ctx context.Context, db *sql.DB, stdout, stderr io.Writer) int {
	all, err := migrate.Status(ctx, db)
	if err != nil {
		if !timedOut(ctx) {
			fmt.Fprintln(stderr, "nbms migrate status:", err)
		}
		return exitFail
	}
	pending := 0
	for _, m := range all {
		state := "applied " + m.AppliedAt.UTC().Format("2006-01-02T15:04:05Z")
		if !m.Applied {
			state = "PENDING"
			pending++
		}
		fmt.Fprintf(stdout, "%05d %-40s %s\n", m.Version, m.Name, state)
	}
	fmt.Fprintf(stdout, "%d migrations, %d pending\n", len(all), pending)
	return exitOK
}

// runCollectstatic publishes the embedded static assets to STATIC_ROOT,
// under ONESHOT_TIMEOUT. Copying a handful of files never takes long; the
// limit is for a file system that hangs, which no context reaches:
// runOneShot exits without the copy.
func runCollectstatic(ctx context.Context, _ []string, stdout, stderr io.Writer) int {
	s, ok := loadSettings(stderr)
	if !ok {
		return config.ExitConfig
	}
	return runOneShot(ctx, "collectstatic", s, stderr, func(context.Context) int {
		manifest, err := static.Collect(s.StaticRoot)
		if err != nil {
			fmt.Fprintln(stderr, "nbms collectstatic:", err)
			return exitFail
		}
		fmt.Fprintf(stdout, "published %d assets to %s\n", len(manifest), s.StaticRoot)
		return exitOK
	})
}

// opsLogger is the JSON logger of the commands that run outside the app's
// environment (the backup container has no app settings).
func opsLogger(w io.Writer) *slog.Logger {
	return slog.New(logging.NewHandler(w, slog.LevelInfo, logging.NewRedactor()))
}

// runBackupSchedule is the backup scheduler container's process. It runs
// beside PostgreSQL with pgBackRest, not with the app's settings, so it is
// configured by flags only.
func runBackupSchedule(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backup-schedule", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts backup.ScheduleOptions
	opts.Flags(fs, true)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if err := backup.RunSchedule(ctx, opts, opsLogger(stdout)); err != nil {
		fmt.Fprintln(stderr, "nbms backup-schedule:", err)
		return exitFail
	}
	return exitOK
}

// runBackupDrill runs one restore drill now, through the code path of the
// scheduler's drills: the same log line on stdout, status file and alert.
// Exit 0 passed, 1 failed (or its status file not written), 2 usage.
func runBackupDrill(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backup-drill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts backup.DrillRunOptions
	opts.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintln(stderr, "nbms backup-drill:", err)
		return exitUsage
	}
	if _, err := backup.RunDrill(ctx, opts, opsLogger(stdout)); err != nil {
		fmt.Fprintln(stderr, "nbms backup-drill:", err)
		return exitFail
	}
	return exitOK
}

// runStandbyStatus says whether the warm standby streams from the primary
// within the lag thresholds: exit 0 yes, 1 no (a check failed, a server
// could not be asked), 2 usage. Flags only, like backup-status: it runs
// where the database's sockets are, not with the app's settings.
func runStandbyStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("standby-status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts standby.Options
	opts.Flags(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintln(stderr, "nbms standby-status:", err)
		return exitUsage
	}
	rep, err := standby.Status(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "nbms standby-status:", err)
		return exitFail
	}
	return printStatus(stdout, rep, rep.OK, *asJSON)
}

// writeJSON writes v indented, as the status commands print --json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// textReport is a status command's report (backup-status, standby-status).
type textReport interface{ WriteText(io.Writer) error }

// printStatus prints a status command's report, as JSON or text, and
// returns its exit status: 0 when ok, 1 when a check failed or the report
// could not be written.
func printStatus(w io.Writer, rep textReport, ok, asJSON bool) int {
	var err error
	if asJSON {
		err = writeJSON(w, rep)
	} else {
		err = rep.WriteText(w)
	}
	if err != nil || !ok {
		return exitFail
	}
	return exitOK
}

// runBackupStatus says whether the backups and the WAL archive are fresh
// enough: exit 0 fresh, 1 stale or missing (for monitoring).
func runBackupStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backup-status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts backup.StatusOptions
	opts.Flags(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	rep, err := backup.Status(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "nbms backup-status:", err)
		return exitFail
	}
	return printStatus(stdout, rep, rep.OK, *asJSON)
}
