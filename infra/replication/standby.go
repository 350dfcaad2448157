package replication

import (
	"strconv"
	"strings"

	"github.com/nbms-deploy/nbms/infra/pgbackrest"
)

// primaryConninfo is primary_conninfo for a valid p. Every value is a
// name, a number or a plain path (Validate), so none needs libpq's
// quoting. No dbname: a physical replication connection has none, and
// the password file matches it under the database "replication".
func (p Params) primaryConninfo() string {
	return strings.Join([]string{
		"host=" + p.PrimaryHost,
		"port=" + strconv.Itoa(p.PrimaryPort),
		"user=" + p.Role,
		"application_name=" + p.Slot,
		"passfile=" + p.PassFile,
		"sslmode=" + p.SSLMode,
	}, " ")
}

// RecoverySettings are the settings that make the restored server a
// streaming standby; RestoreArgs has pgBackRest write them into the
// standby's postgresql.auto.conf, so they travel with its data directory
// and the standby's command line stays the primary's (after a promotion
// PostgreSQL ignores them):
//   - primary_conninfo: the replication role, password from PassFile,
//     application_name the slot's name, sslmode SSLMode;
//   - primary_slot_name: the primary keeps what the standby has not yet
//     received (up to MaxSlotWALKeepMB);
//   - restore_command: pgBackRest's archive-get, so a standby that fell
//     behind what the slot keeps (or whose slot was lost) catches up from
//     the repository, and one being promoted first replays whatever of
//     the primary's WAL reached the repository but not the standby;
//   - hot_standby=on (PostgreSQL's default, stated): the standby takes
//     read-only connections, which nbms standby-status needs;
//   - wal_receiver_status_interval=1s (default 10s): the primary learns
//     the standby's replay position only from the standby's replies, sent
//     when WAL arrives and otherwise at this interval; at 10s the
//     primary's replay_lsn and replay_lag could stay 10 s stale after
//     writes stop, a lag the standby no longer has.
//
// hot_standby_feedback stays off: nothing reads from this standby for
// long, and feedback would make the primary keep dead rows for it.
func (p Params) RecoverySettings() (map[string]string, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return map[string]string{
		"primary_conninfo":             p.primaryConninfo(),
		"primary_slot_name":            p.Slot,
		"restore_command":              pgbackrest.ArchiveGetCommand(p.ConfigPath, p.Stanza),
		"hot_standby":                  "on",
		"wal_receiver_status_interval": "1s",
	}, nil
}

// RestoreArgs returns pgbackrest's arguments (without the program's name)
// that restore the stanza's latest backup from the local repository as a
// standby with RecoverySettings. Run as postgres with the standby's server
// stopped; delta: over an existing data directory (an old primary made a
// standby), which otherwise must be empty. See
// pgbackrest.StandbyRestoreArgs.
func (p Params) RestoreArgs(delta bool) ([]string, error) {
	recovery, err := p.RecoverySettings()
	if err != nil {
		return nil, err
	}
	return pgbackrest.StandbyRestoreArgs(p.ConfigPath, p.Stanza, recovery, delta)
}

// RenderPassFile returns the standby's password file (PassFile): one libpq
// password file line for the replication connection, matching exactly its
// host, port and role, and the database "replication" (libpq's name for
// a physical replication connection). libpq escapes : and \ with a
// backslash. The password must be printable ASCII without spaces
// (ValidPassword).
func (p Params) RenderPassFile(password string) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	if err := checkPassword(password); err != nil {
		return "", err
	}
	fields := []string{p.PrimaryHost, strconv.Itoa(p.PrimaryPort), "replication", p.Role, password}
	for i, f := range fields {
		fields[i] = passFileEscaper.Replace(f)
	}
	return strings.Join(fields, ":") + "\n", nil
}

var passFileEscaper = strings.NewReplacer(`\`, `\\`, `:`, `\:`)
