// Command nbms is the NBMS backend: one binary whose subcommands serve the
// app and run its operational tasks.
package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

// version is the release's version label, stamped in by the image build
// (-ldflags -X main.version=...; app/Dockerfile's NBMS_VERSION).
var version = "unversioned"

// command is one subcommand. run returns the process exit status.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands is every subcommand; `nbms help` lists them.
var commands = map[string]command{
	"serve":              {"run the HTTP server until SIGTERM/SIGINT", runServe},
	"predeploy-check":    {"check that this environment is ready for production (exit 1 on any failure, 78 on a config error)", runPredeploy},
	"healthcheck":        {"probe the local server's /healthz (or --path) for a container HEALTHCHECK", runHealthcheck},
	"settings-reference": {"print the Markdown reference of every environment variable", runSettingsReference},
	"migrate":            {"apply (up) or list (status) the schema migrations; needs a direct PostgreSQL connection", runMigrate},
	"collectstatic":      {"publish the static assets to STATIC_ROOT with content-hashed names and a manifest", runCollectstatic},
	"backup-schedule":    {"run pgBackRest full and differential backups, and restore drills, on cron schedules (the backup container)", runBackupSchedule},
	"backup-status":      {"check that backups and the WAL archive (and, with --drill-status, the last restore drill) are fresh enough (exit 1 when stale)", runBackupStatus},
	"backup-drill":       {"run one restore drill now: restore the latest backup into a scratch copy, count rows, amcheck it (exit 1 when it fails)", runBackupDrill},
	"standby-status":     {"check that the warm standby streams from the primary through its slot within --max-lag-bytes and --max-lag (exit 1 when not)", runStandbyStatus},
	"createorg":          {"create an organisation", runCreateOrg},
	"createuser":         {"create a user; the password is read from standard input, never from the command line", runCreateUser},
	"version":            {"print the version label this binary was built with", runVersion},
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprintln(stdout, version)
	return exitOK
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses other than the config one (config.ExitConfig) and the
// one-shot timeout's (exitTimeout); usage lists them all.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help":
		usage(stdout)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "nbms: unknown command %q\n\n", name)
		usage(stderr)
		return exitUsage
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: nbms <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, n := range slices.Sorted(maps.Keys(commands)) {
		fmt.Fprintf(w, "  %-20s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "  help                 show this list")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Exit statuses: 0 success, 1 failure, 2 usage error, 78 configuration error,")
	fmt.Fprintf(w, "%d a one-shot command (migrate, collectstatic, createorg, createuser) stopped by %s.\n", exitTimeout, oneShotVar)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Configuration comes from the environment only; see docs/production_hardening/secure_settings_reference.md.")
}
