package main

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
)

// behindALiveWrite is the real schema one migration behind (00100 pending)
// and the live release's write in flight: an UPDATE of users (ROW
// EXCLUSIVE) in an open transaction. The foreign key to users that 00100
// creates needs SHARE ROW EXCLUSIVE on users, which must wait for it.
func behindALiveWrite(t *testing.T) (url string, db *sql.DB, live *sql.Tx) {
	t.Helper()
	ctx := context.Background()
	url = storetest.NewDatabase(t)
	db, err := migrate.Open(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	for _, stmt := range []string{
		`DROP TABLE sessions`,
		`DELETE FROM goose_db_version WHERE version_id = 100`,
	} {
		_, err := db.ExecContext(ctx, stmt)
		require.NoError(t, err)
	}
	live, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = live.Rollback() })
	_, err = live.ExecContext(ctx, `UPDATE users SET display_name = display_name WHERE id = 0`)
	require.NoError(t, err)
	return url, db, live
}

// The deploy's one-shot `nbms migrate up` against the real schema one
// migration behind, while the live release has a write in flight on users,
// which the pending 00100_sessions.sql references: MIGRATE_LOCK_TIMEOUT
// reaches the migration, which fails by itself with the advice, and the
// retry after the write commits applies it.
func TestMigrateUpGivesUpOnALockHeldByTheLiveRelease(t *testing.T) {
	ctx := context.Background()
	url, db, live := behindALiveWrite(t)

	env := prodEnv(t)
	env["DATABASE_URL"] = url
	env["MIGRATE_LOCK_TIMEOUT"] = "300ms"
	out, errOut, code := run(t, env, "migrate", "up") // bounded by run's minute
	assert.Equal(t, exitFail, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	assert.Contains(t, errOut, "nbms migrate up: migrate: up: 00100_sessions.sql waited longer than lock_timeout=300ms for a lock held by another session")
	assert.Contains(t, errOut, "nothing of 00100_sessions.sql was applied")
	assert.Contains(t, errOut, "raise MIGRATE_LOCK_TIMEOUT")
	assert.Equal(t, []string{"00100_sessions.sql"}, pending(t, db))

	_, err := live.ExecContext(ctx, `UPDATE users SET display_name = display_name WHERE id = 0`)
	require.NoError(t, err, "the live transaction carries on")
	require.NoError(t, live.Commit())

	out, errOut, code = run(t, env, "migrate", "up")
	assert.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "applied 00100 00100_sessions.sql")
	assert.Empty(t, pending(t, db))
}

func TestMigrateUpRefusesAnInvalidTimeout(t *testing.T) {
	env := prodEnv(t)
	env["MIGRATE_LOCK_TIMEOUT"] = "0s"
	env["MIGRATE_STATEMENT_TIMEOUT"] = "forever"
	_, errOut, code := run(t, env, "migrate", "up")
	assert.Equal(t, config.ExitConfig, code)
	assert.Contains(t, errOut, "MIGRATE_LOCK_TIMEOUT")
	assert.Contains(t, errOut, "MIGRATE_STATEMENT_TIMEOUT")
}

func pending(t *testing.T, db *sql.DB) []string {
	t.Helper()
	p, err := migrate.Pending(context.Background(), db)
	require.NoError(t, err)
	return p
}
