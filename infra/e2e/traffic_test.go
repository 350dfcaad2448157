package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/driver"
	"github.com/nbms-deploy/nbms/infra/loadtest"
)

// Paced so the traffic stays inside the app's limits for one client (the
// whole run comes from one address): the public reads are the edge cache's
// but for one a second (the public API allows 120 a minute per address),
// and the writes stay under the per-user API limit (600 a minute).
const (
	readEvery  = 20 * time.Millisecond
	writeEvery = 250 * time.Millisecond
)

// trafficFigure is what a scenario's traffic saw, for the closing note.
// P99Millis is the p99 of the slowest stream (the writes, as a rule).
type trafficFigure struct {
	Sent      int      `json:"sent"`
	Failed    int      `json:"failed"`
	P99Millis float64  `json:"p99Ms"`
	Streams   []string `json:"streams"`
	Failures  []string `json:"failures,omitempty"`
	// Retried are writes retried once because nginx closed the reused
	// keep-alive connection they were sent on (see startTraffic); each
	// retry succeeded, so none is in Failed.
	Retried []string `json:"retried,omitempty"`
}

// startTraffic keeps the deployed stack busy, from the outside and through
// nginx, with public reads (three streams) and logged-in writes (one
// stream creating an unpublished indicator per request) until the returned
// stop, which records what the scenario's traffic saw under label.
func (s *stack) startTraffic(label string, session *http.Cookie) (stop func() trafficFigure) {
	// The writes' codes carry the label; the app takes 32 characters.
	if code := fmt.Sprintf("LOAD-%s-99999", label); len(code) > 32 {
		s.t.Fatalf("traffic label %q is too long: %s is over the 32 characters of an indicator code", label, code)
	}
	auth := s.writeHeader(session)
	read := func(ctx context.Context, _ int) error {
		return s.expect(ctx, "GET", "/api/public/indicators?limit=20", "", nil, http.StatusOK)
	}
	// A graceful reload of nginx (a switch) closes the old workers' idle
	// keep-alive connections; a request the client sent on one in that
	// instant gets EOF with no answer, and nginx never read it. HTTP
	// clients retry that case (RFC 9112, 9.3.1), browsers included, and
	// Go's client does for idempotent requests. A write is retried here
	// once, only then, and the retry must be a 201: its code is unique, so
	// a first attempt that had reached the app would make it a 409. A
	// retried write is recorded, not hidden; any other error is a failure.
	var mu sync.Mutex
	var retried []string
	write := func(ctx context.Context, n int) error {
		body := fmt.Sprintf(`{"code":"LOAD-%s-%d","title":"Written during %s","unit":"%%","published":false}`, strings.ToUpper(label), n, label)
		var reused bool
		traced := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		err := s.expect(traced, "POST", "/api/indicators", body, auth, http.StatusCreated)
		if err == nil || !reused || !errors.Is(err, io.EOF) {
			return err
		}
		if retry := s.expect(ctx, "POST", "/api/indicators", body, auth, http.StatusCreated); retry != nil {
			return fmt.Errorf("%w; the retry: %w", err, retry)
		}
		mu.Lock()
		retried = append(retried, time.Now().Format("15:04:05.000")+" "+err.Error())
		mu.Unlock()
		return nil
	}
	tr := loadtest.StartTraffic(context.Background(),
		loadtest.Worker{Name: "public reads 1", Every: readEvery, Do: read},
		loadtest.Worker{Name: "public reads 2", Every: readEvery, Do: read},
		loadtest.Worker{Name: "public reads 3", Every: readEvery, Do: read},
		loadtest.Worker{Name: "logged-in writes", Every: writeEvery, Do: write},
	)
	return func() trafficFigure {
		tallies := tr.Stop()
		var f trafficFigure
		f.Sent, f.Failed = loadtest.Totals(tallies)
		for _, t := range tallies {
			f.Streams = append(f.Streams, t.String())
			f.P99Millis = max(f.P99Millis, float64(t.P99.Microseconds())/1000)
			f.Failures = append(f.Failures, t.Failures...)
		}
		mu.Lock()
		f.Retried = slices.Clone(retried)
		mu.Unlock()
		s.figures.Traffic[label] = f
		s.t.Logf("traffic during %s: %d sent, %d failed, %d writes retried after a closed keep-alive connection %v, p99 %.1f ms\n  %s",
			label, f.Sent, f.Failed, len(f.Retried), f.Retried, f.P99Millis, strings.Join(f.Streams, "\n  "))
		return f
	}
}

// runWithTraffic runs one driver command (s.run, recorded under runLabel)
// while startTraffic keeps the stack busy (recorded under trafficLabel),
// and returns what each saw.
func (s *stack) runWithTraffic(trafficLabel, runLabel string, cmd driver.Command, stackFile string, session *http.Cookie) (*driver.Result, trafficFigure, error) {
	stopTraffic := s.startTraffic(trafficLabel, session)
	res, err := s.run(runLabel, cmd, stackFile)
	return res, stopTraffic(), err
}

// expect sends one request through nginx and fails unless the answer has
// the wanted status. It is safe to call from any goroutine.
func (s *stack) expect(ctx context.Context, method, path, body string, header http.Header, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, answer, err := s.send(ctx, method, path, strings.NewReader(body), header)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(answer[:min(len(answer), 300)])))
	}
	return nil
}

// newVersionImages are the resources a new app version changes besides
// the release itself: the app image, and the backup scheduler's image that
// copies its binary, and so the backup scheduler's container. The
// database's image does not change: an app release never restarts
// PostgreSQL.
var newVersionImages = []string{"app-image", "backup-image", conventions.RoleBackup}

// liveRelease is the release nginx sends to; the test fails without one.
func (s *stack) liveRelease(t *testing.T) string {
	t.Helper()
	release, err := liveRelease()
	require.NoError(t, err)
	return release
}

// imagesSetting is the stack's images setting: the local base image and
// an app version label ("" for none).
func (s *stack) imagesSetting(version string) string {
	if version == "" {
		return fmt.Sprintf(`{"base": %q}`, baseImage)
	}
	return fmt.Sprintf(`{"base": %q, "appVersion": %q}`, baseImage, version)
}

// checkSwitched checks a blue/green update from the outside and returns the
// new live release: no request of the traffic failed; nginx sends to a new
// release; the update created its containers (one-shots, server, switch),
// changed the extra resources and removed the old release's containers,
// and nothing else (nginx was reloaded, not replaced); the old release's
// server is gone. It records how long the switch took (its readiness check
// included).
func (s *stack) checkSwitched(t *testing.T, label string, res *driver.Result, traffic trafficFigure, old string, extra []string, why string) string {
	t.Helper()
	assert.Positive(t, traffic.Sent, "the traffic ran through the update")
	assert.Zero(t, traffic.Failed, "no request failed: %v", traffic.Failures)
	next := s.liveRelease(t)
	require.NotEqual(t, old, next, "nginx sends to a new release")
	want := slices.Clone(extra)
	// The release's containers and its secrets volume and holder (one
	// name for both).
	for _, role := range append(slices.Clone(conventions.ReleaseRoles), "secrets-app") {
		want = append(want, deploy.Instance(role, next), deploy.Instance(role, old))
	}
	assert.ElementsMatch(t, want, changedResources(res), "%s:%s", why, describeChanges(res))
	_, err := dockerErr("inspect", stackName+"-"+deploy.Instance(conventions.RoleApp, old))
	assert.Error(t, err, "the old release was removed after the switch")
	logs, err := exec.Command("docker", "logs", container(conventions.RoleProxy)).CombinedOutput()
	require.NoError(t, err)
	assert.Contains(t, string(logs), "nbms-proxy: switched upstream to release "+next, "nginx reloaded onto the new release")

	times := strings.Fields(docker(t, "inspect", "--format", "{{.State.StartedAt}} {{.State.FinishedAt}}", container(conventions.RoleSwitch)))
	require.Len(t, times, 2)
	started, err1 := time.Parse(time.RFC3339Nano, times[0])
	finished, err2 := time.Parse(time.RFC3339Nano, times[1])
	require.NoError(t, errors.Join(err1, err2))
	s.figures.SwitchSeconds[label] = round1(finished.Sub(started).Seconds())
	t.Logf("%s: release %s -> %s, the switch took %s (readiness check and reload)", label, old, next, finished.Sub(started).Round(time.Millisecond))
	return next
}

// cutOffNewRelease waits, in the background, for an app container of
// another release than live to appear and disconnects it from the
// internal network (PostgreSQL, Redis) at once: a release that starts and
// stays alive but never becomes ready. The returned function stops waiting
// and names the container it cut off.
func cutOffNewRelease(live string) func() (string, error) {
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		name string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		for ctx.Err() == nil {
			out, _ := dockerErr("ps", "--filter", labelFilter, "--filter", "label="+conventions.LabelRole+"="+conventions.RoleApp,
				"--format", `{{.Names}} {{.Label "`+conventions.LabelRelease+`"}}`)
			for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[1] != live {
					_, err := dockerErr("network", "disconnect", conventions.InternalNetwork(stackName), f[0])
					done <- result{f[0], err}
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- result{err: errors.New("no new release appeared")}
	}()
	return func() (string, error) {
		cancel()
		r := <-done
		return r.name, r.err
	}
}
