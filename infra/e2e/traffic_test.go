package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

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
}

// startTraffic keeps the deployed stack busy, from the outside and through
// nginx, with public reads (three streams) and logged-in writes (one
// stream creating an unpublished indicator per request) until the returned
// stop, which records what the scenario's traffic saw under label.
func (s *stack) startTraffic(label string, session *http.Cookie) (stop func() trafficFigure) {
	auth := s.writeHeader(session)
	read := func(ctx context.Context, _ int) error {
		return s.expect(ctx, "GET", "/api/public/indicators?limit=20", "", nil, http.StatusOK)
	}
	write := func(ctx context.Context, n int) error {
		body := fmt.Sprintf(`{"code":"LOAD-%s-%d","title":"Written during %s","unit":"%%","published":false}`, strings.ToUpper(label), n, label)
		return s.expect(ctx, "POST", "/api/indicators", body, auth, http.StatusCreated)
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
		s.figures.Traffic[label] = f
		s.t.Logf("traffic during %s: %d sent, %d failed, p99 %.1f ms\n  %s", label, f.Sent, f.Failed, f.P99Millis, strings.Join(f.Streams, "\n  "))
		return f
	}
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
