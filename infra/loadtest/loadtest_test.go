package loadtest

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The reports are what Debian's wrk 4.1.0 printed here.
func TestParse(t *testing.T) {
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		require.NoError(t, err)
		return string(data)
	}
	r, err := Parse(read("ok.txt"))
	require.NoError(t, err)
	assert.Equal(t, Result{RequestsPerSec: 69767.08, P50: 88 * time.Microsecond, P99: 4330 * time.Microsecond, Requests: 76738}, r)

	r, err = Parse(read("non2xx.txt"))
	require.NoError(t, err)
	assert.Equal(t, 62287, r.Non2xx, "every answer was a 503")
	assert.Equal(t, 100*time.Microsecond, r.P50)

	_, err = Parse(read("refused.txt"))
	assert.ErrorContains(t, err, "without Requests/sec")

	r, err = Parse("  Socket errors: connect 2, read 3, write 0, timeout 7\n  Latency Distribution\n     50%    1.02s\n     99%    2.00m\nRequests/sec:     0.50\n")
	require.NoError(t, err)
	assert.Equal(t, Result{RequestsPerSec: 0.5, P50: 1020 * time.Millisecond, P99: 2 * time.Minute, Errors: 12}, r)
}

func TestMedian(t *testing.T) {
	m := median([]Result{
		{RequestsPerSec: 100, P50: 3, P99: 30, Non2xx: 1},
		{RequestsPerSec: 300, P50: 1, P99: 90, Errors: 2},
		{RequestsPerSec: 200, P50: 2, P99: 10},
	})
	assert.Equal(t, Result{RequestsPerSec: 200, P50: 2, P99: 30, Requests: 0, Non2xx: 1, Errors: 2}, m, "each figure's own median; the worst error counts")
}

// The machinery end to end: the bare server answers the bytes it was
// given, and real wrk runs against it and is read back.
func TestBareUnderWrk(t *testing.T) {
	body := []byte(`{"items":[]}`)
	url, stop, err := Bare(body, http.Header{"Content-Type": {"application/json"}})
	require.NoError(t, err)
	defer stop()
	got, h, err := Fetch(context.Background(), http.DefaultClient, Target{URL: url + Path})
	require.NoError(t, err)
	assert.Equal(t, body, got)
	assert.Equal(t, "application/json", h.Get("Content-Type"))

	opts := Options{Connections: 4, Threads: 1, Duration: time.Second, Runs: 1}
	ms, err := Run(context.Background(), opts, Target{Name: "bare", URL: url + Path})
	require.NoError(t, err)
	require.Len(t, ms, 1)
	assert.Positive(t, ms[0].Median.RequestsPerSec)
	assert.Positive(t, ms[0].Median.Requests)
	assert.Zero(t, ms[0].Median.Non2xx)
	assert.Zero(t, ms[0].Median.Errors)

	var out bytes.Buffer
	require.NoError(t, Report(&out, opts, "bare", ms))
	assert.Contains(t, out.String(), "req/s vs bare")
	assert.Contains(t, out.String(), "1.00", "the baseline against itself")
}
