package backup

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A drill holds its scratch directory's lock for its whole run, so a second
// drill (another process: nbms backup-drill) is refused at once, and it
// first removes the copies that killed drills left there, nothing else.
// The drill script is a stand-in here that prints a passing summary after
// a pause; the real script's cleanup is TestScheduledDrills'.
func TestDrillScratchLockAndLeftovers(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, scratchPrefix+"20261207T185600Z-KFAJZ5WR")
	require.NoError(t, os.MkdirAll(filepath.Join(left, "data"), 0o700))
	status := filepath.Join(dir, "last-drill.json")
	require.NoError(t, os.WriteFile(status, []byte("{}"), 0o644))
	other := filepath.Join(dir, "kept")
	require.NoError(t, os.Mkdir(other, 0o700))

	started := filepath.Join(t.TempDir(), "started")
	script := filepath.Join(t.TempDir(), "drill.sh")
	require.NoError(t, os.WriteFile(script, []byte(`#!/bin/sh
touch `+started+`
sleep 2
echo '{"result":"ok","backup_set":"20261207-185209F","row_counts":{"users":1},"amcheck":{"indexes":3,"relations":2}}'
`), 0o755))
	o := DrillOptions{Command: script, Tables: "users", ScratchDir: dir, StatusFile: status}

	done := make(chan DrillResult, 1)
	go func() { done <- o.runDrill(context.Background(), PgBackRest{}) }()
	require.Eventually(t, func() bool { _, err := os.Stat(started); return err == nil }, 10*time.Second, 10*time.Millisecond)
	_, err := lockScratch(dir)
	require.Error(t, err, "a second drill is refused while the first runs")
	assert.Contains(t, err.Error(), "another restore drill is using "+dir)
	second := o.runDrill(context.Background(), PgBackRest{})
	assert.False(t, second.OK)
	assert.Contains(t, second.Error, "another restore drill is using")

	r := <-done
	require.True(t, r.OK, r.Error)
	assert.Equal(t, []string{left}, r.LeftoversRemoved)
	assert.NoDirExists(t, left, "the killed drill's copy is gone")
	assert.FileExists(t, status, "the status file stays")
	assert.DirExists(t, other, "only the drills' own directories are removed")
	lock, err := lockScratch(dir)
	require.NoError(t, err, "the lock is released when the drill ends")
	lock.Close()
}
