// Package backup schedules pgBackRest backups and judges whether the
// backups and the WAL archive in the repository are fresh enough to restore
// from.
//
// Everything here drives the real pgbackrest binary: the scheduler runs
// `pgbackrest backup`, given repositories once per repository with
// --repo=N (one pgBackRest backup goes to one repository), the status
// check reads `pgbackrest info --output=json` and `pgbackrest repo-ls`.
// pgBackRest must run as the database's OS user (postgres): a run as root
// leaves root-owned repository folders that break every later run, which
// is why the binary is exec'd as the current user and never through sudo.
package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Type is a pgBackRest backup type.
type Type string

// Backup types. A differential copies the files changed since the last
// full backup; an incremental those changed since the last backup of any
// type.
const (
	Full Type = "full"
	Diff Type = "diff"
	Incr Type = "incr"
)

// ParseType returns the Type named s.
func ParseType(s string) (Type, error) {
	switch t := Type(s); t {
	case Full, Diff, Incr:
		return t, nil
	}
	return "", fmt.Errorf("backup: unknown backup type %q (want full, diff or incr)", s)
}

// PgBackRest is how to invoke pgbackrest for one stanza.
type PgBackRest struct {
	// ConfigPath is passed as --config. Empty leaves pgBackRest to its own
	// lookup (PGBACKREST_CONFIG, then /etc/pgbackrest/pgbackrest.conf).
	ConfigPath string
	// Stanza is passed as --stanza. Empty leaves pgBackRest to
	// PGBACKREST_STANZA.
	Stanza string
	// Repo, when not 0, is passed as --repo: the command then works on
	// that repository (repoN in the config) alone. 0 leaves pgBackRest's
	// default: backup goes to the lowest-numbered repository, while info
	// and stanza-create work on all of them.
	Repo int
	// Binary defaults to "pgbackrest" on PATH.
	Binary string
	// CommandPrefix is for tests only: it is prepended to every command
	// line, pgbackrest's and the restore drill script's (e.g. runuser -u
	// postgres --), because tests run as root, while the scheduler
	// container already runs as postgres.
	CommandPrefix []string
}

// stopGrace is how long pgbackrest gets after SIGTERM before SIGKILL: it
// uses the time to stop its worker processes and release the stanza lock.
const stopGrace = 30 * time.Second

// command builds `pgbackrest [--config] [--stanza] [--repo] args...`. A
// cancelled ctx sends SIGTERM (not exec's default SIGKILL) so a backup
// interrupted by a container stop leaves no stale lock behind.
func (p PgBackRest) command(ctx context.Context, args ...string) *exec.Cmd {
	bin := p.Binary
	if bin == "" {
		bin = "pgbackrest"
	}
	argv := append(append([]string{}, p.CommandPrefix...), bin)
	if p.ConfigPath != "" {
		argv = append(argv, "--config="+p.ConfigPath)
	}
	if p.Stanza != "" {
		argv = append(argv, "--stanza="+p.Stanza)
	}
	if p.Repo != 0 {
		argv = append(argv, "--repo="+strconv.Itoa(p.Repo))
	}
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	return cmd
}

// run runs pgbackrest and returns its stdout. On failure the error (a
// *commandError) carries the last lines of its output, where pgBackRest
// prints "ERROR: [nnn]: ...".
func (p PgBackRest) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := p.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := lastLines(stderr.String()+stdout.String(), 5)
		return stdout.Bytes(), &commandError{
			err:    fmt.Errorf("pgbackrest %s: %w: %s", strings.Join(args, " "), err, msg),
			stderr: stderr.String(),
		}
	}
	return stdout.Bytes(), nil
}

// commandError is a failed pgbackrest command. Its message is the tail of
// the output; stderr is kept whole for Cause, because the tail can miss
// the ERROR line: pgBackRest lists the errors behind it on the lines
// below, and stdout's "command end" lines come after them.
type commandError struct {
	err    error
	stderr string
}

func (e *commandError) Error() string { return e.err.Error() }
func (e *commandError) Unwrap() error { return e.err }

// Backup runs one backup of type t. pgBackRest expires old backups (per the
// retention in its config) at the end of every backup.
func (p PgBackRest) Backup(ctx context.Context, t Type) error {
	if _, err := ParseType(string(t)); err != nil {
		return err
	}
	_, err := p.run(ctx, "--type="+string(t), "backup")
	return err
}

// StanzaCreate creates the stanza, or checks that the existing one matches
// the cluster: it is idempotent, so it is safe on every start.
func (p PgBackRest) StanzaCreate(ctx context.Context) error {
	_, err := p.run(ctx, "stanza-create")
	return err
}

// Info returns the stanzas of `pgbackrest info --output=json`. pgBackRest
// exits 0 even when the stanza does not exist: read Stanza.Status.
func (p PgBackRest) Info(ctx context.Context) ([]Stanza, error) {
	out, err := p.run(ctx, "--output=json", "info")
	if err != nil {
		return nil, err
	}
	return ParseInfo(out)
}

// newestWALTime returns when the WAL segment named wal (e.g.
// 000000010000000000000005) reached the repository, from `repo-ls`, which
// works for every repository type. archiveID is the archive's id ("15-1").
func (p PgBackRest) newestWALTime(ctx context.Context, stanza, archiveID, wal string) (time.Time, error) {
	if len(wal) != 24 {
		return time.Time{}, fmt.Errorf("backup: %q is not a WAL segment name", wal)
	}
	dir := "archive/" + stanza + "/" + archiveID + "/" + wal[:16]
	out, err := p.run(ctx, "--output=json", "--filter=^"+wal+"-", "repo-ls", dir)
	if err != nil {
		return time.Time{}, err
	}
	files, err := parseRepoList(out)
	if err != nil {
		return time.Time{}, err
	}
	var newest int64
	for _, f := range files {
		newest = max(newest, f.Time)
	}
	if newest == 0 {
		return time.Time{}, fmt.Errorf("backup: WAL segment %s is not in %s", wal, dir)
	}
	return time.Unix(newest, 0).UTC(), nil
}

// lastLines keeps the tail of s, which is where errors are.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// errNoStanza is returned when info has no entry for the stanza asked for.
var errNoStanza = errors.New("backup: pgbackrest info returned no stanza")
