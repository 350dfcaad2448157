package loadtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Worker is one stream of requests in a Traffic: Do sends one request and
// returns an error when it failed from the client's point of view (a
// transport error, or a status the caller did not expect), then the worker
// waits Every before the next. n counts the worker's requests from 0, for
// requests that must differ (a new record per write).
type Worker struct {
	Name  string
	Every time.Duration
	Do    func(ctx context.Context, n int) error
}

// Tally is what one worker saw.
type Tally struct {
	Name         string
	Sent, Failed int
	P50, P99     time.Duration
	// Failures are the first few failures, with when they happened.
	Failures []string
	// FirstFailure and LastFailure bound the failures (zero when none).
	FirstFailure, LastFailure time.Time
}

// String is one line of a report: name, sent, failed and latencies.
func (t Tally) String() string {
	return fmt.Sprintf("%s: %d sent, %d failed, p50 %s, p99 %s", t.Name, t.Sent, t.Failed,
		t.P50.Round(10*time.Microsecond), t.P99.Round(10*time.Microsecond))
}

// maxFailuresKept bounds a Tally's Failures.
const maxFailuresKept = 10

// Traffic keeps a running stack busy while something happens to it (a
// deployment, a database restart) and counts what failed. It is bounded
// by construction: each worker has one request in flight and paces itself,
// so it measures availability, not capacity.
type Traffic struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	tally  []*tallying
}

type tallying struct {
	Tally
	latencies []time.Duration
}

// StartTraffic starts the workers; Stop ends them and returns their
// tallies.
func StartTraffic(ctx context.Context, workers ...Worker) *Traffic {
	ctx, cancel := context.WithCancel(ctx)
	tr := &Traffic{cancel: cancel}
	for _, w := range workers {
		t := &tallying{Tally: Tally{Name: w.Name}}
		tr.tally = append(tr.tally, t)
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			tr.run(ctx, w, t)
		}()
	}
	return tr
}

func (tr *Traffic) run(ctx context.Context, w Worker, t *tallying) {
	pace := time.NewTicker(max(w.Every, time.Millisecond))
	defer pace.Stop()
	for n := 0; ; n++ {
		start := time.Now()
		err := w.Do(ctx, n)
		took := time.Since(start)
		if ctx.Err() != nil {
			return // the request was cut short by Stop: it counts for nothing
		}
		tr.mu.Lock()
		t.Sent++
		t.latencies = append(t.latencies, took)
		if err != nil {
			t.Failed++
			if t.FirstFailure.IsZero() {
				t.FirstFailure = start
			}
			t.LastFailure = start
			if len(t.Failures) < maxFailuresKept {
				t.Failures = append(t.Failures, start.UTC().Format("15:04:05.000")+" "+err.Error())
			}
		}
		tr.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
	}
}

// Snapshot returns the tallies so far, without stopping.
func (tr *Traffic) Snapshot() []Tally {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make([]Tally, 0, len(tr.tally))
	for _, t := range tr.tally {
		s := t.Tally
		s.Failures = slices.Clone(t.Failures)
		sorted := slices.Clone(t.latencies)
		slices.Sort(sorted)
		s.P50, s.P99 = percentile(sorted, 0.50), percentile(sorted, 0.99)
		out = append(out, s)
	}
	return out
}

// Stop ends the workers (a request in flight is abandoned and not
// counted) and returns the tallies.
func (tr *Traffic) Stop() []Tally {
	tr.cancel()
	tr.wg.Wait()
	return tr.Snapshot()
}

// percentile of sorted durations (nearest rank); zero for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Totals adds tallies up: every request sent and failed.
func Totals(ts []Tally) (sent, failed int) {
	for _, t := range ts {
		sent += t.Sent
		failed += t.Failed
	}
	return sent, failed
}
