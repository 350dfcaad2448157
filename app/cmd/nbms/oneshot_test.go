package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/static"
)

// The deploy's one-shot `nbms migrate up` against the real schema one
// migration behind, blocked by a live transaction's lock, with
// MIGRATE_LOCK_TIMEOUT and MIGRATE_STATEMENT_TIMEOUT too high to fire:
// ONESHOT_TIMEOUT stops it (exit 124, one line saying what to raise), the
// migration's statement is cancelled in the server, so nothing is applied
// and no lock request is left queued in front of the live release's
// queries, and the live transaction carries on and commits.
func TestMigrateUpStopsAtTheOneShotTimeout(t *testing.T) {
	ctx := context.Background()
	url, db, live := behindALiveWrite(t)

	env := prodEnv(t)
	env["DATABASE_URL"] = url
	env["MIGRATE_LOCK_TIMEOUT"] = "1m"
	env["MIGRATE_STATEMENT_TIMEOUT"] = "10m"
	env["ONESHOT_TIMEOUT"] = "2s"
	out, errOut, code := run(t, env, "migrate", "up") // bounded by run's minute: a kill is not 124
	assert.Equal(t, exitTimeout, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	assert.Equal(t, 1, strings.Count(errOut, "\n"), "one line:\n%s", errOut)
	assert.True(t, strings.HasPrefix(errOut, "nbms migrate up: stopped: not finished within ONESHOT_TIMEOUT=2s"), errOut)
	assert.Contains(t, errOut, "rolled back")
	assert.Contains(t, errOut, "raise ONESHOT_TIMEOUT (the stack's nbms:appEnv.ONESHOT_TIMEOUT)")
	assert.NotContains(t, out, "applied")

	assert.Equal(t, []string{"00100_sessions.sql"}, pending(t, db), "nothing applied")
	var version int64
	require.NoError(t, db.QueryRowContext(ctx, `SELECT max(version_id) FROM goose_db_version`).Scan(&version))
	assert.Less(t, version, int64(100), "the version is unchanged")
	var queued bool
	require.NoError(t, db.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'users'::regclass AND NOT granted)`).Scan(&queued))
	assert.False(t, queued, "the stopped migration left a lock request queued on users")

	_, err := live.ExecContext(ctx, `UPDATE users SET display_name = display_name WHERE id = 0`)
	require.NoError(t, err, "the live transaction carries on")
	require.NoError(t, live.Commit())

	delete(env, "ONESHOT_TIMEOUT")
	out, errOut, code = run(t, env, "migrate", "up")
	assert.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "applied 00100 00100_sessions.sql")
	assert.Empty(t, pending(t, db))
}

func TestCollectstaticUnderTheOneShotTimeout(t *testing.T) {
	for _, limit := range []string{"", "1m"} {
		env := prodEnv(t)
		if limit != "" {
			env["ONESHOT_TIMEOUT"] = limit
		}
		out, errOut, code := run(t, env, "collectstatic")
		require.Equal(t, exitOK, code, "ONESHOT_TIMEOUT=%q: %s", limit, errOut)
		assert.Contains(t, out, "published ")
		assert.Empty(t, errOut)
		files, err := static.Files()
		require.NoError(t, err)
		for _, name := range append(files, static.ManifestName) {
			assert.FileExists(t, filepath.Join(env["STATIC_ROOT"], name))
		}
	}
}

func TestOneShotRefusesAnInvalidTimeout(t *testing.T) {
	for _, value := range []string{"0s", "500ms", "25h", "soon"} {
		env := prodEnv(t)
		env["ONESHOT_TIMEOUT"] = value
		_, errOut, code := run(t, env, "collectstatic")
		assert.Equal(t, config.ExitConfig, code, value)
		assert.Contains(t, errOut, "ONESHOT_TIMEOUT", value)
		entries, err := os.ReadDir(env["STATIC_ROOT"])
		require.NoError(t, err)
		assert.Empty(t, entries, "nothing published with %s=%s", "ONESHOT_TIMEOUT", value)
	}
}

// runOneShot in the process, for what the binary's tests cannot stage.
func TestRunOneShot(t *testing.T) {
	settings := func(limit time.Duration) *config.Settings { return &config.Settings{OneShotTimeout: limit} }
	// Bounds failures only: runOneShot must return by itself.
	within := func(t *testing.T, f func() int) int {
		t.Helper()
		done := make(chan int, 1)
		go func() { done <- f() }()
		select {
		case code := <-done:
			return code
		case <-time.After(time.Minute):
			t.Fatal("runOneShot did not return")
			return 0
		}
	}

	t.Run("work that finishes in time keeps its status and says nothing more", func(t *testing.T) {
		for _, want := range []int{exitOK, exitFail} {
			var stderr bytes.Buffer
			code := runOneShot(context.Background(), "collectstatic", settings(time.Hour), &stderr, func(context.Context) int { return want })
			assert.Equal(t, want, code)
			assert.Empty(t, stderr.String())
		}
	})

	t.Run("work that honours its context", func(t *testing.T) {
		var stderr bytes.Buffer
		code := within(t, func() int {
			return runOneShot(context.Background(), "createorg", settings(10*time.Millisecond), &stderr, func(ctx context.Context) int {
				<-ctx.Done()
				assert.True(t, timedOut(ctx))
				return exitFail
			})
		})
		assert.Equal(t, exitTimeout, code)
		assert.Equal(t, "nbms createorg: stopped: not finished within ONESHOT_TIMEOUT=10ms; raise ONESHOT_TIMEOUT (the stack's nbms:appEnv.ONESHOT_TIMEOUT) if it needs longer\n", stderr.String())
	})

	t.Run("work that ignores its context is abandoned after the grace", func(t *testing.T) {
		defer func(g time.Duration) { oneShotGrace = g }(oneShotGrace)
		oneShotGrace = 10 * time.Millisecond
		stuck := make(chan struct{})
		defer close(stuck)
		var stderr bytes.Buffer
		code := within(t, func() int {
			return runOneShot(context.Background(), "collectstatic", settings(10*time.Millisecond), &stderr, func(context.Context) int {
				<-stuck // a write to a hung file system
				return exitOK
			})
		})
		assert.Equal(t, exitTimeout, code)
		assert.Contains(t, stderr.String(), "nbms collectstatic: stopped: not finished within ONESHOT_TIMEOUT=10ms")
	})

	t.Run("a SIGTERM is not a timeout", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var stderr bytes.Buffer
		code := within(t, func() int {
			return runOneShot(ctx, "migrate up", settings(time.Hour), &stderr, func(ctx context.Context) int {
				cancel()
				<-ctx.Done()
				assert.False(t, timedOut(ctx))
				return exitFail
			})
		})
		assert.Equal(t, exitFail, code)
		assert.Empty(t, stderr.String())
	})
}
