package database_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/database"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// The checker must plug into the readiness endpoint.
var _ health.Checker = database.Check(nil)

func open(t *testing.T, o database.Options) *pgxpool.Pool {
	t.Helper()
	if o.URL == "" {
		o.URL = testsupport.DatabaseURL()
	}
	pool, err := database.Open(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func TestOpenAppliesOptions(t *testing.T) {
	tests := []struct {
		name  string
		opts  database.Options
		check func(t *testing.T, cfg *pgxpool.Config)
	}{
		{
			name: "every option",
			opts: database.Options{
				MaxConns: 7, MinConns: 2,
				MaxConnLifetime: 10 * time.Minute, MaxConnLifetimeJitter: 30 * time.Second,
				MaxConnIdleTime: 3 * time.Minute, HealthCheckPeriod: 15 * time.Second,
				ConnectTimeout: 4 * time.Second, ApplicationName: "nbms-test",
			},
			check: func(t *testing.T, cfg *pgxpool.Config) {
				assert.Equal(t, int32(7), cfg.MaxConns)
				assert.Equal(t, int32(2), cfg.MinConns)
				assert.Equal(t, 10*time.Minute, cfg.MaxConnLifetime)
				assert.Equal(t, 30*time.Second, cfg.MaxConnLifetimeJitter)
				assert.Equal(t, 3*time.Minute, cfg.MaxConnIdleTime)
				assert.Equal(t, 15*time.Second, cfg.HealthCheckPeriod)
				assert.Equal(t, 4*time.Second, cfg.ConnConfig.ConnectTimeout)
				assert.Equal(t, "nbms-test", cfg.ConnConfig.RuntimeParams["application_name"])
				assert.Equal(t, pgx.QueryExecModeCacheStatement, cfg.ConnConfig.DefaultQueryExecMode)
			},
		},
		{
			name: "zero options keep the URL's pool settings",
			opts: database.Options{URL: testsupport.DatabaseURL() + "&pool_max_conns=9&pool_max_conn_lifetime=42s&connect_timeout=3"},
			check: func(t *testing.T, cfg *pgxpool.Config) {
				assert.Equal(t, int32(9), cfg.MaxConns)
				assert.Equal(t, 42*time.Second, cfg.MaxConnLifetime)
				assert.Equal(t, 3*time.Second, cfg.ConnConfig.ConnectTimeout)
			},
		},
		{
			name: "options override the URL",
			opts: database.Options{URL: testsupport.DatabaseURL() + "&pool_max_conns=9&connect_timeout=3", MaxConns: 3, ConnectTimeout: time.Second},
			check: func(t *testing.T, cfg *pgxpool.Config) {
				assert.Equal(t, int32(3), cfg.MaxConns)
				assert.Equal(t, time.Second, cfg.ConnConfig.ConnectTimeout)
			},
		},
		{
			name: "connect timeout defaults instead of unbounded",
			opts: database.Options{},
			check: func(t *testing.T, cfg *pgxpool.Config) {
				assert.Equal(t, database.DefaultConnectTimeout, cfg.ConnConfig.ConnectTimeout)
			},
		},
		{
			name: "PgBouncer transaction mode",
			opts: database.Options{PgBouncerTransactionMode: true},
			check: func(t *testing.T, cfg *pgxpool.Config) {
				assert.Equal(t, pgx.QueryExecModeExec, cfg.ConnConfig.DefaultQueryExecMode)
				assert.Zero(t, cfg.ConnConfig.StatementCacheCapacity)
				assert.Zero(t, cfg.ConnConfig.DescriptionCacheCapacity)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := open(t, tt.opts)
			tt.check(t, pool.Config())
			// The options reach a working pool, not just a struct.
			require.NoError(t, database.Ping(context.Background(), pool))
		})
	}
}

func TestApplicationNameReachesServer(t *testing.T) {
	pool := open(t, database.Options{ApplicationName: "nbms-appname-test"})
	var got string
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT current_setting('application_name')").Scan(&got))
	assert.Equal(t, "nbms-appname-test", got)
}

const secret = "Sup3rS3cretPW"

func TestOpenErrorsNeverContainPassword(t *testing.T) {
	tests := []struct {
		name    string
		opts    database.Options
		wantURL bool // error wraps ErrInvalidURL
	}{
		{"port is not a number", database.Options{URL: "postgres://u:" + secret + "@db.example:notaport/db"}, true},
		{"unescaped slash in password", database.Options{URL: "postgres://u:" + secret + "/x@db.example/db"}, true},
		{"broken IPv6 host", database.Options{URL: "postgres://u:" + secret + "@[::1/db"}, true},
		{"bad pool_max_conns", database.Options{URL: "postgres://u:" + secret + "@db.example/db?pool_max_conns=many"}, true},
		{"bad keyword/value", database.Options{URL: "user=u password=" + secret + " host=h port=x"}, true},
		{"bad sslmode", database.Options{URL: "postgres://u:" + secret + "@db.example/db?sslmode=sometimes"}, true},
		{"empty URL", database.Options{}, true},
		{"MinConns above MaxConns", database.Options{URL: "postgres://u:" + secret + "@db.example/db", MaxConns: 2, MinConns: 3}, false},
		{"negative duration", database.Options{URL: "postgres://u:" + secret + "@db.example/db", MaxConnLifetime: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := database.Open(context.Background(), tt.opts)
			require.Error(t, err)
			assert.Nil(t, pool)
			assert.NotContains(t, err.Error(), secret)
			assert.Equal(t, tt.wantURL, errors.Is(err, database.ErrInvalidURL), err.Error())
		})
	}
}

func TestPingErrorHasNoPassword(t *testing.T) {
	pool := open(t, database.Options{
		URL:            "postgres://postgres:" + secret + "@" + testsupport.ClosedAddr(t) + "/test?sslmode=disable",
		ConnectTimeout: time.Second,
	})
	err := database.Ping(context.Background(), pool)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), secret)
}

func TestMaxConnLifetimeRecyclesConnections(t *testing.T) {
	pool := open(t, database.Options{
		MaxConns:          1,
		MaxConnLifetime:   200 * time.Millisecond,
		HealthCheckPeriod: 50 * time.Millisecond,
	})
	ctx := context.Background()
	backendPID := func() uint32 {
		var pid uint32
		require.NoError(t, pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
		return pid
	}
	first := backendPID()
	// Bounded polling: the pool must replace the connection well within 10s.
	var later uint32
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if later = backendPID(); later != first {
			break
		}
	}
	assert.NotEqual(t, first, later, "connection was never recycled")
	assert.Positive(t, pool.Stat().MaxLifetimeDestroyCount())
}

func TestPgBouncerModeCreatesNoPreparedStatements(t *testing.T) {
	tests := []struct {
		name         string
		pgbouncer    bool
		wantPrepared bool
	}{
		{"default mode prepares statements", false, true},
		{"PgBouncer transaction mode prepares none", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := open(t, database.Options{MaxConns: 1, PgBouncerTransactionMode: tt.pgbouncer})
			ctx := context.Background()
			// One connection, so the queries and the look at
			// pg_prepared_statements see the same server session.
			conn, err := pool.Acquire(ctx)
			require.NoError(t, err)
			defer conn.Release()
			for i := range 3 {
				var n int
				require.NoError(t, conn.QueryRow(ctx, "SELECT $1::int + $2::int", i, 1).Scan(&n))
				require.Equal(t, i+1, n)
				var s string
				require.NoError(t, conn.QueryRow(ctx, "SELECT $1::text", "x").Scan(&s))
			}
			var prepared int
			require.NoError(t, conn.QueryRow(ctx,
				"SELECT count(*) FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared_statements%'").Scan(&prepared))
			if tt.wantPrepared {
				assert.Positive(t, prepared)
			} else {
				assert.Zero(t, prepared)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		opts    database.Options
		hold    bool // the test holds the only connection
		wantErr error
	}{
		{name: "healthy pool", opts: database.Options{MaxConns: 2}},
		{name: "healthy pool behind PgBouncer settings", opts: database.Options{MaxConns: 2, PgBouncerTransactionMode: true}},
		{name: "exhausted pool fails fast", opts: database.Options{MaxConns: 1}, hold: true, wantErr: database.ErrPoolExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := open(t, tt.opts)
			ctx := context.Background()
			if tt.hold {
				conn, err := pool.Acquire(ctx)
				require.NoError(t, err)
				defer conn.Release()
			}
			check := database.Check(pool)
			assert.Equal(t, "postgres", check.Name())
			// No deadline from the caller: the checker bounds itself.
			err := check.Check(ctx)
			if tt.wantErr == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
}

func TestCheckUnreachableDatabase(t *testing.T) {
	pool := open(t, database.Options{URL: "postgres://postgres:" + secret + "@" + testsupport.ClosedAddr(t) + "/test?sslmode=disable"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := database.Check(pool).Check(ctx)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), secret)
}

// FuzzOpenErrorHasNoPassword feeds passwords into malformed and valid URL
// shapes; whatever Open says, it must not repeat the password.
func FuzzOpenErrorHasNoPassword(f *testing.F) {
	for _, pw := range []string{"hunter2", "p@ss:word", "a/b?c#d", "%zz", "[::1]", " spaced out ", "pool_max_conns=x"} {
		for shape := range uint8(6) {
			f.Add(pw, shape)
		}
	}
	shapes := []string{
		"postgres://u:PW@db.example:5432/db",
		"postgres://u:PW@db.example:notaport/db",
		"postgres://u:PW@db.example/db?pool_max_conns=x",
		"postgres://u:PW@[::1/db",
		"user=u password=PW host=h port=x",
		"postgres://u:PW@db.example/db?sslmode=sometimes",
	}
	f.Fuzz(func(t *testing.T, pw string, shape uint8) {
		// The marker keeps the password distinct from the error's own words.
		pw = "Zq9Marker" + pw
		url := strings.Replace(shapes[int(shape)%len(shapes)], "PW", pw, 1)
		pool, err := database.Open(context.Background(), database.Options{URL: url})
		if err != nil {
			if strings.Contains(err.Error(), pw) {
				t.Fatalf("error repeats the password: %v", err)
			}
			return
		}
		pool.Close()
	})
}
