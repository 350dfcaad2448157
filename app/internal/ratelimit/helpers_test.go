package ratelimit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/cache"
	"github.com/nbms-deploy/nbms/app/internal/ratelimit"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// redisClient returns a client of the real test Redis (or of addr, e.g. a
// forwarder), built the way the app builds it.
func redisClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	rdb, err := cache.Open(context.Background(), "redis://"+addr+"/0", cache.Options{})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// policyName returns a name no other test (or earlier run) uses, and
// deletes the policy's keys from Redis when the test ends.
func policyName(tb testing.TB, label string) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test-" + label + "-" + hex.EncodeToString(b[:])
	direct := redisClient(tb, testsupport.RedisAddr())
	tb.Cleanup(func() {
		ctx := context.Background()
		keys, err := redisKeys(ctx, direct, name)
		if err == nil && len(keys) > 0 {
			_ = direct.Del(ctx, keys...).Err()
		}
	})
	return name
}

// redisKeys lists the Redis keys of a policy.
func redisKeys(ctx context.Context, rdb *redis.Client, policy string) ([]string, error) {
	var keys []string
	iter := rdb.Scan(ctx, 0, "rate:nbms:rl:"+policy+":*", 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

func newLimiter(tb testing.TB, rdb *redis.Client, logger *slog.Logger, policies ...ratelimit.Policy) *ratelimit.Limiter {
	tb.Helper()
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l, err := ratelimit.New(rdb, logger, policies...)
	require.NoError(tb, err)
	return l
}

func perMinute(n int) config.Rate { return config.Rate{Count: n, Period: time.Minute} }

// ok is the handler behind every limiter in these tests.
var ok = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	_, _ = io.WriteString(w, "ok")
})

// headerKey keys requests by an X-Test-Key header; absent means unlimited.
func headerKey(r *http.Request) (string, bool) {
	k := r.Header.Get("X-Test-Key")
	return k, k != ""
}

// serve runs one request through h with the given peer and headers.
func serve(h http.Handler, remote string, header http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/api/public/indicators", nil)
	r.RemoteAddr = remote
	for k, vs := range header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// countLines counts log lines containing msg.
func countLines(log, msg string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, msg) {
			n++
		}
	}
	return n
}
