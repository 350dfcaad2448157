// Package health serves the liveness (/healthz) and readiness (/readyz)
// endpoints probed by the orchestrator.
//
// Liveness answers from the process alone: a failing liveness probe restarts
// the container, and restarting every replica because the database blinked
// would turn an outage into a reconnect storm. Readiness runs the dependency
// checks: a failing readiness probe only takes the replica out of the load
// balancer until the checks pass again.
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
}

// Health holds the readiness checks and the draining flag.
type Health struct {
	checks   []Checker
	timeout  time.Duration
	logger   *slog.Logger
	draining atomic.Bool
}

// New returns a Health for o. It panics on a nil checker, an empty name or
// a duplicate name: those are wiring mistakes that would otherwise hide a
// check from the readiness body.
func New(o Options) *Health {
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
// draining.
func (h *Health) Readiness() http.Handler {
	return onlyGetOrHead(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.draining.Load() {
			writeJSON(w, http.StatusServiceUnavailable, report{Status: statusFail, Reason: "draining"})
			return
		}
		rep := h.run(r.Context())
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
	// A cached "pass" would hide an outage from the next probe.
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
