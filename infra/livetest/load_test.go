package livetest

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/loadtest"
)

// TestEdgeLoad puts the public indicator list under load with wrk, as
// `make loadtest` does for real (NBMS_LOAD_DURATION=15s, NBMS_LOAD_RUNS=3):
// through nginx over TLS, straight to the app, and to a bare net/http
// server serving the bytes the app answered, in one run, against 1,000
// published indicators in the real PostgreSQL. The suite's run is short
// and asserts correctness only (every answer a 200, no socket error, the
// baseline serves what the app serves); the figures are reported, never
// asserted, in the test log and bin/reports/loadtest/report.txt.
func TestEdgeLoad(t *testing.T) {
	opts := loadtest.Options{
		Connections: fromEnv(t, "NBMS_LOAD_CONNECTIONS", 32, strconv.Atoi), Threads: 2,
		Duration: fromEnv(t, "NBMS_LOAD_DURATION", 2*time.Second, time.ParseDuration),
		Warmup:   fromEnv(t, "NBMS_LOAD_WARMUP", time.Second, time.ParseDuration),
		Runs:     fromEnv(t, "NBMS_LOAD_RUNS", 1, strconv.Atoi),
	}
	// The public API's per-client limit (120/min by default) would answer
	// 429 to one client's load: this measures serving, not refusing. The
	// limiter still asks Redis on every request.
	s := startSite(t, map[string]string{"RATE_LIMIT_PUBLIC_API": "1000000000/1m"})

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.databaseURL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, loadtest.SeedIndicatorsSQL, loadtest.Indicators)
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	edge := loadtest.Target{Name: "nginx TLS", URL: s.HTTPSURL(loadtest.Path)}
	app := loadtest.Target{Name: "app", URL: s.appURL + loadtest.Path,
		Header: http.Header{"Host": {"localhost"}, "X-Forwarded-Proto": {"https"}}}
	body, header, err := loadtest.Fetch(ctx, s.Client, edge)
	require.NoError(t, err)
	require.True(t, bytes.Contains(body, []byte(`"code":"LOAD-0001"`)), "the seeded indicators are listed: %.200s", body)
	appBody, _, err := loadtest.Fetch(ctx, http.DefaultClient, app)
	require.NoError(t, err)
	require.Equal(t, string(appBody), string(body), "nginx passes the app's answer through unchanged")
	bareURL, stop, err := loadtest.Bare(body, header)
	require.NoError(t, err)
	defer stop()
	bare := loadtest.Target{Name: "bare net/http", URL: bareURL + loadtest.Path}

	// The edge's own ceiling on this machine: the cheapest proxied answer.
	health := loadtest.Target{Name: "nginx TLS /healthz", URL: s.HTTPSURL("/healthz")}

	ms, err := loadtest.Run(ctx, opts, edge, app, bare, health)
	require.NoError(t, err)
	for _, m := range ms {
		assert.Zero(t, m.Median.Non2xx, "%s: every answer a 200", m.Target.Name)
		assert.Zero(t, m.Median.Errors, "%s: no socket error", m.Target.Name)
		assert.Positive(t, m.Median.Requests, m.Target.Name)
	}

	var report bytes.Buffer
	require.NoError(t, loadtest.Report(&report, opts, bare.Name, ms))
	report.WriteString("app RSS after the runs: " + rss(t, s.appPID) + "\n")
	t.Logf("GET %s (and /healthz), %d published indicators\n%s", loadtest.Path, loadtest.Indicators, report.String())
	dir := filepath.Join("..", "..", "bin", "reports", "loadtest")
	if os.MkdirAll(dir, 0o755) == nil {
		_ = os.WriteFile(filepath.Join(dir, "report.txt"), report.Bytes(), 0o644)
	}
}

// rss is a process's resident set (VmRSS) as /proc reports it.
func rss(t *testing.T, pid int) string {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			require.NoError(t, err)
			return strconv.FormatFloat(float64(kb)/1024, 'f', 1, 64) + " MiB"
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return ""
}

// fromEnv is the variable's value parsed, or fallback when it is unset.
func fromEnv[T any](t *testing.T, name string, fallback T, parse func(string) (T, error)) T {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return fallback
	}
	parsed, err := parse(v)
	require.NoError(t, err, name)
	return parsed
}
