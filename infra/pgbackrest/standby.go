package pgbackrest

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/nbms-deploy/nbms/conventions"
)

// ArchiveGetCommand returns PostgreSQL's restore_command that fetches WAL
// segments from the stanza's repositories: the mirror of ArchiveCommand,
// quoted the same way, with %p in double quotes as pgBackRest's own
// restore_command has it.
//
// It names no --repo: archive-get then looks in every configured
// repository in order (repo1, the local one, first), so a standby whose
// local repository lacks a segment still finds it off the host.
// pgBackRest's own restore_command would carry the restore's --repo=1
// and look nowhere else.
func ArchiveGetCommand(configPath, stanza string) string {
	return archiveCommandLine(configPath, stanza, "archive-get") + ` %f "%p"`
}

// StandbyRepo is the repository a standby is restored from: the local
// one, on this host's disk, so the restore reads no network.
const StandbyRepo = conventions.BackupLocalRepo

// recoveryKeyRE is a PostgreSQL setting name.
var recoveryKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// StandbyRestoreArgs returns the arguments of pgbackrest (without the
// program's name) that restore the stanza's latest backup from
// StandbyRepo as a standby: pgBackRest writes standby.signal, and recovery
// (each a --recovery-option) into postgresql.auto.conf, where the restored
// server reads them at its start. Run it as postgres, with PostgreSQL
// stopped; the data directory is pg1-path of the config at configPath.
//
// delta restores over an existing data directory (an old primary made a
// standby again), copying only the files that differ; without it the data
// directory must be empty.
//
// pgBackRest writes each value between single quotes without escaping
// them, so a value with a quote, a backslash or a control character is
// refused rather than written as another value.
func StandbyRestoreArgs(configPath, stanza string, recovery map[string]string, delta bool) ([]string, error) {
	var errs []error
	if !ValidStanza(stanza) {
		errs = append(errs, fmt.Errorf("pgbackrest: standby restore: stanza %q must be 1-64 letters, digits, _ or -, starting with a letter or digit", stanza))
	}
	if configPath == "" {
		errs = append(errs, errors.New("pgbackrest: standby restore: no config path"))
	}
	for _, key := range slices.Sorted(maps.Keys(recovery)) {
		if !recoveryKeyRE.MatchString(key) {
			errs = append(errs, fmt.Errorf("pgbackrest: standby restore: %q is not a PostgreSQL setting name", key))
		}
		if v := recovery[key]; strings.ContainsFunc(v, func(r rune) bool { return r == '\'' || r == '\\' || r < 0x20 || r == 0x7f }) {
			errs = append(errs, fmt.Errorf("pgbackrest: standby restore: the value of %s has a quote, a backslash or a control character", key))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	args := []string{"--config=" + configPath, "--stanza=" + stanza, fmt.Sprintf("--repo=%d", StandbyRepo), "--type=standby"}
	if delta {
		args = append(args, "--delta")
	}
	for _, key := range slices.Sorted(maps.Keys(recovery)) {
		args = append(args, "--recovery-option="+key+"="+recovery[key])
	}
	return append(args, "restore"), nil
}
