package backup

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGate: a drill waits for a running backup and gets the gate when it
// leaves; meanwhile backups and other drills are skipped with the reason;
// a drill whose context ends while it waits gives up and leaves the gate
// as it was.
func TestGate(t *testing.T) {
	var g gate
	_, ok := g.enter(jobBackup)
	require.True(t, ok)
	blocked, ok := g.enter(jobBackup)
	assert.False(t, ok)
	assert.Equal(t, "another backup is running", blocked)

	waits := make(chan string, 1)
	started := make(chan bool, 1)
	go func() {
		_, ok := g.await(context.Background(), jobDrill, func(running string) { waits <- running })
		started <- ok
	}()
	assert.Equal(t, jobBackup, <-waits, "the drill says what it waits for")
	blocked, ok = g.enter(jobBackup)
	assert.False(t, ok)
	assert.Equal(t, "another backup is running", blocked)
	blocked, ok = g.await(context.Background(), jobDrill, func(string) { t.Error("a second drill must not wait") })
	assert.False(t, ok)
	assert.Equal(t, "another restore drill is waiting", blocked)
	select {
	case <-started:
		t.Fatal("the drill started while the backup runs")
	default:
	}

	g.leave() // the backup ends: the drill has the gate
	require.True(t, <-started)
	blocked, ok = g.enter(jobBackup)
	assert.False(t, ok)
	assert.Equal(t, "a restore drill is running", blocked)
	g.leave()

	// A drill that gives up waiting.
	_, ok = g.enter(jobBackup)
	require.True(t, ok)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		blocked, ok := g.await(ctx, jobDrill, func(string) { cancel() })
		assert.False(t, ok)
		assert.Empty(t, blocked, "ended by its context, not by another job")
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled drill still waits")
	}
	blocked, ok = g.enter(jobDrill)
	assert.False(t, ok)
	assert.Equal(t, "a backup is running", blocked, "the backup still holds the gate, no drill waits")
	g.leave()
	_, ok = g.enter(jobDrill)
	assert.True(t, ok, "the gate is free")
}
