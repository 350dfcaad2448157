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
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	return stdlib.OpenDB(*cfg), nil
}

// Up applies every pending migration, holding the advisory lock so that
// concurrent runners apply each migration exactly once: the others wait,
// then find nothing left to do. On failure it returns the migrations applied
// before the failing one (each migration runs in its own transaction, so the
// failing one left nothing behind).
func Up(ctx context.Context, db *sql.DB) ([]Applied, error) {
	p, err := newProvider(db)
	if err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		var partial *goose.PartialError
		if errors.As(err, &partial) {
			results = partial.Applied
		}
		return appliedFrom(results), fmt.Errorf("migrate: up: %w", err)
	}
	return appliedFrom(results), nil
}

// Status lists every embedded migration in version order with whether and
// when it was applied.
func Status(ctx context.Context, db *sql.DB) ([]Migration, error) {
	p, err := newProvider(db)
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

// newProvider builds the goose provider. Creating it reads only the
// embedded files, never the database.
//
// Out-of-order application is allowed because version numbers are
// allocated in ranges per area (00001-00099 data layer, 00100+ auth): a new
// data-layer migration may legitimately arrive after 00100 is applied.
// Migrations in different ranges must therefore not depend on each other's
// later changes.
func newProvider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(lockPollInterval, lockPolls))
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithSessionLocker(locker),
		goose.WithAllowOutofOrder(true),
		// The caller reports what Up returns; goose's own log lines would
		// bypass the application's structured logger.
		goose.WithLogger(goose.NopLogger()),
	)
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
