package api_test

// A load benchmark of GET /api/public/indicators on loopback, through the
// full middleware chain, against 1,000 published indicators in the real
// PostgreSQL. Each benchmark iteration is one request; the requests are
// shared among NBMS_LOAD_CLIENTS concurrent clients (default 16), so a fixed
// count is chosen with -benchtime:
//
//	go test -run '^$' -bench PublicIndicatorsLoad -benchtime 20000x ./app/internal/api
//
// It reports req/s and the p50/p99 latency in milliseconds. -run '^$'
// keeps the tests from adding rows to the shared database first.
//
// Variants compare the same load with extra middleware: each runs with its
// inner middleware in the position of the session layer (after the proxy,
// CSRF and body-limit layers, so the client IP is already resolved), which
// is where a rate limiter sits. Add the limiter as a second variant.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/api"
	"github.com/nbms-deploy/nbms/app/internal/cache"
	"github.com/nbms-deploy/nbms/app/internal/ratelimit"
	"github.com/nbms-deploy/nbms/internal/testsupport"
	"github.com/stretchr/testify/require"
)

type loadVariant struct {
	name  string
	inner func(http.Handler) http.Handler // nil: the chain as it is
}

func loadVariants(b *testing.B) []loadVariant {
	rdb, err := cache.Open(context.Background(), testsupport.RedisURL(), cache.Options{})
	require.NoError(b, err)
	b.Cleanup(func() { rdb.Close() })
	// A rate high enough that nothing is refused: the variant measures what
	// asking Redis costs on every request, not what refusing saves.
	policy := ratelimit.Policy{Name: "load-public-" + strconv.FormatInt(time.Now().UnixNano(), 36), Rate: config.Rate{Count: 1 << 30, Period: time.Minute}, OnRedisError: ratelimit.FailLocal}
	limiter, err := ratelimit.New(rdb, slog.New(slog.NewTextHandler(io.Discard, nil)), policy)
	require.NoError(b, err)
	return []loadVariant{
		{name: "ratelimit-off"},
		{name: "ratelimit-on", inner: limiter.Middleware(policy.Name, ratelimit.ClientIPKey)},
	}
}

const loadIndicators = 1000

var seedLoadOnce sync.Once

func seedLoadIndicators(b *testing.B) {
	seedLoadOnce.Do(func() {
		_, err := shared.pool.Exec(context.Background(),
			`INSERT INTO indicators (code, title, description, unit, framework_target, published)
			 SELECT 'LOAD-' || lpad(n::text, 4, '0'), 'Load indicator ' || n, 'Seeded for the load benchmark',
			        '%', 'GBF Target ' || (n % 23 + 1), true
			 FROM generate_series(1, $1) AS n`, loadIndicators)
		require.NoError(b, err)
	})
}

func BenchmarkPublicIndicatorsLoad(b *testing.B) {
	seedLoadIndicators(b)
	clients := 16
	if s := os.Getenv("NBMS_LOAD_CLIENTS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(b, err, "NBMS_LOAD_CLIENTS")
		clients = n
	}
	for _, v := range loadVariants(b) {
		b.Run(fmt.Sprintf("%s/clients=%d", v.name, clients), func(b *testing.B) {
			runLoad(b, newEnv(b, envOptions{inner: v.inner}), clients)
		})
	}
	// The same handler without the hardening chain (no headers, proxy
	// rules, hosts, HTTPS rule, CSRF, CORS, body limit, access log, rate
	// limit): what the chain costs is the ratio of the two.
	b.Run(fmt.Sprintf("no-chain/clients=%d", clients), func(b *testing.B) {
		mux := http.NewServeMux()
		api.Mount(mux, api.Deps{Store: shared.store, MediaRoot: b.TempDir(), MaxUploadBytes: 1 << 20,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		srv := httptest.NewServer(mux)
		b.Cleanup(srv.Close)
		runLoad(b, &env{t: b, url: srv.URL}, clients)
	})
}

func runLoad(b *testing.B, e *env, clients int) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	defer client.CloseIdleConnections()
	send := func() (time.Duration, error) {
		req, err := http.NewRequest(http.MethodGet, e.url+"/api/public/indicators", nil)
		if err != nil {
			return 0, err
		}
		req.Host = publicHost
		req.Header.Set("X-Forwarded-Proto", "https")
		start := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %d", res.StatusCode)
		}
		return time.Since(start), err
	}
	// Warm the connections and the database's caches outside the clock.
	for range clients {
		_, err := send()
		require.NoError(b, err)
	}

	var (
		next      atomic.Int64
		failures  atomic.Int64
		latencies = make([][]time.Duration, clients)
		wg        sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				d, err := send()
				if err != nil {
					failures.Add(1)
					continue
				}
				latencies[c] = append(latencies[c], d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	require.Zero(b, failures.Load(), "every request must succeed")
	all := slices.Concat(latencies...)
	slices.Sort(all)
	quantile := func(q float64) float64 {
		return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(quantile(0.50), "p50-ms")
	b.ReportMetric(quantile(0.99), "p99-ms")
}
