package backup

import (
	"context"
	"sync"
)

// gate lets one job of the scheduler run at a time: a backup run (every
// repository of it) or a restore drill.
//
// A backup that finds another job running, or a drill waiting, is
// skipped, not queued: a queued backup would start late and collide with
// the next scheduled one, and the next one comes within a day. A drill
// that finds a backup running waits for it instead (and backups skip
// while it waits): drills are weekly, and one skipped for a long backup
// would leave the backups unproven for two weeks. A drill that finds
// another drill running or waiting is skipped.
type gate struct {
	mu      sync.Mutex
	running string        // the job running, "" when none
	waiting string        // the job waiting for the gate, "" when none
	free    chan struct{} // closed by the leave that frees the gate for the waiting job
}

// Jobs of the gate.
const (
	jobBackup = "backup"
	jobDrill  = "restore drill"
)

// enter starts job now, or reports why it cannot ("a backup is running",
// "a restore drill is waiting").
func (g *gate) enter(job string) (blocked string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.blocker(job); b != "" {
		return b, false
	}
	g.running = job
	return "", true
}

// await starts job once the job running has left, waiting for it, after
// calling waiting with that job's name. blocked says why job did not
// start: another job of its kind is running, or any job is waiting; it is
// "" when ctx ended while job waited.
func (g *gate) await(ctx context.Context, job string, waiting func(running string)) (blocked string, ok bool) {
	g.mu.Lock()
	if g.running == job || g.waiting != "" {
		defer g.mu.Unlock()
		return g.blocker(job), false
	}
	if g.running == "" {
		g.running = job
		g.mu.Unlock()
		return "", true
	}
	g.waiting, g.free = job, make(chan struct{})
	running, free := g.running, g.free
	g.mu.Unlock()
	waiting(running)
	select {
	case <-free: // leave handed the gate over: g.running is job
		return "", true
	case <-ctx.Done():
		g.mu.Lock()
		defer g.mu.Unlock()
		select {
		case <-free: // handed over as ctx ended: give it back
			g.running = ""
		default:
		}
		g.waiting, g.free = "", nil
		return "", false
	}
}

// blocker is why job cannot start now, "" when it can. Call with mu held.
func (g *gate) blocker(job string) string {
	switch {
	case g.running == job:
		return "another " + job + " is running"
	case g.waiting == job:
		return "another " + job + " is waiting"
	case g.running != "":
		return "a " + g.running + " is running"
	case g.waiting != "":
		return "a " + g.waiting + " is waiting"
	}
	return ""
}

// leave ends the running job, handing the gate to the waiting one.
func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running = ""
	if g.waiting != "" {
		g.running, g.waiting = g.waiting, ""
		close(g.free)
		g.free = nil
	}
}

// skipped is the log message of job skipped, blocked saying why: "backup
// skipped: another backup is running".
func skipped(job, blocked string) string {
	return job + " skipped: " + blocked
}
