package migrate_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pressly/goose/v3/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
)

// all is every embedded migration, in order; a new migration file must be
// added here, which keeps this list a reviewed inventory of the schema.
var all = []string{
	"00001_extensions.sql",
	"00002_organisations_users.sql",
	"00003_audit_events.sql",
	"00004_indicators.sql",
	"00005_datasets_evidence.sql",
	"00006_monitoring_sites.sql",
	"00100_sessions.sql",
}

func open(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := migrate.Open(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func names(applied []migrate.Applied) []string {
	var out []string
	for _, a := range applied {
		out = append(out, a.Name)
	}
	return out
}

func TestUpFromEmptyThenIdempotent(t *testing.T) {
	ctx := context.Background()
	db := open(t, storetest.NewEmptyDatabase(t))
	check := migrate.NewCheck(db)

	pending, err := migrate.Pending(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, all, pending, "everything is pending on an empty database")
	err = check.Check(ctx)
	require.Error(t, err, "readiness fails while migrations are pending")
	assert.Contains(t, err.Error(), "00006_monitoring_sites.sql")

	status, err := migrate.Status(ctx, db)
	require.NoError(t, err)
	require.Len(t, status, len(all))
	for i, m := range status {
		assert.Equal(t, all[i], m.Name)
		assert.Equal(t, all[i][:5], fmt.Sprintf("%05d", m.Version), "the version is the file's number")
		assert.False(t, m.Applied)
		assert.True(t, m.AppliedAt.IsZero())
	}

	before := time.Now().Add(-time.Minute)
	applied, err := migrate.Up(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, all, names(applied), "Up applies every migration in order")

	status, err = migrate.Status(ctx, db)
	require.NoError(t, err)
	for _, m := range status {
		assert.True(t, m.Applied, m.Name)
		assert.True(t, m.AppliedAt.After(before), "%s applied at %v", m.Name, m.AppliedAt)
	}
	pending, err = migrate.Pending(ctx, db)
	require.NoError(t, err)
	assert.Empty(t, pending)
	assert.NoError(t, check.Check(ctx), "readiness passes once the schema is current")
	assert.Equal(t, "migrations", check.Name())

	again, err := migrate.Up(ctx, db)
	require.NoError(t, err)
	assert.Empty(t, again, "a second Up has nothing to do")

	var postgis string
	require.NoError(t, db.QueryRowContext(ctx,
		`SELECT extversion FROM pg_extension WHERE extname = 'postgis'`).Scan(&postgis))
	assert.NotEmpty(t, postgis, "the PostGIS extension is installed by the migrations")
}

func TestSchemaObjects(t *testing.T) {
	ctx := context.Background()
	db := open(t, storetest.NewDatabase(t))
	tests := []struct {
		name  string
		query string
	}{
		{"tables", `SELECT count(*) = 8 FROM pg_tables WHERE schemaname = 'public' AND tablename IN
			('organisations', 'users', 'indicators', 'indicator_data_points', 'datasets',
			 'evidence_files', 'monitoring_sites', 'audit_events')`},
		{"case-insensitive username index", `SELECT indexdef LIKE '%UNIQUE%lower(username)%'
			FROM pg_indexes WHERE indexname = 'users_username_lower_key'`},
		{"GiST index on site geometry", `SELECT indexdef LIKE '%USING gist (geom)%'
			FROM pg_indexes WHERE indexname = 'monitoring_sites_geom_idx'`},
		{"published indicators index", `SELECT indexdef LIKE '%(code, id) WHERE published%'
			FROM pg_indexes WHERE indexname = 'indicators_published_code_idx'`},
		{"site geometry is Point 4326", `SELECT type = 'POINT' AND srid = 4326
			FROM geometry_columns WHERE f_table_name = 'monitoring_sites' AND f_geometry_column = 'geom'`},
		{"audit triggers", `SELECT count(*) = 2 FROM pg_trigger
			WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ok bool
			require.NoError(t, db.QueryRowContext(ctx, tt.query).Scan(&ok))
			assert.True(t, ok)
		})
	}
}

// Replicas starting at once: each with its own *sql.DB (so its own
// sessions), on a database that has no version table yet. Four runners
// released together make a race likely but cannot force one;
// TestUpWaitsForAnotherRunnersLock shows the exclusion deterministically.
func TestConcurrentUpAppliesEachMigrationOnce(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewEmptyDatabase(t)
	dbs := make([]*sql.DB, 4)
	for i := range dbs {
		dbs[i] = open(t, url)
		require.NoError(t, dbs[i].PingContext(ctx)) // connect before the start signal
	}

	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([][]migrate.Applied, len(dbs))
		errs    = make([]error, len(dbs))
	)
	for i, db := range dbs {
		wg.Go(func() {
			<-start
			results[i], errs[i] = migrate.Up(ctx, db)
		})
	}
	close(start)
	wg.Wait()

	counts := map[string]int{}
	for i := range dbs {
		require.NoError(t, errs[i], "runner %d", i)
		for _, a := range results[i] {
			counts[a.Name]++
		}
	}
	for _, name := range all {
		assert.Equal(t, 1, counts[name], "%s applied by exactly one runner", name)
	}

	var rows, distinct int
	require.NoError(t, dbs[0].QueryRowContext(ctx,
		`SELECT count(*), count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`).
		Scan(&rows, &distinct))
	assert.Equal(t, len(all), rows, "one version row per migration")
	assert.Equal(t, len(all), distinct)
}

// Another replica holding the migration lock (goose's advisory lock ID)
// keeps Up from applying anything until it lets go.
func TestUpWaitsForAnotherRunnersLock(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewEmptyDatabase(t)
	other := open(t, url)
	conn, err := other.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	var locked bool
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, lock.DefaultLockID).Scan(&locked))
	require.True(t, locked)

	runner := open(t, url)
	done := make(chan error, 1)
	var applied []migrate.Applied
	go func() {
		var err error
		applied, err = migrate.Up(ctx, runner)
		done <- err
	}()

	select {
	case err := <-done:
		t.Fatalf("Up returned while the lock was held elsewhere: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	pending, err := migrate.Pending(ctx, other)
	require.NoError(t, err)
	assert.Equal(t, all, pending, "nothing applied while the lock is held")

	var unlocked bool
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, lock.DefaultLockID).Scan(&unlocked))
	require.True(t, unlocked)
	select {
	case err := <-done:
		require.NoError(t, err)
		assert.Equal(t, all, names(applied))
	case <-time.After(30 * time.Second):
		t.Fatal("Up did not proceed after the lock was released")
	}
}

func TestOpenNeverEchoesTheURL(t *testing.T) {
	tests := []string{
		"postgres://nbms:s3cr3t-pw@db:notaport/nbms",
		"postgres://nbms:s3cr3t-pw@db/nbms?sslmode=bogus",
	}
	for _, url := range tests {
		_, err := migrate.Open(url)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "s3cr3t-pw")
	}
}

func TestCheckReportsAnUnreachableDatabase(t *testing.T) {
	db := open(t, "postgres://root@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	err := migrate.NewCheck(db).Check(context.Background())
	require.Error(t, err)
}
