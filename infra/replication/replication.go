// Package replication renders what a warm standby of the NBMS database
// needs at both ends of its stream, from one Params: on the standby, the
// pgBackRest restore that makes it (--type=standby from the local
// repository) with its recovery settings and the password file of its
// replication connection; on the primary, the replication role, the
// physical replication slot, the pg_hba line and the settings that bound
// the WAL the slot keeps.
//
// It is a package of its own beside infra/pgbackrest because most of it is
// PostgreSQL's streaming replication, not pgBackRest: package pgbackrest
// gives it the restore's arguments and the restore_command (archive-get,
// the mirror of its archive_command), and stays the renderer of
// pgBackRest's configuration. The infra program and the tests use the same
// functions, so what the tests run against real PostgreSQL 15 and
// pgBackRest 2.45 is what production gets.
//
// The standby's server runs with the primary's settings
// (pgbackrest.PostgresSettings and PrimarySettings, the same -c flags):
// archive_mode=on there too. On a standby, archive_mode=on archives
// nothing while it is in recovery and starts archiving (to the same
// stanza, on a new timeline) once promoted; "always" would push every
// segment the primary already pushed a second time, and "off" would need a
// restart after promotion, a gap in the archive until then. Equal settings
// also meet hot standby's rule that max_connections, max_wal_senders and
// the like be no lower on the standby than on the primary.
package replication

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"

	"github.com/nbms-deploy/nbms/infra/internal/confpath"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
)

// Params is everything the rendered pieces depend on.
type Params struct {
	// Stanza is the pgBackRest stanza the standby is restored from: the
	// primary's.
	Stanza string
	// ConfigPath is the standby's pgbackrest.conf (pgbackrest.Render with
	// the standby's data directory as PGDataPath). It goes unquoted into
	// restore_command, so it must be a plain path (no quote or space).
	ConfigPath string
	// PrimaryHost and PrimaryPort are where the standby reaches the
	// primary: a host name (the primary's alias on the stack's network) or
	// an address.
	PrimaryHost string
	PrimaryPort int
	// Role is the replication role on the primary (conventions
	// .ReplicationRole): REPLICATION and LOGIN, nothing else.
	Role string
	// Slot is the physical replication slot on the primary
	// (conventions.StandbySlot). It is also the standby's
	// application_name, the name pg_stat_replication shows.
	Slot string
	// PassFile is the libpq password file on the standby (RenderPassFile),
	// which primary_conninfo names: the password is in no command line and
	// not in postgresql.auto.conf. libpq ignores the file unless it is
	// mode 0600 (or stricter), and the server reads it as postgres.
	PassFile string
	// SSLMode is libpq's sslmode of the replication connection. A mode
	// that requires TLS (require, verify-ca, verify-full) also makes the
	// pg_hba line hostssl, so the primary refuses the role without TLS.
	SSLMode string
	// StandbyNetwork is where the standby connects from: the only
	// addresses the pg_hba line lets the role replicate from (the
	// standby's address, or the network both servers are on).
	StandbyNetwork netip.Prefix
	// MaxSlotWALKeepMB is max_slot_wal_keep_size, in MB: the most WAL the
	// slot keeps on the primary for a standby that is away
	// (DefaultMaxSlotWALKeepMB).
	MaxSlotWALKeepMB int
}

// DefaultMaxSlotWALKeepMB bounds the primary's pg_wal for a standby that
// is down: 1 GB, 64 segments of 16 MB, on top of max_wal_size (PostgreSQL's
// default, 1 GB) for the primary's own checkpoints, so a dead standby at
// most doubles what pg_wal normally may hold. Without a bound
// (max_slot_wal_keep_size=-1, PostgreSQL's default) a standby gone for good
// would fill the primary's disk and stop it. With writes, archive_timeout
// switches to a new segment at least that often, so the bound is time too:
// with a trickle of writes, 64 switches, about an hour at
// archive_timeout=60s and 11 minutes at the stack's lowest, 10s (more
// writes: less). That covers a standby's restart or a host reboot. Past
// it the slot is invalidated at the primary's next checkpoint
// (pg_replication_slots.wal_status "lost", which nbms standby-status
// reports as a failure), and the standby, once back, catches up from the
// repository through restore_command (which keeps every segment since the
// oldest full backup) and then streams through the slot again: PostgreSQL
// 15 takes the invalidated slot back into use (measured: wal_status is
// "reserved" again). A later PostgreSQL may refuse it; then drop the slot
// and create it again (DropSlotSQL, then PrimarySQL).
const DefaultMaxSlotWALKeepMB = 1024

// minSlotWALKeepMB is four segments: below, a burst of writes while the
// standby is connected but a little behind would invalidate the slot.
const minSlotWALKeepMB = 64

var (
	// nameRE is a PostgreSQL role or slot name that needs no quoting
	// (slot names are lowercase letters, digits and _ only).
	nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
)

// sslModes are libpq's, and tlsModes those that refuse a connection
// without TLS.
var (
	sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
	tlsModes = []string{"require", "verify-ca", "verify-full"}
)

// Validate reports every problem with p at once.
func (p Params) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("replication: %s: "+format, append([]any{field}, args...)...))
	}
	if !pgbackrest.ValidStanza(p.Stanza) {
		add("Stanza", "%q must be 1-64 letters, digits, _ or -, starting with a letter or digit", p.Stanza)
	}
	if !confpath.Valid(p.ConfigPath) {
		add("ConfigPath", "%q must be a clean absolute path of letters, digits and ._/@+~-", p.ConfigPath)
	}
	if !hostRE.MatchString(p.PrimaryHost) && net.ParseIP(p.PrimaryHost) == nil {
		add("PrimaryHost", "%q is neither a host name nor an IP address", p.PrimaryHost)
	}
	if p.PrimaryPort < 1 || p.PrimaryPort > 65535 {
		add("PrimaryPort", "%d is not a port (1-65535)", p.PrimaryPort)
	}
	if !nameRE.MatchString(p.Role) {
		add("Role", "%q must be 1-63 lowercase letters, digits or _, not starting with a digit", p.Role)
	}
	if !nameRE.MatchString(p.Slot) {
		add("Slot", "%q must be 1-63 lowercase letters, digits or _, not starting with a digit", p.Slot)
	}
	if !confpath.Valid(p.PassFile) {
		add("PassFile", "%q must be a clean absolute path of letters, digits and ._/@+~-", p.PassFile)
	}
	if !slices.Contains(sslModes, p.SSLMode) {
		add("SSLMode", "%q is not one of libpq's sslmodes %v", p.SSLMode, sslModes)
	}
	switch n := p.StandbyNetwork; {
	case !n.IsValid():
		add("StandbyNetwork", "no network: the pg_hba line must name where the standby connects from")
	case n.Bits() == 0:
		add("StandbyNetwork", "%s is every address: name the standby's address or network", n)
	case n.Masked() != n:
		add("StandbyNetwork", "%s has host bits set: write %s (a network) or %s/%d (one address)", n, n.Masked(), n.Addr(), n.Addr().BitLen())
	}
	if p.MaxSlotWALKeepMB < minSlotWALKeepMB {
		add("MaxSlotWALKeepMB", "must be at least %d (4 WAL segments), got %d", minSlotWALKeepMB, p.MaxSlotWALKeepMB)
	}
	return errors.Join(errs...)
}
