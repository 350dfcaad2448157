package backup

import "sync"

// gate lets one job of the scheduler run at a time: a backup run (every
// repository of it) or a restore drill. A job that finds another running
// is skipped, not queued: a queued backup would start late and collide
// with the next scheduled one.
type gate struct {
	mu      sync.Mutex
	running string // the job running, "" when none
}

// Jobs of the gate.
const (
	jobBackup = "backup"
	jobDrill  = "restore drill"
)

// enter starts job, or reports the job already running.
func (g *gate) enter(job string) (running string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != "" {
		return g.running, false
	}
	g.running = job
	return "", true
}

func (g *gate) leave() {
	g.mu.Lock()
	g.running = ""
	g.mu.Unlock()
}

// skipped is the log message of job skipped while running runs:
// "backup skipped: another backup is running".
func skipped(job, running string) string {
	if running == job {
		return job + " skipped: another " + running + " is running"
	}
	return job + " skipped: a " + running + " is running"
}
