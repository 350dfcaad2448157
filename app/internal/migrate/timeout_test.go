package migrate_test

import (
	"context"
	"database/sql"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
)

// upBound bounds every Up below that must fail by itself: a failure to
// return is the bug (a migration hanging the deploy), never slowness.
const upBound = 30 * time.Second

// widgets is a two-step schema: version 1 creates a table, version 2 alters
// it, as a release's migration alters a table the live release uses.
var widgets = fstest.MapFS{
	"00001_widgets.sql": {Data: []byte(`-- +goose Up
CREATE TABLE widgets (id bigint PRIMARY KEY, name text NOT NULL);
-- +goose Down
DROP TABLE widgets;
`)},
	"00002_widgets_colour.sql": {Data: []byte(`-- +goose Up
ALTER TABLE widgets ADD COLUMN colour text;
-- +goose Down
ALTER TABLE widgets DROP COLUMN colour;
`)},
}

func only(fsys fstest.MapFS, names ...string) fstest.MapFS {
	out := fstest.MapFS{}
	for _, n := range names {
		out[n] = fsys[n]
	}
	return out
}

func dbVersion(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	var v int64
	require.NoError(t, db.QueryRowContext(context.Background(),
		`SELECT coalesce(max(version_id), 0) FROM goose_db_version`).Scan(&v))
	return v
}

func exists(t *testing.T, db *sql.DB, query string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, db.QueryRowContext(context.Background(), query).Scan(&ok))
	return ok
}

const colourExists = `SELECT EXISTS (SELECT FROM information_schema.columns
	WHERE table_name = 'widgets' AND column_name = 'colour')`

// liveTransaction opens what a serving release has in flight: a
// transaction that wrote and read widgets and has not ended. Its locks (ROW
// EXCLUSIVE and ACCESS SHARE) are enough to make ALTER TABLE wait.
func liveTransaction(t *testing.T, url string) *sql.Tx {
	t.Helper()
	ctx := context.Background()
	live := open(t, url)
	tx, err := live.BeginTx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	_, err = tx.ExecContext(ctx, `INSERT INTO widgets (id, name) VALUES (1, 'first')`)
	require.NoError(t, err)
	var n int
	require.NoError(t, tx.QueryRowContext(ctx, `SELECT count(*) FROM widgets`).Scan(&n))
	require.Equal(t, 1, n)
	return tx
}

// upWithin runs Up and fails the test if it has not returned by itself
// within upBound.
func upWithin(t *testing.T, db *sql.DB, opts ...migrate.Option) ([]migrate.Applied, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), upBound)
	defer cancel()
	applied, err := migrate.Up(ctx, db, opts...)
	require.NoError(t, ctx.Err(), "Up did not return within %s: the timeout did not reach the migration", upBound)
	return applied, err
}

// A migration queued behind a live transaction gives up after lock_timeout,
// applies nothing, says why and what to do, and leaves the live release
// able to carry on; once the transaction has ended the retry applies it.
func TestLockTimeoutLeavesTheLiveReleaseAlone(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewEmptyDatabase(t)
	db := open(t, url)
	applied, err := migrate.Up(ctx, db, migrate.WithMigrations(only(widgets, "00001_widgets.sql")))
	require.NoError(t, err)
	require.Equal(t, []string{"00001_widgets.sql"}, names(applied))

	tx := liveTransaction(t, url)

	applied, err = upWithin(t, db, migrate.WithMigrations(widgets), migrate.WithLockTimeout(200*time.Millisecond))
	require.Error(t, err)
	assert.Empty(t, applied)

	var te *migrate.TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "00002_widgets_colour.sql", te.Migration)
	assert.Equal(t, "lock_timeout", te.Setting)
	assert.Equal(t, 200*time.Millisecond, te.Limit)
	assert.True(t, te.InTransaction)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "the server's error stays in the chain")
	assert.Equal(t, "55P03", pgErr.Code)
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{
		"migrate: up: 00002_widgets_colour.sql waited longer than lock_timeout=200ms for a lock held by another session",
		"(SQLSTATE 55P03 lock_not_available",
		"Its transaction was rolled back: nothing of 00002_widgets_colour.sql was applied",
		"Retry when the other session's long transaction has ended",
		"raise MIGRATE_LOCK_TIMEOUT",
	} {
		assert.Contains(t, msg, want)
	}

	assert.Equal(t, int64(1), dbVersion(t, db), "the version table still says 1")
	assert.False(t, exists(t, db, colourExists), "nothing of 00002 was applied")
	assert.False(t, exists(t, db, `SELECT EXISTS (SELECT FROM pg_locks
		WHERE relation = 'widgets'::regclass AND NOT granted)`),
		"no lock request is left queued for the live release's queries to wait behind")

	// The live release is untouched: its transaction carries on and commits.
	var n int
	require.NoError(t, tx.QueryRowContext(ctx, `SELECT count(*) FROM widgets`).Scan(&n))
	assert.Equal(t, 1, n)
	_, err = tx.ExecContext(ctx, `INSERT INTO widgets (id, name) VALUES (2, 'second')`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	applied, err = upWithin(t, db, migrate.WithMigrations(widgets), migrate.WithLockTimeout(200*time.Millisecond))
	require.NoError(t, err, "with the lock released the retry succeeds")
	assert.Equal(t, []string{"00002_widgets_colour.sql"}, names(applied))
	assert.Equal(t, int64(2), dbVersion(t, db))
	assert.True(t, exists(t, db, colourExists))
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM widgets`).Scan(&n))
	assert.Equal(t, 2, n, "the live release's committed rows are there")
}

// A NO TRANSACTION migration has no rollback: the error says what stayed.
func TestLockTimeoutInAMigrationWithoutTransaction(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewEmptyDatabase(t)
	db := open(t, url)
	_, err := migrate.Up(ctx, db, migrate.WithMigrations(only(widgets, "00001_widgets.sql")))
	require.NoError(t, err)
	fsys := only(widgets, "00001_widgets.sql")
	fsys["00002_gadgets.sql"] = &fstest.MapFile{Data: []byte(`-- +goose NO TRANSACTION
-- +goose Up
CREATE TABLE IF NOT EXISTS gadgets (id bigint);
ALTER TABLE widgets ADD COLUMN colour text;
`)}

	tx := liveTransaction(t, url)
	_, err = upWithin(t, db, migrate.WithMigrations(fsys), migrate.WithLockTimeout(200*time.Millisecond))
	var te *migrate.TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "00002_gadgets.sql", te.Migration)
	assert.False(t, te.InTransaction)
	msg := err.Error()
	assert.Contains(t, msg, "waited longer than lock_timeout=200ms")
	assert.Contains(t, msg, "NO TRANSACTION")
	assert.Contains(t, msg, "the statements before the failing one stay applied")
	assert.NotContains(t, msg, "rolled back")
	assert.True(t, exists(t, db, `SELECT to_regclass('gadgets') IS NOT NULL`), "as the message says")
	assert.Equal(t, int64(1), dbVersion(t, db))

	require.NoError(t, tx.Commit())
	_, err = upWithin(t, db, migrate.WithMigrations(fsys))
	require.NoError(t, err)
	assert.Equal(t, int64(2), dbVersion(t, db))
}

func TestStatementTimeoutCancelsARunawayMigration(t *testing.T) {
	slow := fstest.MapFS{"00001_slow.sql": {Data: []byte("-- +goose Up\nSELECT pg_sleep(60);\n")}}

	t.Run("statement_timeout", func(t *testing.T) {
		db := open(t, storetest.NewEmptyDatabase(t))
		applied, err := upWithin(t, db, migrate.WithMigrations(slow), migrate.WithStatementTimeout(300*time.Millisecond))
		require.Error(t, err)
		assert.Empty(t, applied)
		var te *migrate.TimeoutError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, "00001_slow.sql", te.Migration)
		assert.Equal(t, "statement_timeout", te.Setting)
		assert.Equal(t, 300*time.Millisecond, te.Limit)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "57014", pgErr.Code)
		msg := err.Error()
		t.Log(msg)
		for _, want := range []string{
			"migrate: up: 00001_slow.sql ran a statement longer than statement_timeout=300ms",
			"(SQLSTATE 57014 query_canceled",
			"Its transaction was rolled back: nothing of 00001_slow.sql was applied",
			"raise MIGRATE_STATEMENT_TIMEOUT",
		} {
			assert.Contains(t, msg, want)
		}
		assert.Equal(t, int64(0), dbVersion(t, db))
	})

	t.Run("a cancelled context is not a timeout", func(t *testing.T) {
		db := open(t, storetest.NewEmptyDatabase(t))
		require.NoError(t, db.PingContext(context.Background()))
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := migrate.Up(ctx, db, migrate.WithMigrations(slow))
			done <- err
		}()
		select {
		case err := <-done:
			require.Error(t, err)
			var te *migrate.TimeoutError
			assert.NotErrorAs(t, err, &te, "%v", err)
		case <-time.After(upBound):
			t.Fatal("Up did not return after its context ended")
		}
	})
}

// The settings reach the statements of the migrations themselves, with and
// without a transaction, and leave with the connection.
func TestMigrationSessionHasTheTimeouts(t *testing.T) {
	seen := fstest.MapFS{
		"00001_seen.sql": {Data: []byte(`-- +goose Up
CREATE TABLE seen AS SELECT 1 AS version,
	current_setting('lock_timeout') AS lock_timeout, current_setting('statement_timeout') AS statement_timeout;
`)},
		"00002_seen_without_transaction.sql": {Data: []byte(`-- +goose NO TRANSACTION
-- +goose Up
INSERT INTO seen SELECT 2, current_setting('lock_timeout'), current_setting('statement_timeout');
`)},
	}
	tests := []struct {
		name            string
		opts            []migrate.Option
		lock, statement string
	}{
		{"defaults", nil, "5s", "15min"},
		{"options", []migrate.Option{migrate.WithLockTimeout(1500 * time.Millisecond), migrate.WithStatementTimeout(2 * time.Hour)}, "1500ms", "2h"},
		{"sub-millisecond rounds up, never to 0", []migrate.Option{migrate.WithLockTimeout(1500 * time.Microsecond)}, "2ms", "15min"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db := open(t, storetest.NewEmptyDatabase(t))
			// One connection: the one goose migrates on is the one
			// checked afterwards.
			db.SetMaxOpenConns(1)
			var lockBefore, statementBefore string
			require.NoError(t, db.QueryRowContext(ctx, `SELECT current_setting('lock_timeout'), current_setting('statement_timeout')`).
				Scan(&lockBefore, &statementBefore))

			_, err := upWithin(t, db, append(tt.opts, migrate.WithMigrations(seen))...)
			require.NoError(t, err)
			rows, err := db.QueryContext(ctx, `SELECT version, lock_timeout, statement_timeout FROM seen ORDER BY version`)
			require.NoError(t, err)
			defer rows.Close()
			var got []string
			for rows.Next() {
				var (
					v       int
					lk, stm string
				)
				require.NoError(t, rows.Scan(&v, &lk, &stm))
				got = append(got, lk+" "+stm)
			}
			require.NoError(t, rows.Err())
			want := tt.lock + " " + tt.statement
			assert.Equal(t, []string{want, want}, got, "in a transaction and without one")

			var lockAfter, statementAfter string
			require.NoError(t, db.QueryRowContext(ctx, `SELECT current_setting('lock_timeout'), current_setting('statement_timeout')`).
				Scan(&lockAfter, &statementAfter))
			assert.Equal(t, lockBefore, lockAfter, "reset before the connection goes back to the pool")
			assert.Equal(t, statementBefore, statementAfter)
		})
	}
}

func TestUpRefusesATimeoutThatWouldDisableIt(t *testing.T) {
	db := open(t, "postgres://root@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	for _, opt := range []migrate.Option{migrate.WithLockTimeout(0), migrate.WithStatementTimeout(-time.Second), migrate.WithLockTimeout(time.Microsecond)} {
		_, err := migrate.Up(context.Background(), db, opt)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "must be at least 1ms")
	}
}

// `nbms migrate up` passes the env contract's values; when a caller passes
// none, the package's defaults are the contract's, and the advice in a
// TimeoutError names variables that exist.
func TestDefaultsAreTheContracts(t *testing.T) {
	for name, want := range map[string]time.Duration{
		"MIGRATE_LOCK_TIMEOUT":      migrate.DefaultLockTimeout,
		"MIGRATE_STATEMENT_TIMEOUT": migrate.DefaultStatementTimeout,
	} {
		v, ok := config.Lookup(name)
		require.True(t, ok, name)
		for _, p := range config.Profiles {
			d, err := time.ParseDuration(v.DefaultFor(p))
			require.NoError(t, err, name)
			assert.Equal(t, want, d, "%s in %s", name, p)
		}
	}
}

// A rollback runs the previous release's migrate one-shot, whose binary
// knows fewer migrations than the database has applied (the expand/contract
// rule keeps its code working on that schema). It must apply nothing,
// succeed, and leave the newer schema as it is.
func TestUpOfAnOlderReleaseOnANewerSchemaAppliesNothing(t *testing.T) {
	ctx := context.Background()
	db := open(t, storetest.NewEmptyDatabase(t))
	applied, err := migrate.Up(ctx, db, migrate.WithMigrations(widgets))
	require.NoError(t, err)
	require.Len(t, applied, 2)

	applied, err = upWithin(t, db, migrate.WithMigrations(only(widgets, "00001_widgets.sql")))
	require.NoError(t, err, "the previous release's migrate succeeds on the newer schema")
	assert.Empty(t, applied)
	assert.Equal(t, int64(2), dbVersion(t, db), "the version table still says 2")
	assert.True(t, exists(t, db, colourExists), "the newer migration's column stays")
}
