package migrate_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/pressly/goose/v3/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
)

// The deadline of Up's context (`nbms migrate up` runs under
// ONESHOT_TIMEOUT) stops a migration that waits for a lock, however high
// lock_timeout and statement_timeout are: the statement is cancelled in the
// server, not merely abandoned by the client, so its transaction rolls back
// and no lock request is left in the queue for the live release's queries
// to wait behind.
func TestDeadlineCancelsAMigrationWaitingForALock(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewEmptyDatabase(t)
	db := open(t, url)
	_, err := migrate.Up(ctx, db, migrate.WithMigrations(only(widgets, "00001_widgets.sql")))
	require.NoError(t, err)
	tx := liveTransaction(t, url)

	applied, err := upUntil(t, db, time.Second, migrate.WithMigrations(widgets),
		migrate.WithLockTimeout(10*time.Minute), migrate.WithStatementTimeout(10*time.Minute))
	require.Error(t, err)
	assert.Empty(t, applied)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var te *migrate.TimeoutError
	assert.False(t, errors.As(err, &te), "the deadline is not the session's lock_timeout: %v", err)

	assert.Equal(t, int64(1), dbVersion(t, db), "the version table still says 1")
	assert.False(t, exists(t, db, colourExists), "nothing of 00002 was applied")
	assert.False(t, lockRequestQueued(t, db),
		"Up returned with the cancelled statement's lock request still queued on widgets")

	// The live release carries on and commits; the retry applies 00002.
	_, err = tx.ExecContext(ctx, `INSERT INTO widgets (id, name) VALUES (2, 'second')`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	applied, err = upWithin(t, db, migrate.WithMigrations(widgets))
	require.NoError(t, err)
	assert.Equal(t, []string{"00002_widgets_colour.sql"}, names(applied))
}

// The deadline bounds the wait for another runner's advisory lock too,
// which on its own gives up only after five minutes.
func TestDeadlineEndsTheWaitForAnotherRunnersLock(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewEmptyDatabase(t)
	other := open(t, url)
	conn, err := other.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	var locked bool
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, lock.DefaultLockID).Scan(&locked))
	require.True(t, locked)

	applied, err := upUntil(t, open(t, url), time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, applied)
	pending, err := migrate.Pending(ctx, other)
	require.NoError(t, err)
	assert.Equal(t, all, pending, "nothing applied")
}

// upUntil runs Up under a deadline of d and fails the test if it has not
// returned within upBound of it.
func upUntil(t *testing.T, db *sql.DB, d time.Duration, opts ...migrate.Option) ([]migrate.Applied, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	type result struct {
		applied []migrate.Applied
		err     error
	}
	done := make(chan result, 1)
	go func() {
		applied, err := migrate.Up(ctx, db, opts...)
		done <- result{applied, err}
	}()
	select {
	case r := <-done:
		return r.applied, r.err
	case <-time.After(d + upBound):
		t.Fatalf("Up did not return within %s of its deadline", upBound)
		return nil, nil
	}
}

func lockRequestQueued(t *testing.T, db *sql.DB) bool {
	return exists(t, db, `SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'widgets'::regclass AND NOT granted)`)
}
