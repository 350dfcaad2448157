// Package migrate applies the embedded schema migrations (package
// app/migrations) with goose and reports which ones are pending.
//
// Up needs a direct PostgreSQL connection. It serialises concurrent runners
// (two replicas starting at once) with a session-level advisory lock
// (pg_try_advisory_lock), and a session lock lives on one server
// connection. Behind PgBouncer in transaction pooling mode the lock and the
// migration statements may land on different server connections, so the
// lock protects nothing: point the migration URL at PostgreSQL itself, or at
// PgBouncer in session mode. Status, Pending and Check only read goose's
// version table with one query, take no lock and work through any pooler.
//
// Up runs while the previous release serves from the same database, so its
// session has a lock_timeout and a statement_timeout (see
// DefaultLockTimeout): a migration statement queued behind a long
// transaction of the live release fails after a few seconds, rolling its
// migration back, instead of holding a lock request in the queue that every
// later query of the live release on that table waits behind, forever. The
// failure is a *TimeoutError that names the migration and what to do.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/nbms-deploy/nbms/app/migrations"
)

const (
	// lockPollInterval and lockPolls bound how long Up waits for another
	// runner's lock: polled every second (goose's default is five, which
	// would idle a second replica needlessly) for up to five minutes. A
	// migration that runs longer makes the waiting Up fail, not corrupt.
	lockPollInterval = 1 // seconds
	lockPolls        = 300

	// defaultConnectTimeout applies when the URL sets no connect_timeout;
	// pgx would otherwise wait for the operating system's TCP timeout.
	defaultConnectTimeout = 5 * time.Second

	// versionTable is goose's default table; Status, Pending and Check read
	// it directly. Provider-mode goose inserts a row when a migration is
	// applied and deletes it when it is rolled back.
	versionTable = goose.DefaultTablename
)

// The migration session's timeouts when Up is given none. `nbms migrate up`
// passes MIGRATE_LOCK_TIMEOUT and MIGRATE_STATEMENT_TIMEOUT (app/config),
// whose defaults are these.
const (
	// DefaultLockTimeout is lock_timeout: how long one statement may wait
	// for a lock another session holds. While an ALTER TABLE waits, its
	// ACCESS EXCLUSIVE request sits in the table's lock queue and every
	// later query of the live release on that table waits behind it, so
	// this bounds how long a waiting migration holds up live requests: a
	// few seconds, well under the app's request timeouts. A lock that is
	// not free by then belongs to a long transaction; the deploy fails
	// cleanly and is retried when it has ended. (CREATE INDEX CONCURRENTLY's
	// waits for older transactions are lock waits too, and fail the same
	// way, leaving an INVALID index behind: the error says so.)
	DefaultLockTimeout = 5 * time.Second

	// DefaultStatementTimeout is statement_timeout: how long one statement
	// may run, lock waits included. Generous, because the statements that
	// legitimately run long (a batched backfill, CREATE INDEX CONCURRENTLY
	// on a large table) take only locks the live release does not wait on;
	// it is there so that a runaway statement fails the deploy instead of
	// hanging it, not to police ordinary migrations.
	DefaultStatementTimeout = 15 * time.Minute
)

// Option configures Up.
type Option func(*upConfig)

// WithLockTimeout sets the migration session's lock_timeout (at least 1ms;
// PostgreSQL counts whole milliseconds and takes 0 to mean "wait forever").
func WithLockTimeout(d time.Duration) Option {
	return func(c *upConfig) { c.lockTimeout = d }
}

// WithStatementTimeout sets the migration session's statement_timeout (at
// least 1ms).
func WithStatementTimeout(d time.Duration) Option {
	return func(c *upConfig) { c.statementTimeout = d }
}

type upConfig struct {
	lockTimeout      time.Duration
	statementTimeout time.Duration
	fsys             fs.FS // the migrations; tests substitute their own
}

// The names of the settings in the env contract (app/config), for the
// advice in a TimeoutError.
const (
	envLockTimeout      = "MIGRATE_LOCK_TIMEOUT"
	envStatementTimeout = "MIGRATE_STATEMENT_TIMEOUT"
)

// Applied is one migration that Up applied.
type Applied struct {
	Version  int64
	Name     string // file name, e.g. "00004_indicators.sql"
	Duration time.Duration
}

// Migration is the state of one embedded migration in the database.
type Migration struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time // zero when not applied
}

// Open returns a *sql.DB for the PostgreSQL URL (pgx's stdlib driver). It
// does not connect. Errors never contain the URL, which may hold a password.
func Open(url string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// Not wrapped: pgx's parse errors can quote the URL.
		return nil, errors.New("migrate: invalid database URL: check its form " +
			"(postgres://user:password@host:port/db?sslmode=...) and percent-encoding")
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	cfg.BuildContextWatcherHandler = cancelInServer
	return stdlib.OpenDB(*cfg), nil
}

// cancelInServer makes a statement whose context ends stop in the server
// before the call returns: pgx sends PostgreSQL a cancel request, so the
// statement fails and its transaction rolls back, and cuts the connection
// only if the server has not answered within defaultConnectTimeout. pgx's
// default only cuts the connection and sends the cancel from a goroutine
// that nothing waits for: a process that exits right after (`nbms migrate
// up` stopped by ONESHOT_TIMEOUT) may leave a backend still queued for its
// lock, holding up the live release's queries, until lock_timeout.
func cancelInServer(c *pgconn.PgConn) ctxwatch.Handler {
	return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: defaultConnectTimeout}
}

// Up applies every pending migration, holding the advisory lock so that
// concurrent runners apply each migration exactly once: the others wait,
// then find nothing left to do. On failure it returns the migrations applied
// before the failing one (each migration runs in its own transaction, so the
// failing one left nothing behind, unless it is marked NO TRANSACTION).
//
// The migration statements run with lock_timeout and statement_timeout set
// (DefaultLockTimeout and DefaultStatementTimeout unless opts say
// otherwise); a statement cancelled by either makes Up return a
// *TimeoutError. When ctx ends first (its deadline: ONESHOT_TIMEOUT in
// `nbms migrate up`), Up stops, whether it is waiting for another runner's
// advisory lock or running a statement: the statement is cancelled in the
// server and its migration rolled back (see Open), and the error wraps
// ctx's.
func Up(ctx context.Context, db *sql.DB, opts ...Option) ([]Applied, error) {
	c := upConfig{lockTimeout: DefaultLockTimeout, statementTimeout: DefaultStatementTimeout, fsys: migrations.FS}
	for _, o := range opts {
		o(&c)
	}
	// Below a millisecond PostgreSQL would round to 0, which disables the
	// timeout: exactly the endless wait this exists to prevent.
	if c.lockTimeout < time.Millisecond || c.statementTimeout < time.Millisecond {
		return nil, fmt.Errorf("migrate: lock timeout (%s) and statement timeout (%s) must be at least 1ms: 0 disables them in PostgreSQL",
			c.lockTimeout, c.statementTimeout)
	}
	advisory, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(lockPollInterval, lockPolls))
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	locker := &timeoutLocker{SessionLocker: advisory, lockTimeout: c.lockTimeout, statementTimeout: c.statementTimeout}
	p, err := newProvider(db, c.fsys, goose.WithSessionLocker(locker))
	if err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		var (
			partial   *goose.PartialError
			migration string
			inTx      = true
		)
		if errors.As(err, &partial) {
			results = partial.Applied
			if partial.Failed != nil && partial.Failed.Source != nil {
				migration = path.Base(partial.Failed.Source.Path)
				inTx = runsInTransaction(c.fsys, partial.Failed.Source.Path)
			}
		}
		if te := timeoutError(ctx, err, migration, inTx, c); te != nil {
			err = te
		}
		if cause := context.Cause(ctx); cause != nil {
			// What goose reports then is the cancelled statement's
			// "canceling statement due to user request" and its fallout.
			err = fmt.Errorf("%w: %w", cause, err)
		}
		return appliedFrom(results), fmt.Errorf("migrate: up: %w", err)
	}
	return appliedFrom(results), nil
}

// timeoutLocker sets the migration session's timeouts, then takes goose's
// advisory lock. goose runs every SQL migration, transactional or not, on
// the connection it locks (the lock is the session's), so the settings
// reach exactly the migration statements and nothing else that shares db.
// They are session-level (set_config(..., false)): a transaction's
// ROLLBACK does not undo them, and a migration may still SET LOCAL its own.
//
// goose's HasPending check before it runs on another connection without
// them; it only reads the version table (creating it on an empty database),
// and the live release never locks that table.
type timeoutLocker struct {
	lock.SessionLocker
	lockTimeout      time.Duration
	statementTimeout time.Duration
}

func (l *timeoutLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx,
		`SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)`,
		milliseconds(l.lockTimeout), milliseconds(l.statementTimeout)); err != nil {
		return fmt.Errorf("set lock_timeout and statement_timeout: %w", err)
	}
	if err := l.SessionLocker.SessionLock(ctx, conn); err != nil {
		resetTimeouts(ctx, conn)
		return err
	}
	return nil
}

func (l *timeoutLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	err := l.SessionLocker.SessionUnlock(ctx, conn)
	resetTimeouts(ctx, conn)
	return err
}

// resetTimeouts restores the server's settings before goose hands the
// connection back to db's pool. Best effort: it fails only on a broken
// connection, which the pool discards anyway, and a failure must not turn
// migrations that were applied into a failed Up.
func resetTimeouts(ctx context.Context, conn *sql.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultConnectTimeout)
	defer cancel()
	for _, stmt := range []string{`RESET lock_timeout`, `RESET statement_timeout`} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return
		}
	}
}

// milliseconds renders d as a PostgreSQL time setting, rounded up to whole
// milliseconds (the settings' unit) so that no positive d becomes 0.
func milliseconds(d time.Duration) string {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return strconv.FormatInt(int64(ms), 10) + "ms"
}

// TimeoutError is a migration statement cancelled by the session's
// lock_timeout (SQLSTATE 55P03) or statement_timeout (57014).
type TimeoutError struct {
	// Migration is the file name of the migration that failed, e.g.
	// "00007_indicators_unit.sql"; "" when the statement was goose's own.
	Migration string
	// Setting is "lock_timeout" or "statement_timeout"; Limit its value.
	Setting string
	Limit   time.Duration
	// InTransaction reports whether the migration ran in a transaction,
	// which was rolled back: false for a NO TRANSACTION migration, whose
	// statements before the failing one stay applied.
	InTransaction bool
	// Err is the error as goose returned it; a *pgconn.PgError is in its
	// chain.
	Err error
}

func (e *TimeoutError) Unwrap() error { return e.Err }

func (e *TimeoutError) Error() string {
	subject := e.Migration
	if subject == "" {
		subject = "a statement of the migration session"
	}
	var b strings.Builder
	var pgErr *pgconn.PgError
	detail := ""
	if errors.As(e.Err, &pgErr) {
		detail = ": " + pgErr.Message
	}
	switch e.Setting {
	case "lock_timeout":
		fmt.Fprintf(&b, "%s waited longer than lock_timeout=%s for a lock held by another session (SQLSTATE 55P03 lock_not_available%s). ",
			subject, formatDuration(e.Limit), detail)
	default:
		fmt.Fprintf(&b, "%s ran a statement longer than statement_timeout=%s (SQLSTATE 57014 query_canceled%s). ",
			subject, formatDuration(e.Limit), detail)
	}
	switch {
	case e.Migration == "":
		b.WriteString("No migration was applied by it. ")
	case e.InTransaction:
		fmt.Fprintf(&b, "Its transaction was rolled back: nothing of %s was applied and it is still pending. ", e.Migration)
	default:
		fmt.Fprintf(&b, "It runs without a transaction (-- +goose NO TRANSACTION): the statements before the failing one stay applied, "+
			"the migration is not recorded as applied and the retry runs it from the start; "+
			"an interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index to drop (DROP INDEX CONCURRENTLY) before it. ")
	}
	switch e.Setting {
	case "lock_timeout":
		fmt.Fprintf(&b, "Retry when the other session's long transaction has ended (pg_stat_activity shows it, pg_locks what it holds), "+
			"or raise %s if the live release can afford to queue behind the migration for longer.", envLockTimeout)
	default:
		fmt.Fprintf(&b, "Make the statement faster (batch a backfill; build an index CONCURRENTLY in a NO TRANSACTION migration) "+
			"or raise %s.", envStatementTimeout)
	}
	return b.String()
}

// timeoutError returns the *TimeoutError err is, or nil when err is
// something else. A statement cancelled because ctx ended, or by another
// session's pg_cancel_backend, is not a timeout.
func timeoutError(ctx context.Context, err error, migration string, inTx bool, c upConfig) *TimeoutError {
	var pgErr *pgconn.PgError
	if ctx.Err() != nil || !errors.As(err, &pgErr) {
		return nil
	}
	te := &TimeoutError{Migration: migration, InTransaction: inTx, Err: err}
	switch pgErr.Code {
	case "55P03": // lock_not_available
		te.Setting, te.Limit = "lock_timeout", c.lockTimeout
	case "57014": // query_canceled
		// The server's wording ("due to user request" against "due to
		// statement timeout") is the only tell; localised servers word it
		// otherwise, and statement_timeout is then the likely cause.
		if strings.Contains(pgErr.Message, "user request") {
			return nil
		}
		te.Setting, te.Limit = "statement_timeout", c.statementTimeout
	default:
		return nil
	}
	var partial *goose.PartialError
	if errors.As(err, &partial) {
		te.Err = partial.Err // goose's wrapper adds only the version
	}
	return te
}

// runsInTransaction reports whether goose runs the migration at name in a
// transaction: unless a "-- +goose NO TRANSACTION" annotation says
// otherwise (recognised as goose's parser does). An unreadable file counts
// as not transactional, so that the error never promises a rollback.
func runsInTransaction(fsys fs.FS, name string) bool {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") || !strings.Contains(line, "+goose") {
			continue
		}
		cmd := strings.Replace(strings.ReplaceAll(line, "--", ""), "+goose", "", 1)
		if strings.EqualFold(strings.TrimSpace(cmd), "NO TRANSACTION") {
			return false
		}
	}
	return true
}

// formatDuration writes d as the contract's variables are written: "5s",
// "200ms", "15m", "2h".
func formatDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d >= time.Minute && d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}

// Status lists every embedded migration in version order with whether and
// when it was applied.
func Status(ctx context.Context, db *sql.DB) ([]Migration, error) {
	p, err := newProvider(db, migrations.FS)
	if err != nil {
		return nil, err
	}
	applied, err := appliedVersions(ctx, db)
	if err != nil {
		return nil, err
	}
	sources := p.ListSources()
	out := make([]Migration, 0, len(sources))
	for _, s := range sources {
		at, ok := applied[s.Version]
		out = append(out, Migration{Version: s.Version, Name: path.Base(s.Path), Applied: ok, AppliedAt: at})
	}
	return out, nil
}

// Pending returns the file names of the embedded migrations not yet applied,
// in version order; none means the schema is current.
func Pending(ctx context.Context, db *sql.DB) ([]string, error) {
	all, err := Status(ctx, db)
	if err != nil {
		return nil, err
	}
	var pending []string
	for _, m := range all {
		if !m.Applied {
			pending = append(pending, m.Name)
		}
	}
	return pending, nil
}

// Check is the readiness check for the schema: not ready while any embedded
// migration is pending, so a replica never serves on a schema older than its
// code. It runs one read-only query per call and caches nothing: the query
// is cheaper than a cache's staleness would be worth.
//
// For an app that has a pgxpool rather than a *sql.DB,
// stdlib.OpenDBFromPool(pool) gives one over the same connections.
type Check struct {
	db *sql.DB
}

// NewCheck returns the migrations readiness check on db.
func NewCheck(db *sql.DB) *Check { return &Check{db: db} }

// Name identifies the check in readiness output.
func (c *Check) Name() string { return "migrations" }

// Check returns an error naming the pending migrations, if any.
func (c *Check) Check(ctx context.Context) error {
	pending, err := Pending(ctx, c.db)
	if err != nil {
		return err
	}
	if len(pending) > 0 {
		return fmt.Errorf("migrate: %d pending: %s", len(pending), strings.Join(pending, ", "))
	}
	return nil
}

// newProvider builds the goose provider over the migrations in fsys, with
// extra options (Up's session locker). Creating it reads only the files,
// never the database.
//
// Out-of-order application is allowed because version numbers are
// allocated in ranges per area (00001-00099 data layer, 00100+ auth): a new
// data-layer migration may legitimately arrive after 00100 is applied.
// Migrations in different ranges must therefore not depend on each other's
// later changes.
func newProvider(db *sql.DB, fsys fs.FS, extra ...goose.ProviderOption) (*goose.Provider, error) {
	opts := append([]goose.ProviderOption{
		goose.WithAllowOutofOrder(true),
		// The caller reports what Up returns; goose's own log lines would
		// bypass the application's structured logger.
		goose.WithLogger(goose.NopLogger()),
	}, extra...)
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, opts...)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return p, nil
}

// appliedVersions reads the applied versions and when they were applied. A
// missing version table means nothing has been applied yet. goose records
// tstamp as a timestamp without time zone from now(); the cast reads it back
// in the session's time zone, the server default for both sides.
func appliedVersions(ctx context.Context, db *sql.DB) (map[int64]time.Time, error) {
	rows, err := db.QueryContext(ctx,
		`SELECT version_id, tstamp::timestamptz FROM `+versionTable+` WHERE version_id > 0`)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return map[int64]time.Time{}, nil
		}
		return nil, fmt.Errorf("migrate: read %s: %w", versionTable, err)
	}
	defer rows.Close()
	applied := make(map[int64]time.Time)
	for rows.Next() {
		var (
			version int64
			at      time.Time
		)
		if err := rows.Scan(&version, &at); err != nil {
			return nil, fmt.Errorf("migrate: read %s: %w", versionTable, err)
		}
		applied[version] = at
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate: read %s: %w", versionTable, err)
	}
	return applied, nil
}

func appliedFrom(results []*goose.MigrationResult) []Applied {
	out := make([]Applied, 0, len(results))
	for _, r := range results {
		if r == nil || r.Source == nil || r.Error != nil {
			continue
		}
		out = append(out, Applied{Version: r.Source.Version, Name: path.Base(r.Source.Path), Duration: r.Duration})
	}
	return out
}
