// Package health serves the liveness (/healthz) and readiness (/readyz)
// endpoints probed by the orchestrator.
//
// Liveness answers from the process alone: a failing liveness probe restarts
// the container, and restarting every replica because the database blinked
// would turn an outage into a reconnect storm. Readiness runs the dependency
// checks: a failing readiness probe only takes the replica out of the load
// balancer until the checks pass again.
//
// Readiness runs are shared: concurrent requests wait for the one run in
// flight instead of each pinging every dependency (under load that alone
// exhausted the database pool and turned /readyz into 503 on healthy
// replicas), and a pass is reused for Options.CacheFor. A fail is never
// reused, so an outage is reported at most CacheFor late and a recovery at
// once.
//
// Bodies follow draft-inadarei-api-health-check (application/health+json,
// status pass|fail) and carry no internals: a failing check says only
// "timeout" or "unavailable"; the underlying error goes to the log.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// ContentType is the media type of liveness and readiness bodies.
const ContentType = "application/health+json"

// DefaultTimeout is the per-check timeout when Options.Timeout is zero. Keep
// the probe's timeoutSeconds above it, so a slow dependency yields a 503 with
// the failing check named instead of a probe timeout that says nothing.
const DefaultTimeout = time.Second

// DefaultCacheFor is how long a pass is reused when Options.CacheFor is zero.
// One second absorbs any burst of probes and proxied requests, and is not
// longer than the gap between the deploy probes' and the switch's
// confirmations (1 s), so each of them still gets a run of its own.
const DefaultCacheFor = time.Second

// MaxCacheFor bounds Options.CacheFor. The rule it enforces: CacheFor must
// be shorter than the period of every probe that reads /readyz (Docker's
// HEALTHCHECK runs every 10 s), otherwise a probe could be answered from
// the run that answered the previous probe and an outage would be hidden
// for a whole period. Half the shortest period keeps a margin.
const MaxCacheFor = 5 * time.Second

// Checker is one readiness dependency, e.g. the database or the cache.
type Checker interface {
	// Name is the key of the check in the readiness body; it must be unique.
	Name() string
	// Check returns nil when the dependency can serve requests. It must
	// return promptly once ctx is done.
	Check(ctx context.Context) error
}

// Options configures New.
type Options struct {
	Checks []Checker
	// Timeout bounds each check; zero means DefaultTimeout.
	Timeout time.Duration
	// Logger receives the full error of each failing check; nil means
	// slog.Default().
	Logger *slog.Logger
	// CacheFor is how long a passing result answers later requests, counted
	// from the start of the run that produced it, so the answer is never
	// older than CacheFor. Zero means DefaultCacheFor; a negative value turns
	// reuse off (concurrent requests still share a run). Only passes are
	// reused: caching a fail would prolong a blip into CacheFor of 503s and
	// delay the recovery, while a reused pass delays an outage by at most
	// CacheFor, less than one probe period (see MaxCacheFor; New panics
	// above it).
	CacheFor time.Duration
}

// Health holds the readiness checks and the draining flag.
type Health struct {
	checks   []Checker
	timeout  time.Duration
	cacheFor time.Duration // 0: no reuse
	logger   *slog.Logger
	draining atomic.Bool

	mu          sync.Mutex
	inflight    *flight   // the run requests wait for, nil when none
	cached      report    // the last pass, valid until cachedUntil
	cachedUntil time.Time // zero when nothing may be reused
}

// flight is one run of the checks, shared by the requests that arrive while
// it is in progress.
type flight struct {
	done chan struct{} // closed once rep is set
	rep  report
}

// New returns a Health for o. It panics on a nil checker, an empty name, a
// duplicate name or a CacheFor above MaxCacheFor: those are wiring mistakes
// that would otherwise hide a check from the readiness body, or an outage
// from the orchestrator.
func New(o Options) *Health {
	if o.CacheFor > MaxCacheFor {
		panic(fmt.Sprintf("health: CacheFor %v exceeds MaxCacheFor %v", o.CacheFor, MaxCacheFor))
	}
	seen := make(map[string]bool, len(o.Checks))
	for _, c := range o.Checks {
		if c == nil {
			panic("health: nil Checker")
		}
		name := c.Name()
		if name == "" || seen[name] {
			panic(fmt.Sprintf("health: check name %q is empty or duplicated", name))
		}
		seen[name] = true
	}
	h := &Health{
		checks:  append([]Checker(nil), o.Checks...),
		timeout: o.Timeout,
		logger:  o.Logger,
	}
	if h.timeout <= 0 {
		h.timeout = DefaultTimeout
	}
	switch {
	case o.CacheFor == 0:
		h.cacheFor = DefaultCacheFor
	case o.CacheFor > 0:
		h.cacheFor = o.CacheFor
	}
	if h.logger == nil {
		h.logger = slog.Default()
	}
	return h
}

// SetDraining makes readiness fail (true) or run its checks again (false).
// The server sets it on SIGTERM and keeps serving until the load balancer
// has noticed, so in-flight and newly routed requests still succeed.
func (h *Health) SetDraining(draining bool) { h.draining.Store(draining) }

// Liveness serves /healthz: 200 {"status":"pass"} whenever the process can
// answer HTTP. It never touches a dependency.
func (h *Health) Liveness() http.Handler {
	return onlyGetOrHead(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, report{Status: statusPass})
	}))
}

// Readiness serves /readyz: it runs every check concurrently, each under
// its own timeout, and answers 200 when all pass, 503 otherwise or while
// draining. Requests share the run in flight and reuse a recent pass (see
// Options.CacheFor).
func (h *Health) Readiness() http.Handler {
	draining := func(w http.ResponseWriter) bool {
		if !h.draining.Load() {
			return false
		}
		writeJSON(w, http.StatusServiceUnavailable, report{Status: statusFail, Reason: "draining"})
		return true
	}
	return onlyGetOrHead(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Before the cache, so draining is seen at once; and again after
		// the wait, in case it began meanwhile.
		if draining(w) {
			return
		}
		rep, err := h.result(r.Context())
		if draining(w) {
			return
		}
		if err != nil {
			// The request ended (client gone, server timeout); the run goes
			// on for the requests sharing it.
			writeJSON(w, http.StatusServiceUnavailable, report{Status: statusFail, Reason: "canceled"})
			return
		}
		code := http.StatusOK
		if rep.Status != statusPass {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, rep)
	}))
}

const (
	statusPass = "pass"
	statusFail = "fail"
)

type report struct {
	Status string                 `json:"status"`
	Reason string                 `json:"reason,omitempty"`
	Checks map[string]checkResult `json:"checks,omitempty"`
}

type checkResult struct {
	Status    string  `json:"status"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

type named struct {
	name   string
	result checkResult
}

// result returns a pass younger than cacheFor, or else the outcome of the
// run in flight, starting one if there is none. It stops waiting when ctx
// ends.
func (h *Health) result(ctx context.Context) (report, error) {
	h.mu.Lock()
	if time.Now().Before(h.cachedUntil) {
		rep := h.cached
		h.mu.Unlock()
		return rep, nil
	}
	f := h.inflight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		h.inflight = f
		go h.fly(f)
	}
	h.mu.Unlock()
	select {
	case <-f.done:
		return f.rep, nil
	case <-ctx.Done():
		return report{}, ctx.Err()
	}
}

// fly runs the checks for f. The run is detached from every request: the
// one that started it may go away, and its cancellation must not fail the
// others. run's own deadline bounds it.
func (h *Health) fly(f *flight) {
	start := time.Now()
	f.rep = h.run(context.Background())
	h.mu.Lock()
	h.inflight = nil
	h.cachedUntil = time.Time{}
	if f.rep.Status == statusPass && h.cacheFor > 0 {
		// Counted from the start: the dependencies may have failed right
		// after their check began.
		h.cached, h.cachedUntil = f.rep, start.Add(h.cacheFor)
	}
	h.mu.Unlock()
	close(f.done)
}

func (h *Health) run(ctx context.Context) report {
	// Buffered so a checker that ignores its context and returns late can
	// still send and exit instead of leaking forever.
	results := make(chan named, len(h.checks))
	for _, c := range h.checks {
		go func() { results <- named{c.Name(), h.runOne(ctx, c)} }()
	}

	rep := report{Status: statusPass, Checks: make(map[string]checkResult, len(h.checks))}
	// The handler stops waiting shortly after the per-check timeout even if a
	// checker does not honour ctx, so the probe itself never hangs.
	deadline := time.NewTimer(h.timeout + h.timeout/10)
	defer deadline.Stop()
	for range h.checks {
		select {
		case n := <-results:
			rep.Checks[n.name] = n.result
		case <-deadline.C:
			for _, c := range h.checks {
				if _, done := rep.Checks[c.Name()]; !done {
					h.logger.Warn("readiness check ignored its deadline", "check", c.Name())
					rep.Checks[c.Name()] = checkResult{Status: statusFail, LatencyMS: ms(h.timeout), Error: "timeout"}
				}
			}
		}
		if len(rep.Checks) == len(h.checks) {
			break
		}
	}
	for _, r := range rep.Checks {
		if r.Status != statusPass {
			rep.Status = statusFail
		}
	}
	return rep
}

func (h *Health) runOne(ctx context.Context, c Checker) (res checkResult) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	start := time.Now()
	defer func() {
		// A panicking checker must fail its check, not kill the process:
		// this goroutine is outside net/http's per-request recovery.
		if p := recover(); p != nil {
			h.logger.Error("readiness check panicked", "check", c.Name(), "panic", p)
			res = checkResult{Status: statusFail, LatencyMS: ms(time.Since(start)), Error: "unavailable"}
		}
	}()
	err := c.Check(ctx)
	res = checkResult{Status: statusPass, LatencyMS: ms(time.Since(start))}
	if err != nil {
		res.Status = statusFail
		res.Error = "unavailable"
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			res.Error = "timeout"
		}
		h.logger.Warn("readiness check failed", "check", c.Name(), "error", err, "latency_ms", res.LatencyMS)
	}
	return res
}

// ms rounds to microseconds so the body stays short but sub-millisecond
// checks do not all read 0.
func ms(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond).Microseconds()) / 1000
}

func writeJSON(w http.ResponseWriter, code int, rep report) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	// A pass cached by a proxy or client would hide an outage for as long
	// as it keeps it; the server's own reuse is bounded by CacheFor.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(rep)
}

func onlyGetOrHead(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			problem.Write(w, http.StatusMethodNotAllowed, "Use GET or HEAD.")
			return
		}
		next.ServeHTTP(w, r)
	})
}
