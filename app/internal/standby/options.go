// Package standby reports on a warm standby of the NBMS database: is it
// streaming from the primary through its replication slot, and how far
// behind is it, in bytes of WAL and in seconds. It asks the primary
// (pg_stat_replication and the slot in pg_replication_slots), the standby
// (pg_stat_wal_receiver and its receive and replay positions), or both;
// `nbms standby-status` prints the report and exits 1 when a check fails.
//
// The role it connects as must read the other sessions' statistics:
// pg_monitor (or a superuser, as postgres over the Unix socket); without
// it PostgreSQL hides the columns the checks need, which is reported as
// such.
package standby

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultSlot is --slot's default: conventions.StandbySlot, the slot
// infra/replication creates. Spelled out here because the app image is
// built from app/ alone (.dockerignore), which cannot import conventions;
// TestDefaultSlotIsTheConventions keeps the two equal.
const DefaultSlot = "nbms_standby"

// DefaultMaxLagBytes is four WAL segments (64 MiB). A burst of writes (a
// bulk import, a VACUUM) that the standby replays within seconds stays
// under it; a standby that stopped replaying crosses it after four
// segments of new WAL.
const DefaultMaxLagBytes = 64 << 20

// DefaultMaxLag is a minute: the stack's default archive_timeout, so a
// standby that passes loses no more on a failover than the repository
// would (it loses far less: a streaming standby is normally milliseconds
// behind).
const DefaultMaxLag = time.Minute

// DefaultTimeout bounds the whole status: connecting to both servers and
// every query.
const DefaultTimeout = 10 * time.Second

// Options says which servers to ask and the thresholds.
type Options struct {
	// Primary and Standby are connection strings (a postgres:// URL or
	// libpq's key=value), each empty when that side is not to be asked;
	// one at least. Never with a password: it would be on a command line
	// that every process of the host can read. The password comes from a
	// password file (passfile=... or PGPASSFILE), PGPASSWORD, or there is
	// none (the Unix socket, peer authentication).
	Primary, Standby string
	// Slot is the standby's physical replication slot on the primary.
	Slot string
	// MaxLagBytes and MaxLag are the thresholds of the lag checks.
	MaxLagBytes int64
	MaxLag      time.Duration
	// Timeout bounds the whole status.
	Timeout time.Duration
}

// Flags registers the options on fs with their defaults.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.Primary, "primary", "", "connection `string` of the primary (URL or key=value, no password: use passfile=, PGPASSFILE or PGPASSWORD); checks pg_stat_replication and the slot")
	fs.StringVar(&o.Standby, "standby", "", "connection `string` of the standby (as --primary); checks its WAL receiver and replay; one of --primary and --standby at least")
	fs.StringVar(&o.Slot, "slot", DefaultSlot, "the standby's physical replication `slot` on the primary")
	fs.Int64Var(&o.MaxLagBytes, "max-lag-bytes", DefaultMaxLagBytes, "fail when the standby's replay is more `bytes` of WAL behind")
	fs.DurationVar(&o.MaxLag, "max-lag", DefaultMaxLag, "fail when the standby's replay is longer behind")
	fs.DurationVar(&o.Timeout, "timeout", DefaultTimeout, "give up connecting and querying after this long (a failed check)")
}

// slotRE is a replication slot name.
var slotRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Validate reports every problem with o at once: what a usage error is
// made of. A server that cannot be reached is not one (a failed check).
func (o Options) Validate() error {
	var errs []error
	if o.Primary == "" && o.Standby == "" {
		errs = append(errs, errors.New("standby: give --primary, --standby or both"))
	}
	for _, side := range []struct{ name, conn string }{{"primary", o.Primary}, {"standby", o.Standby}} {
		if side.conn == "" {
			continue
		}
		if hasPassword(side.conn) {
			errs = append(errs, fmt.Errorf("standby: --%s has a password, which a command line shows every process on the host: put it in a password file (passfile=... or PGPASSFILE)", side.name))
		} else if _, err := pgx.ParseConfig(side.conn); err != nil {
			errs = append(errs, fmt.Errorf("standby: --%s: %w", side.name, err))
		}
	}
	if !slotRE.MatchString(o.Slot) {
		errs = append(errs, fmt.Errorf("standby: slot %q is not a replication slot name (lowercase letters, digits and _)", o.Slot))
	}
	if o.MaxLagBytes <= 0 {
		errs = append(errs, fmt.Errorf("standby: max lag bytes must be positive, got %d", o.MaxLagBytes))
	}
	if o.MaxLag <= 0 {
		errs = append(errs, fmt.Errorf("standby: max lag must be positive, got %s", o.MaxLag))
	}
	if o.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("standby: timeout must be positive, got %s", o.Timeout))
	}
	return errors.Join(errs...)
}

// passwordKeyRE finds libpq's password keyword in a key=value string.
var passwordKeyRE = regexp.MustCompile(`(^|\s)password\s*=`)

// hasPassword reports whether a connection string carries a password.
func hasPassword(conn string) bool {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := url.Parse(conn)
		if err != nil {
			return false // pgx.ParseConfig reports it
		}
		_, has := u.User.Password()
		return has || u.Query().Has("password")
	}
	return passwordKeyRE.MatchString(conn)
}
