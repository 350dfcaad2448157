package hooks

import (
	"testing"
	"time"
)

// FullJitter is the production jitter, kept before any test replaces it.
var FullJitter = jitter

// OneLine exposes the body sanitiser to the fuzz target.
var OneLine = oneLine

// SetJitter makes the backoff schedule deterministic for one test. Tests
// that call it must not run in parallel with other Probe tests.
func SetJitter(t testing.TB, f func(ceiling time.Duration) time.Duration) {
	t.Helper()
	old := jitter
	jitter = f
	t.Cleanup(func() { jitter = old })
}
