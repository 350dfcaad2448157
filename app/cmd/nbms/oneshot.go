package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
)

// exitTimeout is the status of a one-shot command stopped by
// ONESHOT_TIMEOUT: timeout(1)'s, so an orchestrator and an operator read it
// the same way.
const exitTimeout = 124

// oneShotVar is the env contract variable that bounds a one-shot command.
const oneShotVar = "ONESHOT_TIMEOUT"

// errOneShotTimeout is the cause of a one-shot command's context when
// ONESHOT_TIMEOUT has passed; a SIGTERM cancels it with another.
var errOneShotTimeout = errors.New(oneShotVar + " passed")

// oneShotGrace is how long a one-shot command whose time is up has to stop
// by itself before the process exits without it: long enough for work
// that honours its context to clean up (a cancelled migration's rollback
// and the cancel request to PostgreSQL, bounded by the migrate package's
// connection timeout), short enough not to stretch the limit noticeably.
// A variable for the tests of work that ignores its context.
var oneShotGrace = 15 * time.Second

// runOneShot runs work, the body of the one-shot command name (as typed:
// "migrate up"), under the settings' ONESHOT_TIMEOUT. The deploy waits for
// a one-shot container's exit with no limit of its own, so this is what
// keeps a stuck step from hanging it. When the limit passes, work's context
// ends; runOneShot waits up to oneShotGrace for work to return, then says
// in one line what stopped and which variable to raise, and returns
// exitTimeout whatever work returned (work that does not watch its
// context, a file copy stuck on a hung file system, is abandoned to the
// process's exit).
func runOneShot(ctx context.Context, name string, s *config.Settings, stderr io.Writer, work func(ctx context.Context) int) int {
	ctx, cancel := context.WithTimeoutCause(ctx, s.OneShotTimeout, errOneShotTimeout)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- work(ctx) }()
	select {
	case code := <-done:
		// Work that failed as the limit passed failed because of it.
		if code == exitOK || !timedOut(ctx) {
			return code
		}
	case <-ctx.Done():
		if !timedOut(ctx) {
			return <-done // SIGTERM: work stops by itself, as without a limit
		}
		select {
		case <-done:
		case <-time.After(oneShotGrace):
		}
	}
	fmt.Fprintf(stderr, "nbms %s: stopped: not finished within %s=%s%s; raise %s (the stack's %s.%s) if it needs longer\n",
		name, oneShotVar, s.OneShotTimeout, oneShotAftermath[name], oneShotVar, config.StackEnvKey, oneShotVar)
	return exitTimeout
}

// oneShotAftermath says what a stopped one-shot command left behind, where
// that is not obvious.
var oneShotAftermath = map[string]string{
	"migrate up": " (a migration it had begun was cancelled: what it had not committed was rolled back; `nbms migrate status` lists what is pending)",
}

// timedOut reports whether ctx, a one-shot command's, ended because
// ONESHOT_TIMEOUT passed. The command then leaves the explaining to
// runOneShot.
func timedOut(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errOneShotTimeout)
}
