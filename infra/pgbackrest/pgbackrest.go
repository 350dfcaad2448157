// Package pgbackrest renders the pgBackRest configuration of the NBMS
// database and the PostgreSQL settings that archive WAL through it.
//
// The infra program and the tests use the same functions, so the file the
// tests run the real pgbackrest against is the file production gets.
// pgBackRest must always run as the database's OS user (postgres): a run as
// root leaves root-owned repository folders that break the next run.
package pgbackrest

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/internal/confpath"
)

// Params is everything the rendered configuration depends on.
type Params struct {
	// Stanza names the cluster in the repository, e.g. "nbms".
	Stanza string
	// PGDataPath is the cluster's data directory (pg1-path).
	PGDataPath string
	// PGSocketPath is the directory of PostgreSQL's Unix socket.
	PGSocketPath string
	// PGUser is the database user pgBackRest connects as (a superuser).
	PGUser string
	// RepoPath is the repository (its own volume).
	RepoPath string
	// LogPath and LockPath are writable directories owned by postgres.
	LogPath, LockPath string
	// PGPort is PostgreSQL's port.
	PGPort int
	// RetentionFull is how many full backups to keep; older ones, their
	// differentials and the WAL only they need are expired after each backup.
	RetentionFull int
	// RetentionDiff is how many differential backups to keep.
	RetentionDiff int
	// ProcessMax is the number of parallel compression/transfer processes.
	ProcessMax int
	// OffHost is the second repository (repo2), on S3-compatible object
	// storage away from this host, encrypted client-side; nil: none.
	OffHost *S3Repo
}

// S3Repo is an S3-compatible repository. Its secrets (the access key, the
// secret key and the cipher passphrase) are not in it: they go in a file
// of their own (RenderSecrets), which pgBackRest reads from its
// --config-include-path, so that the main file holds no secret.
type S3Repo struct {
	// Endpoint is the host name of the S3 service, as its TLS certificate
	// names it (pgBackRest checks the name; an IP address is refused).
	Endpoint string
	// Port is its HTTPS port (443 by default).
	Port int
	// Bucket and Region locate the repository; Path is its directory in
	// the bucket, e.g. "/nbms".
	Bucket, Region, Path string
	// PathStyle addresses the bucket in the path (https://host/bucket/...)
	// instead of a host name per bucket: what most on-premises stores need.
	PathStyle bool
	// CAFile is a CA bundle that verifies the service's certificate; empty:
	// the system's.
	CAFile string
	// RetentionFull and RetentionDiff are this repository's own.
	RetentionFull, RetentionDiff int
	// SpoolPath is archive-async's spool, a writable directory owned by
	// postgres: WAL to an off-host repository is pushed asynchronously,
	// so that PostgreSQL's archiver does not wait on the network.
	SpoolPath string
}

// DefaultS3Port is an S3 repository's port when S3Repo.Port is 0.
const DefaultS3Port = 443

// S3Secrets are an S3 repository's secrets.
type S3Secrets struct {
	AccessKey, SecretKey string
	// CipherPass encrypts the repository (aes-256-cbc): without it the
	// backups cannot be read, so it must be kept away from this host too.
	CipherPass string
}

// stanzaRE keeps stanza names to characters that need no quoting anywhere
// they appear: an INI section header, a shell command, a file name.
var stanzaRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidStanza reports whether s is a stanza name Render and
// StandbyRestoreArgs accept.
func ValidStanza(s string) bool { return stanzaRE.MatchString(s) }

// Validate reports every problem with p at once.
func (p Params) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("pgbackrest: %s: "+format, append([]any{field}, args...)...))
	}
	if !stanzaRE.MatchString(p.Stanza) {
		add("Stanza", "%q must be 1-64 letters, digits, _ or -, starting with a letter or digit", p.Stanza)
	}
	paths := []struct{ field, value string }{
		{"PGDataPath", p.PGDataPath}, {"PGSocketPath", p.PGSocketPath}, {"RepoPath", p.RepoPath},
		{"LogPath", p.LogPath}, {"LockPath", p.LockPath},
	}
	for _, path := range paths {
		if !confpath.Valid(path.value) {
			add(path.field, "%q must be a clean absolute path of letters, digits and ._/@+~-", path.value)
		}
	}
	if p.RepoPath != "" && confpath.Nested(p.RepoPath, p.PGDataPath) {
		add("RepoPath", "%q must be outside the data directory (and the other way round): a lost volume must not take both", p.RepoPath)
	}
	if !userRE.MatchString(p.PGUser) {
		add("PGUser", "%q is not a plain PostgreSQL role name", p.PGUser)
	}
	if p.PGPort < 1 || p.PGPort > 65535 {
		add("PGPort", "%d is not a port (1-65535)", p.PGPort)
	}
	// pgBackRest's own bounds: repo-retention-full 1-9999999,
	// repo-retention-diff 1-9999999, process-max 1-999.
	if p.RetentionFull < 1 || p.RetentionFull > 9999999 {
		add("RetentionFull", "must be 1-9999999 (a full backup must be kept), got %d", p.RetentionFull)
	}
	if p.RetentionDiff < 1 || p.RetentionDiff > 9999999 {
		add("RetentionDiff", "must be 1-9999999, got %d", p.RetentionDiff)
	}
	if p.ProcessMax < 1 || p.ProcessMax > 999 {
		add("ProcessMax", "must be 1-999, got %d", p.ProcessMax)
	}
	if p.OffHost != nil {
		for _, pr := range p.OffHost.Problems() {
			errs = append(errs, fmt.Errorf("pgbackrest: OffHost.%s: %s", pr.Field, pr.Reason))
		}
	}
	return errors.Join(errs...)
}

// Problem is one bad S3Repo field: its Go name and why (never a secret:
// S3Repo holds none).
type Problem struct{ Field, Reason string }

// Problems reports every problem of r at once. The stack config checks
// its off-host repository with it too, so both refuse the same values.
func (r S3Repo) Problems() []Problem {
	var out []Problem
	add := func(field, format string, args ...any) {
		out = append(out, Problem{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if !hostRE.MatchString(r.Endpoint) || net.ParseIP(r.Endpoint) != nil {
		add("Endpoint", "%q must be a host name (no scheme, port or address: pgBackRest checks the certificate's names)", r.Endpoint)
	}
	if r.Port < 0 || r.Port > 65535 {
		add("Port", "%d is not a port (1-65535, 0 for 443)", r.Port)
	}
	// S3's bucket naming rules.
	if !bucketRE.MatchString(r.Bucket) {
		add("Bucket", "%q must be 3-63 lowercase letters, digits, . or -, starting and ending with a letter or digit", r.Bucket)
	}
	if !regionRE.MatchString(r.Region) {
		add("Region", "%q must be a region name such as us-east-1", r.Region)
	}
	if !confpath.Valid(r.Path) {
		add("Path", "%q must be a clean absolute path of letters, digits and ._/@+~-", r.Path)
	}
	if r.CAFile != "" && !confpath.Valid(r.CAFile) {
		add("CAFile", "%q must be a clean absolute path of letters, digits and ._/@+~-", r.CAFile)
	}
	if r.RetentionFull < 1 || r.RetentionFull > 9999999 {
		add("RetentionFull", "must be 1-9999999 (a full backup must be kept), got %d", r.RetentionFull)
	}
	if r.RetentionDiff < 1 || r.RetentionDiff > 9999999 {
		add("RetentionDiff", "must be 1-9999999, got %d", r.RetentionDiff)
	}
	if !confpath.Valid(r.SpoolPath) {
		add("SpoolPath", "%q must be a clean absolute path of letters, digits and ._/@+~-", r.SpoolPath)
	}
	return out
}

// Hosts are the host names pgBackRest connects to for r: the endpoint,
// and with host-style addressing the bucket's own name under it.
func (r S3Repo) Hosts() []string {
	if r.PathStyle {
		return []string{r.Endpoint}
	}
	return []string{r.Endpoint, r.Bucket + "." + r.Endpoint}
}

var (
	hostRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// Render returns pgbackrest.conf for p, or the Validate error.
//
// Choices that are not Params:
//   - compress-type=zst: on a 156 MB cluster it was as fast as gz and made
//     the smallest repository (ops-anchors §2.6).
//   - start-fast=y: otherwise a backup waits for the next checkpoint (up to
//     checkpoint_timeout).
//   - archive-push runs synchronously (no archive-async). The repository is
//     a local volume, so a push takes milliseconds; async would add a spool
//     volume and archive-push-queue-max, which drops WAL when the queue is
//     full and so silently breaks point-in-time recovery.
//   - repo1-retention-full-type=count, stated explicitly: RetentionFull is a
//     number of backups, not days.
//   - With an off-host repository (repo2): archive-async=y with its spool,
//     so that the archiver does not wait on the network; WAL goes to both
//     repositories. repo2-cipher-type=aes-256-cbc: the object store never
//     sees a byte of the database in the clear. Its secrets are in
//     RenderSecrets' file. And two timeouts of their own, so that the
//     local repository goes on taking WAL and backups while repo2 cannot
//     be reached (ArchivePushIOTimeout, BackupArchiveTimeout).
func Render(p Params) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	line := func(key, value string) { b.WriteString(key + "=" + value + "\n") }
	b.WriteString("# Generated by github.com/nbms-deploy/nbms/infra/pgbackrest from the stack config.\n")
	b.WriteString("# Do not edit: change the stack config and run pulumi up.\n")
	b.WriteString("[global]\n")
	line("repo1-path", p.RepoPath)
	line("repo1-retention-full-type", "count")
	line("repo1-retention-full", strconv.Itoa(p.RetentionFull))
	line("repo1-retention-diff", strconv.Itoa(p.RetentionDiff))
	line("compress-type", "zst")
	line("start-fast", "y")
	line("process-max", strconv.Itoa(p.ProcessMax))
	line("log-path", p.LogPath)
	line("lock-path", p.LockPath)
	line("log-level-console", "info")
	// "detail" would log one line per file (1.3 MB per backup).
	line("log-level-file", "info")
	if r := p.OffHost; r != nil {
		line("archive-async", "y")
		line("spool-path", r.SpoolPath)
		line("repo2-type", "s3")
		line("repo2-path", r.Path)
		line("repo2-s3-endpoint", r.Endpoint)
		line("repo2-s3-port", strconv.Itoa(cmp.Or(r.Port, DefaultS3Port)))
		line("repo2-s3-bucket", r.Bucket)
		line("repo2-s3-region", r.Region)
		if r.PathStyle {
			line("repo2-s3-uri-style", "path")
		}
		if r.CAFile != "" {
			line("repo2-storage-ca-file", r.CAFile)
		}
		line("repo2-cipher-type", conventions.BackupOffHostCipher)
		line("repo2-retention-full-type", "count")
		line("repo2-retention-full", strconv.Itoa(r.RetentionFull))
		line("repo2-retention-diff", strconv.Itoa(r.RetentionDiff))
		b.WriteString("\n[global:archive-push]\n")
		line("io-timeout", seconds(ArchivePushIOTimeout))
		b.WriteString("\n[global:backup]\n")
		line("archive-timeout", seconds(BackupArchiveTimeout))
	}
	b.WriteString("\n[" + p.Stanza + "]\n")
	line("pg1-path", p.PGDataPath)
	line("pg1-port", strconv.Itoa(p.PGPort))
	line("pg1-socket-path", p.PGSocketPath)
	line("pg1-user", p.PGUser)
	return b.String(), nil
}

// ArchivePushIOTimeout is archive-push's io-timeout with an off-host
// repository (pgBackRest's default, 60 s, stays for every other command).
// archive-push:async writes a segment to the local repository only once it
// has given up on repo2 for it, and while repo2 cannot be reached that
// takes several io-timeouts per segment: measured with pgBackRest 2.45,
// four when the store behind the relay is down (the relay accepts and
// closes), eight for a closed port. At the default a segment took 4
// minutes to reach the local repository, one after the other, so the
// local repository fell behind any write load; at 5 s, 20-24 s (closed
// port: 40-60 s with the archiver's own wait). io-timeout bounds a wait
// with no progress at all, not a transfer: an S3 store that answers
// within 5 s loses nothing, and a push that does time out is retried by
// PostgreSQL, which keeps the segment until both repositories have it.
const ArchivePushIOTimeout = 5 * time.Second

// BackupArchiveTimeout is the backup's archive-timeout with an off-host
// repository: how long a backup waits for the WAL segments it needs to
// reach its repository (default 60 s). While repo2 cannot be reached each
// segment reaches the local repository only after archive-push has given
// up on repo2 (ArchivePushIOTimeout), behind the segments queued before
// it and PostgreSQL's archiver waiting up to a minute after three failed
// attempts: at the default a local backup failed with [082] while repo2
// was down; 5 minutes covers a queue of a few segments.
const BackupArchiveTimeout = 5 * time.Minute

// seconds renders d as pgBackRest's whole seconds.
func seconds(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }

// ValidSecret reports whether v can be a value of RenderSecrets' file:
// non-empty printable characters without spaces, which pgBackRest's INI
// reader reads back unchanged.
func ValidSecret(v string) bool {
	return v != "" && strings.TrimSpace(v) == v && !strings.ContainsFunc(v, func(r rune) bool { return r < 0x21 || r == 0x7f })
}

// RenderSecrets returns the include file (pgBackRest's
// --config-include-path) with repo2's secrets. Each value must be one line
// of printable characters without surrounding spaces: pgBackRest's INI
// reader would otherwise read another value than the one given.
func RenderSecrets(s S3Secrets) (string, error) {
	var errs []error
	for _, v := range []struct{ name, value string }{
		{"AccessKey", s.AccessKey}, {"SecretKey", s.SecretKey}, {"CipherPass", s.CipherPass},
	} {
		if !ValidSecret(v.value) {
			// Never the value: it is a secret.
			errs = append(errs, fmt.Errorf("pgbackrest: OffHost secrets: %s must be non-empty printable characters without spaces", v.name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	return "[global]\n" +
		"repo2-s3-key=" + s.AccessKey + "\n" +
		"repo2-s3-key-secret=" + s.SecretKey + "\n" +
		"repo2-cipher-pass=" + s.CipherPass + "\n", nil
}

// ArchiveCommand returns PostgreSQL's archive_command that pushes each WAL
// segment to the stanza's repository. --config is always given because the
// file is not in /etc (pgBackRest's default location).
//
// The result is ready for archive_command: PostgreSQL runs it through
// /bin/sh after replacing %p, so each argument is shell-quoted where
// needed and a literal % is doubled. Quote it once more for its sink (see
// PostgresConf for postgresql.conf).
func ArchiveCommand(configPath, stanza string) string {
	return archiveCommandLine(configPath, stanza, "archive-push") + " %p"
}

// archiveCommandLine is pgbackrest with the config, the stanza and
// command, each argument shell-quoted where needed and each literal %
// doubled, for archive_command and restore_command.
func archiveCommandLine(configPath, stanza, command string) string {
	args := []string{"pgbackrest", "--config=" + configPath, "--stanza=" + stanza, command}
	quoted := make([]string, len(args))
	for i, arg := range args {
		quoted[i] = strings.ReplaceAll(shellQuote(arg), "%", "%%")
	}
	return strings.Join(quoted, " ")
}

// shellSafe matches arguments /bin/sh takes literally without quotes.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./=:@%+,-]+$`)

// shellQuote returns s as one /bin/sh word.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// PostgresSettings returns the postgresql.conf settings that archive WAL
// through pgBackRest. archive_mode needs a server restart to change;
// pgBackRest's `check` fails with "archive_mode must be enabled" until then.
// archiveTimeout forces a segment switch that often when there were
// writes, bounding how much committed work a lost server can take with it
// (the RPO); whole seconds.
func PostgresSettings(configPath, stanza string, archiveTimeout time.Duration) map[string]string {
	return map[string]string{
		"archive_mode":    "on",
		"archive_command": ArchiveCommand(configPath, stanza),
		"archive_timeout": strconv.Itoa(int(archiveTimeout/time.Second)) + "s",
		"wal_level":       "replica",
		// pgBackRest needs none, but a standby or pg_basebackup would.
		"max_wal_senders": "3",
	}
}

// PostgresConf renders settings as postgresql.conf lines, sorted by name,
// e.g. for a conf.d include file. Values are single-quoted; inside them
// postgresql.conf reads backslash escapes, so backslashes (which
// ArchiveCommand's shell quoting can produce) are doubled, and so are
// single quotes.
func PostgresConf(settings map[string]string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		value := strings.ReplaceAll(settings[name], `\`, `\\`)
		b.WriteString(name + " = '" + strings.ReplaceAll(value, "'", "''") + "'\n")
	}
	return b.String()
}
