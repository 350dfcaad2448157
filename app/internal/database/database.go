// Package database builds the PostgreSQL connection pool from explicit
// options and offers a readiness check for it.
//
// The pool connects lazily: Open succeeds while the database is down so the
// process can start, answer liveness probes and report "not ready" until the
// database comes back. Callers that want to fail fast at boot call Ping.
package database

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultConnectTimeout bounds a connection attempt when neither Options nor
// the URL's connect_timeout set one. pgx would otherwise dial for up to two
// minutes in the background, long after the request that asked has gone.
const DefaultConnectTimeout = 5 * time.Second

// ErrInvalidURL is returned (wrapped) when the connection URL cannot be parsed.
var ErrInvalidURL = errors.New("database: invalid connection URL")

// Options configures the pool. A zero field keeps the value from the URL's
// pool_* / connect_timeout parameters, or pgx's default when the URL has none.
type Options struct {
	// URL is a libpq connection string, e.g.
	// postgres://user:password@host:5432/db?sslmode=verify-full.
	URL string

	MaxConns int32
	MinConns int32

	// MaxConnLifetime is how long a connection may live before the pool closes
	// it; it is Django's CONN_MAX_AGE for a pool that is always persistent.
	// Recycling lets connections follow a failover or a PgBouncer restart.
	MaxConnLifetime time.Duration
	// MaxConnLifetimeJitter spreads recycling so replicas started together do
	// not reconnect together. pgx applies it in whole seconds.
	MaxConnLifetimeJitter time.Duration
	MaxConnIdleTime       time.Duration
	// HealthCheckPeriod is how often the pool closes idle connections that
	// are expired, too old or broken.
	HealthCheckPeriod time.Duration
	// ConnectTimeout bounds one connection attempt; see DefaultConnectTimeout.
	ConnectTimeout time.Duration

	// PgBouncerTransactionMode must be true when the URL points at PgBouncer
	// with pool_mode=transaction (and max_prepared_statements=0 or a
	// PgBouncer older than 1.21). See Open for what it changes.
	PgBouncerTransactionMode bool

	// ApplicationName is reported to the server (pg_stat_activity) so DBAs
	// can tell this service's sessions apart.
	ApplicationName string
}

// Open parses o.URL, applies o and returns a pool. It does not contact the
// database.
//
// With PgBouncerTransactionMode, queries run in pgx.QueryExecModeExec and the
// statement and description caches are off. The default mode creates named
// server-side prepared statements, which live on one server connection while
// PgBouncer hands each transaction a possibly different one: the result is
// "prepared statement ... does not exist / already exists". Exec mode sends
// Parse/Bind/Execute/Sync for the unnamed statement in one round trip, which
// PgBouncer keeps on one server connection, and parameters are still bound by
// the server. pgx's docs prefer it over QueryExecModeSimpleProtocol, which
// interpolates parameters on the client and is only needed for proxies that
// do not speak the extended protocol at all.
//
// Errors never contain the URL: pgx redacts passwords from its parse errors
// only on a best-effort basis, so they are replaced, not wrapped.
func Open(ctx context.Context, o Options) (*pgxpool.Pool, error) {
	cfg, err := config(o)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: create pool: %w", err)
	}
	return pool, nil
}

func config(o Options) (*pgxpool.Config, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		// Deliberately not wrapping err: its text and its ConnString field
		// can carry the password.
		return nil, fmt.Errorf("%w: check its form (postgres://user:password@host:port/db?sslmode=...), "+
			"that the password is percent-encoded and that pool_* values are valid", ErrInvalidURL)
	}

	setIfPositive(&cfg.MaxConns, o.MaxConns)
	setIfPositive(&cfg.MinConns, o.MinConns)
	setIfPositive(&cfg.MaxConnLifetime, o.MaxConnLifetime)
	setIfPositive(&cfg.MaxConnLifetimeJitter, o.MaxConnLifetimeJitter)
	setIfPositive(&cfg.MaxConnIdleTime, o.MaxConnIdleTime)
	setIfPositive(&cfg.HealthCheckPeriod, o.HealthCheckPeriod)
	setIfPositive(&cfg.ConnConfig.ConnectTimeout, o.ConnectTimeout)
	if cfg.ConnConfig.ConnectTimeout <= 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MinConns > cfg.MaxConns {
		return nil, fmt.Errorf("database: MinConns (%d) exceeds MaxConns (%d)", cfg.MinConns, cfg.MaxConns)
	}
	if o.ApplicationName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = o.ApplicationName
	}
	if o.PgBouncerTransactionMode {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
		cfg.ConnConfig.StatementCacheCapacity = 0
		cfg.ConnConfig.DescriptionCacheCapacity = 0
	}
	return cfg, nil
}

func (o Options) validate() error {
	if o.URL == "" {
		return fmt.Errorf("%w: empty", ErrInvalidURL)
	}
	if o.MaxConns < 0 || o.MinConns < 0 {
		return errors.New("database: MaxConns and MinConns must not be negative")
	}
	for name, d := range map[string]time.Duration{
		"MaxConnLifetime":       o.MaxConnLifetime,
		"MaxConnLifetimeJitter": o.MaxConnLifetimeJitter,
		"MaxConnIdleTime":       o.MaxConnIdleTime,
		"HealthCheckPeriod":     o.HealthCheckPeriod,
		"ConnectTimeout":        o.ConnectTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("database: %s must not be negative", name)
		}
	}
	return nil
}

func setIfPositive[T int32 | time.Duration](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}

// Ping checks that a connection can be acquired and used, within ctx.
func Ping(ctx context.Context, pool *pgxpool.Pool) error {
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("database: ping: %w", err)
	}
	return nil
}
