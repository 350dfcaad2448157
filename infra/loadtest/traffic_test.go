package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every request counts once, as sent and, when it failed, as failed; the
// failures keep their reasons.
func TestTrafficCountsWhatFailed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	get := func(ctx context.Context, url string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	tr := StartTraffic(context.Background(),
		Worker{Name: "every third fails", Every: time.Millisecond, Do: func(ctx context.Context, n int) error {
			if n%3 == 2 {
				return get(ctx, srv.URL+"?fail=1")
			}
			return get(ctx, srv.URL)
		}},
		Worker{Name: "healthy", Every: time.Millisecond, Do: func(ctx context.Context, _ int) error { return get(ctx, srv.URL) }},
	)
	require.Eventually(t, func() bool {
		s := tr.Snapshot()
		return s[0].Sent >= 30 && s[1].Sent >= 30
	}, 10*time.Second, 5*time.Millisecond)
	tallies := tr.Stop()
	require.Len(t, tallies, 2)

	flaky, healthy := tallies[0], tallies[1]
	assert.Equal(t, flaky.Sent/3, flaky.Failed, "requests 2, 5, 8, ... of %d failed", flaky.Sent)
	require.NotEmpty(t, flaky.Failures)
	assert.Len(t, flaky.Failures, min(flaky.Failed, maxFailuresKept))
	assert.Contains(t, flaky.Failures[0], "status 500")
	assert.False(t, flaky.FirstFailure.After(flaky.LastFailure))
	assert.Zero(t, healthy.Failed)
	assert.Empty(t, healthy.Failures)
	assert.True(t, healthy.FirstFailure.IsZero())
	assert.Positive(t, healthy.P99)
	assert.LessOrEqual(t, healthy.P50, healthy.P99)

	sent, failed := Totals(tallies)
	assert.Equal(t, flaky.Sent+healthy.Sent, sent)
	assert.Equal(t, flaky.Failed, failed)

	// Stopped means stopped: nothing is counted afterwards.
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, tallies, tr.Snapshot())
}

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	assert.Zero(t, percentile(nil, 0.99))
	assert.Equal(t, 7*time.Millisecond, percentile(ms(7), 0.5))
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	assert.Equal(t, 50*time.Millisecond, percentile(ms(hundred...), 0.50))
	assert.Equal(t, 99*time.Millisecond, percentile(ms(hundred...), 0.99))
	assert.Equal(t, 100*time.Millisecond, percentile(ms(hundred...), 1))
}
