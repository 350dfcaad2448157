package ratelimit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/proxy"
	"github.com/nbms-deploy/nbms/app/internal/ratelimit"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// The N+1th request in the window is refused with 429, Retry-After and the
// IETF fields; allowed responses count down r and advertise the policy.
func TestMiddlewareRefusesOverLimitAndAdvertises(t *testing.T) {
	name := policyName(t, "http")
	lim := newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil,
		ratelimit.Policy{Name: name, Rate: perMinute(3)})
	srv := httptest.NewServer(lim.Middleware(name, ratelimit.ClientIPKey)(ok))
	defer srv.Close()

	// 3/1m: each request costs 20s of the 60s window.
	steps := []struct {
		status    int
		rateLimit string
		retry     string
	}{
		{http.StatusOK, `"%s";r=2;t=20`, ""},
		{http.StatusOK, `"%s";r=1;t=40`, ""},
		{http.StatusOK, `"%s";r=0;t=60`, ""},
		{http.StatusTooManyRequests, `"%s";r=0;t=20`, "20"},
		{http.StatusTooManyRequests, `"%s";r=0;t=20`, "20"},
	}
	for i, want := range steps {
		resp, err := http.Get(srv.URL)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()

		require.Equal(t, want.status, resp.StatusCode, "request %d", i+1)
		assert.Equal(t, []string{fmt.Sprintf(`"%s";q=3;w=60`, name)}, resp.Header.Values("RateLimit-Policy"), "request %d", i+1)
		assert.Equal(t, []string{fmt.Sprintf(want.rateLimit, name)}, resp.Header.Values("RateLimit"), "request %d", i+1)
		assert.Equal(t, want.retry, resp.Header.Get("Retry-After"), "request %d", i+1)
		if want.status == http.StatusOK {
			assert.Equal(t, "ok", string(body))
			continue
		}
		assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
		var p struct {
			Status int    `json:"status"`
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		require.NoError(t, json.Unmarshal(body, &p))
		assert.Equal(t, http.StatusTooManyRequests, p.Status)
		assert.Equal(t, "Too Many Requests", p.Title)
		assert.Contains(t, p.Detail, "20 seconds")
	}
}

// Two policies on one route each add their own item to both fields.
func TestMiddlewareStacksPolicies(t *testing.T) {
	ipPolicy, userPolicy := policyName(t, "ip"), policyName(t, "user")
	lim := newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil,
		ratelimit.Policy{Name: ipPolicy, Rate: perMinute(10)},
		ratelimit.Policy{Name: userPolicy, Rate: config.Rate{Count: 600, Period: time.Hour}})
	h := lim.Middleware(ipPolicy, ratelimit.ClientIPKey)(lim.Middleware(userPolicy, headerKey)(ok))

	w := serve(h, "198.51.100.1:1000", http.Header{"X-Test-Key": {"user-1"}})

	require.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, []string{
		fmt.Sprintf(`"%s";q=10;w=60`, ipPolicy),
		fmt.Sprintf(`"%s";q=600;w=3600`, userPolicy),
	}, w.Header().Values("RateLimit-Policy"))
	assert.Equal(t, []string{
		fmt.Sprintf(`"%s";r=9;t=6`, ipPolicy),
		fmt.Sprintf(`"%s";r=599;t=6`, userPolicy),
	}, w.Header().Values("RateLimit"))
}

// Each key has its own bucket; a key function answering false leaves the
// request unlimited and unannotated.
func TestSeparateKeysHaveSeparateBuckets(t *testing.T) {
	name := policyName(t, "keys")
	lim := newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil,
		ratelimit.Policy{Name: name, Rate: perMinute(2)})
	h := lim.Middleware(name, headerKey)(ok)

	steps := []struct {
		key    string
		status int
	}{
		{"alice", http.StatusOK},
		{"alice", http.StatusOK},
		{"alice", http.StatusTooManyRequests},
		{"bob", http.StatusOK},
		{"bob", http.StatusOK},
		{"bob", http.StatusTooManyRequests},
		{"Alice", http.StatusOK}, // keys are exact; canonicalising is the caller's job
		{"", http.StatusOK},      // no key: not limited by this policy
		{"", http.StatusOK},
		{"", http.StatusOK},
	}
	for i, s := range steps {
		header := http.Header{}
		if s.key != "" {
			header.Set("X-Test-Key", s.key)
		}
		w := serve(h, "198.51.100.1:1000", header)
		require.Equal(t, s.status, w.Code, "step %d key %q", i+1, s.key)
		if s.key == "" {
			assert.Empty(t, w.Header().Values("RateLimit"), "step %d", i+1)
		}
	}
}

// ClientIPKey takes the trusted-proxy rule's client IP, unmaps IPv4 and
// buckets IPv6 by /64.
func TestClientIPKey(t *testing.T) {
	trusted, err := config.ParseTrustedProxies([]string{"10.0.0.0/8", "fd00::/8"})
	require.NoError(t, err)
	cases := []struct {
		name, remote, xff string
		want              string
		wantOK            bool
	}{
		{"untrusted peer, spoofed XFF ignored", "203.0.113.5:1234", "1.2.3.4", "203.0.113.5", true},
		{"trusted proxy, right-most untrusted hop", "10.0.0.1:1234", "6.6.6.6, 198.51.100.7", "198.51.100.7", true},
		{"trusted proxy chain", "10.0.0.1:1234", "6.6.6.6, 198.51.100.7, 10.0.0.2", "198.51.100.7", true},
		{"IPv6 peer bucketed by /64", "[2001:db8:1:2:3:4:5:6]:443", "", "2001:db8:1:2::/64", true},
		{"IPv6 client via proxy", "[fd00::1]:443", "2001:db8:aa:bb:cc::1", "2001:db8:aa:bb::/64", true},
		{"IPv4-mapped peer is IPv4", "[::ffff:203.0.113.9]:1", "", "203.0.113.9", true},
		{"IPv4-mapped hop is IPv4", "10.0.0.1:1", "::ffff:198.51.100.3", "198.51.100.3", true},
		{"zoned IPv6 loses the zone", "[fe80::1%eth0]:1", "", "fe80::/64", true},
		{"no IP (unix socket)", "@", "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got string
			var gotOK bool
			h := proxy.Forwarded(trusted)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				got, gotOK = ratelimit.ClientIPKey(r)
			}))
			serve(h, c.remote, http.Header{"X-Forwarded-For": {c.xff}})
			assert.Equal(t, c.wantOK, gotOK)
			assert.Equal(t, c.want, got)
		})
	}
}

// A client that is not a trusted proxy cannot pick its bucket with
// X-Forwarded-For; behind a trusted proxy, the right-most untrusted hop is
// the bucket; IPv6 addresses in one /64 share a bucket.
func TestClientBucketsFollowTrustedProxyRule(t *testing.T) {
	trusted, err := config.ParseTrustedProxies([]string{"10.0.0.0/8"})
	require.NoError(t, err)
	type step struct {
		remote, xff string
		status      int
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"spoofed XFF from an untrusted peer does not change the bucket", []step{
			{"203.0.113.5:1000", "1.1.1.1", http.StatusOK},
			{"203.0.113.5:1001", "2.2.2.2", http.StatusOK},
			{"203.0.113.5:1002", "3.3.3.3, 4.4.4.4", http.StatusTooManyRequests},
			{"203.0.113.6:1000", "203.0.113.5", http.StatusOK}, // nor can it take a victim's bucket
		}},
		{"behind a trusted proxy the right-most untrusted hop is the key", []step{
			{"10.0.0.1:1000", "6.6.6.6, 198.51.100.7", http.StatusOK},
			{"10.0.0.2:1000", "7.7.7.7, 198.51.100.7, 10.9.9.9", http.StatusOK},
			{"10.0.0.1:1001", "198.51.100.7", http.StatusTooManyRequests},
			{"10.0.0.1:1002", "198.51.100.7, 198.51.100.8", http.StatusOK},
			{"10.0.0.1:1003", "", http.StatusOK}, // the proxy itself
		}},
		{"IPv6 addresses in one /64 share a bucket, other /64s do not", []step{
			{"[2001:db8:1:2::1]:1000", "", http.StatusOK},
			{"[2001:db8:1:2:ffff:ffff:ffff:fffe]:1000", "", http.StatusOK},
			{"[2001:db8:1:2:abcd::9]:1000", "", http.StatusTooManyRequests},
			{"[2001:db8:1:3::1]:1000", "", http.StatusOK},
			{"[2001:db8:1:3::2]:1000", "", http.StatusOK},
			{"[2001:db8:1:3::3]:1000", "", http.StatusTooManyRequests},
		}},
	}
	rdb := redisClient(t, testsupport.RedisAddr())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := policyName(t, "ip")
			lim := newLimiter(t, rdb, nil, ratelimit.Policy{Name: name, Rate: perMinute(2)})
			h := proxy.Forwarded(trusted)(lim.Middleware(name, ratelimit.ClientIPKey)(ok))
			for i, s := range c.steps {
				header := http.Header{}
				if s.xff != "" {
					header.Set("X-Forwarded-For", s.xff)
				}
				w := serve(h, s.remote, header)
				require.Equal(t, s.status, w.Code, "step %d: %s XFF %q", i+1, s.remote, s.xff)
			}
		})
	}
}

// Check serves a login handler that learns the username from the body:
// refusals carry 429 and the fields, allowed attempts carry no RateLimit
// fields (they would reveal others' attempts on the account).
func TestCheckForLoginHandler(t *testing.T) {
	name := policyName(t, "login-user")
	lim := newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil,
		ratelimit.Policy{Name: name, Rate: config.Rate{Count: 2, Period: 5 * time.Minute}})
	var reached int
	login := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !lim.Check(w, r, name, strings.ToLower(r.PostFormValue("username"))) {
			return
		}
		reached++
		http.Error(w, "wrong password", http.StatusUnauthorized)
	})
	srv := httptest.NewServer(login)
	defer srv.Close()

	steps := []struct {
		user   string
		status int
	}{
		{"Alice", http.StatusUnauthorized},
		{"alice", http.StatusUnauthorized},
		{"ALICE", http.StatusTooManyRequests},
		{"bob", http.StatusUnauthorized},
	}
	for i, s := range steps {
		resp, err := http.PostForm(srv.URL, url.Values{"username": {s.user}})
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, s.status, resp.StatusCode, "step %d", i+1)
		if s.status == http.StatusTooManyRequests {
			assert.Equal(t, "150", resp.Header.Get("Retry-After")) // 5m / 2
			assert.Equal(t, fmt.Sprintf(`"%s";q=2;w=300`, name), resp.Header.Get("RateLimit-Policy"))
			assert.Equal(t, fmt.Sprintf(`"%s";r=0;t=150`, name), resp.Header.Get("RateLimit"))
			assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		} else {
			assert.Empty(t, resp.Header.Values("RateLimit"), "step %d", i+1)
			assert.Empty(t, resp.Header.Values("RateLimit-Policy"), "step %d", i+1)
		}
	}
	assert.Equal(t, 3, reached, "the refused attempt must not reach the password check")
}

// Keys reach Redis namespaced and hashed: a username never appears in it.
func TestRedisKeysAreNamespacedAndHashed(t *testing.T) {
	name := policyName(t, "hash")
	rdb := redisClient(t, testsupport.RedisAddr())
	lim := newLimiter(t, rdb, nil, ratelimit.Policy{Name: name, Rate: perMinute(5)})
	ctx := context.Background()

	for _, key := range []string{"alice@example.org", "x\r\nFLUSHALL\r\n", strings.Repeat("long", 1000)} {
		_, err := lim.Allow(ctx, name, key)
		require.NoError(t, err)
	}

	keys, err := redisKeys(ctx, rdb, name)
	require.NoError(t, err)
	require.Len(t, keys, 3)
	shape := regexp.MustCompile(`^rate:nbms:rl:` + regexp.QuoteMeta(name) + `:[0-9a-f]{64}$`)
	for _, k := range keys {
		assert.Regexp(t, shape, k)
		ttl, err := rdb.TTL(ctx, k).Result()
		require.NoError(t, err)
		assert.Positive(t, ttl, "keys expire on their own")
	}
}

// Allow reports the GCRA state directly, and its errors name the policy.
func TestAllowDecisions(t *testing.T) {
	name := policyName(t, "allow")
	lim := newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil,
		ratelimit.Policy{Name: name, Rate: config.Rate{Count: 4, Period: 2 * time.Minute}, Burst: 2})
	ctx := context.Background()

	cases := []struct {
		allowed   bool
		remaining int
	}{
		{true, 1}, {true, 0}, {false, 0},
	}
	for i, want := range cases {
		d, err := lim.Allow(ctx, name, "k")
		require.NoError(t, err)
		assert.Equal(t, want.allowed, d.Allowed, "call %d", i+1)
		assert.Equal(t, want.remaining, d.Remaining, "call %d", i+1)
		assert.Equal(t, 4, d.Limit)
		assert.False(t, d.Degraded)
		if want.allowed {
			assert.Zero(t, d.RetryAfter)
		} else {
			// Burst 2 spent; the next request is one emission interval away.
			assert.InDelta(t, 30*time.Second, d.RetryAfter, float64(time.Second))
			assert.InDelta(t, 60*time.Second, d.ResetAfter, float64(time.Second))
		}
	}

	_, err := lim.Allow(ctx, "no-such-policy", "k")
	require.ErrorIs(t, err, ratelimit.ErrUnknownPolicy)
}

// Atomicity: 50 concurrent requests against a limit of 10, split over two
// limiters with their own Redis connections (two replicas), allow exactly 10.
func TestConcurrentRequestsAllowExactlyTheLimit(t *testing.T) {
	name := policyName(t, "race")
	policy := ratelimit.Policy{Name: name, Rate: perMinute(10)}
	replicas := []*httptest.Server{
		httptest.NewServer(newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil, policy).Middleware(name, headerKey)(ok)),
		httptest.NewServer(newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil, policy).Middleware(name, headerKey)(ok)),
	}
	for _, s := range replicas {
		defer s.Close()
	}

	var (
		start  = make(chan struct{})
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts = map[int]int{}
	)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, replicas[i%2].URL, nil)
			req.Header.Set("X-Test-Key", "shared")
			<-start
			resp, err := http.DefaultClient.Do(req)
			if !assert.NoError(t, err) {
				return
			}
			_ = resp.Body.Close()
			mu.Lock()
			counts[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()

	assert.Equal(t, map[int]int{http.StatusOK: 10, http.StatusTooManyRequests: 40}, counts)
}

// Redis unreachable under FailClosed: 503 problem+json with Retry-After,
// never 500; one log line for many failures; limiting resumes on Redis
// when it is back.
func TestRedisDownFailClosed(t *testing.T) {
	name := policyName(t, "closed")
	fwd := testsupport.NewForwarder(t, testsupport.RedisAddr())
	var logs testsupport.SyncBuffer
	lim := newLimiter(t, redisClient(t, fwd.Addr()), slog.New(slog.NewTextHandler(&logs, nil)),
		ratelimit.Policy{Name: name, Rate: perMinute(3), OnRedisError: ratelimit.FailClosed})
	srv := httptest.NewServer(lim.Middleware(name, ratelimit.ClientIPKey)(ok))
	defer srv.Close()

	get := func() *http.Response {
		resp, err := http.Get(srv.URL)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}
	require.Equal(t, http.StatusOK, get().StatusCode)

	fwd.Stop()
	require.Equal(t, http.StatusServiceUnavailable, get().StatusCode)
	// After a failure the limiter stops asking Redis for a while, so a
	// refusal costs no dial attempt or timeout (a Redis attempt against the
	// stopped forwarder takes the whole 300ms call deadline).
	for range 5 {
		start := time.Now()
		_, err := lim.Allow(context.Background(), name, "k")
		require.ErrorIs(t, err, ratelimit.ErrUnavailable)
		assert.Less(t, time.Since(start), 250*time.Millisecond)
	}
	for i := range 20 {
		resp := get()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "request %d", i+1)
		assert.Equal(t, "5", resp.Header.Get("Retry-After"))
		assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		assert.Empty(t, resp.Header.Values("RateLimit"))
	}
	log := logs.String()
	assert.Equal(t, 1, countLines(log, "rate limiter cannot reach Redis"), log)
	assert.Contains(t, log, "level=ERROR")
	assert.Contains(t, log, "policy="+name)
	assert.Contains(t, log, "on_redis_error=fail-closed")

	fwd.Restart()
	require.Eventually(t, func() bool { return get().StatusCode == http.StatusOK }, 10*time.Second, 50*time.Millisecond)
	assert.Equal(t, 1, countLines(logs.String(), "rate limiter reaches Redis again"))
	// Back on Redis, whose count survived the outage: 2 of 3 used.
	assert.Equal(t, http.StatusOK, get().StatusCode)
	assert.Equal(t, http.StatusTooManyRequests, get().StatusCode)
}

// Redis unreachable under FailLocal: requests keep being served and are
// still limited in-process; after Redis returns, decisions come from Redis.
func TestRedisDownFailLocal(t *testing.T) {
	name := policyName(t, "local")
	fwd := testsupport.NewForwarder(t, testsupport.RedisAddr())
	var logs testsupport.SyncBuffer
	rdb := redisClient(t, fwd.Addr())
	lim := newLimiter(t, rdb, slog.New(slog.NewTextHandler(&logs, nil)),
		ratelimit.Policy{Name: name, Rate: perMinute(3), OnRedisError: ratelimit.FailLocal})
	h := lim.Middleware(name, ratelimit.ClientIPKey)(ok)
	ctx := context.Background()

	fwd.Stop()
	steps := []struct {
		status    int
		rateLimit string
	}{
		{http.StatusOK, `"%s";r=2;t=20`},
		{http.StatusOK, `"%s";r=1;t=40`},
		{http.StatusOK, `"%s";r=0;t=60`},
		{http.StatusTooManyRequests, `"%s";r=0;t=20`},
	}
	for i, s := range steps {
		w := serve(h, "198.51.100.20:1000", nil)
		require.Equal(t, s.status, w.Code, "request %d", i+1)
		assert.Equal(t, fmt.Sprintf(s.rateLimit, name), w.Header().Get("RateLimit"), "request %d", i+1)
	}
	assert.Equal(t, "20", serve(h, "198.51.100.20:1000", nil).Header().Get("Retry-After"))
	assert.Equal(t, http.StatusOK, serve(h, "198.51.100.21:1000", nil).Code, "other clients keep their own bucket")

	d, err := lim.Allow(ctx, name, "direct")
	require.NoError(t, err, "FailLocal never reports Redis errors")
	assert.True(t, d.Degraded)
	assert.True(t, d.Allowed)
	log := logs.String()
	assert.Equal(t, 1, countLines(log, "rate limiter cannot reach Redis"), log)
	assert.Contains(t, log, "level=WARN")
	assert.Contains(t, log, "on_redis_error=fail-local")

	fwd.Restart()
	require.Eventually(t, func() bool {
		d, err := lim.Allow(ctx, name, "direct")
		return err == nil && !d.Degraded
	}, 10*time.Second, 50*time.Millisecond)
	keys, err := redisKeys(ctx, redisClient(t, testsupport.RedisAddr()), name)
	require.NoError(t, err)
	assert.Len(t, keys, 1, "the recovered decision was counted in Redis")
	// The in-process counts are dropped: Redis starts the client afresh.
	w := serve(h, "198.51.100.20:1000", nil)
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, fmt.Sprintf(`"%s";r=2;t=20`, name), w.Header().Get("RateLimit"))
	assert.Equal(t, 1, countLines(logs.String(), "rate limiter reaches Redis again"))
}

// Under FailClosed, Allow's error wraps ErrUnavailable and the Redis cause.
func TestAllowFailClosedError(t *testing.T) {
	name := policyName(t, "err")
	fwd := testsupport.NewForwarder(t, testsupport.RedisAddr())
	lim := newLimiter(t, redisClient(t, fwd.Addr()), nil, ratelimit.Policy{Name: name, Rate: perMinute(3)})
	fwd.Stop()

	d, err := lim.Allow(context.Background(), name, "k")

	require.ErrorIs(t, err, ratelimit.ErrUnavailable)
	assert.False(t, d.Allowed)
	assert.True(t, d.Degraded)
}

// A nil Limiter (RATE_LIMIT_ENABLED=false) limits nothing.
func TestNilLimiterLimitsNothing(t *testing.T) {
	var lim *ratelimit.Limiter
	h := lim.Middleware("login-ip", ratelimit.ClientIPKey)(ok)
	for range 3 {
		w := serve(h, "198.51.100.1:1", nil)
		assert.Equal(t, http.StatusOK, w.Code)
		assert.Empty(t, w.Header().Values("RateLimit"))
	}
	w := httptest.NewRecorder()
	assert.True(t, lim.Check(w, httptest.NewRequest(http.MethodPost, "/login", nil), "login-user", "alice"))
	d, err := lim.Allow(context.Background(), "login-user", "alice")
	require.NoError(t, err)
	assert.True(t, d.Allowed)
}

func TestNewRejectsBadPolicies(t *testing.T) {
	rdb := redisClient(t, testsupport.RedisAddr())
	good := ratelimit.Policy{Name: "login-ip", Rate: perMinute(10)}
	cases := []struct {
		name     string
		policies []ratelimit.Policy
	}{
		{"empty name", []ratelimit.Policy{{Rate: perMinute(1)}}},
		{"name with a quote", []ratelimit.Policy{{Name: `a"b`, Rate: perMinute(1)}}},
		{"name with a colon", []ratelimit.Policy{{Name: "a:b", Rate: perMinute(1)}}},
		{"upper-case name", []ratelimit.Policy{{Name: "Login", Rate: perMinute(1)}}},
		{"long name", []ratelimit.Policy{{Name: strings.Repeat("a", 65), Rate: perMinute(1)}}},
		{"zero count", []ratelimit.Policy{{Name: "a", Rate: perMinute(0)}}},
		{"sub-second period", []ratelimit.Policy{{Name: "a", Rate: config.Rate{Count: 1, Period: time.Millisecond}}}},
		{"negative burst", []ratelimit.Policy{{Name: "a", Rate: perMinute(1), Burst: -1}}},
		{"unknown fail mode", []ratelimit.Policy{{Name: "a", Rate: perMinute(1), OnRedisError: 7}}},
		{"duplicate", []ratelimit.Policy{good, good}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lim, err := ratelimit.New(rdb, nil, c.policies...)
			assert.Error(t, err)
			assert.Nil(t, lim)
		})
	}
	_, err := ratelimit.New(nil, nil, good)
	assert.Error(t, err, "nil Redis client")
}

// Wiring mistakes stop the process at startup rather than at a request.
func TestMiddlewarePanicsOnWiringMistakes(t *testing.T) {
	lim := newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil,
		ratelimit.Policy{Name: "login-ip", Rate: perMinute(10)})
	assert.Panics(t, func() { lim.Middleware("login-iq", ratelimit.ClientIPKey) })
	assert.Panics(t, func() { lim.Middleware("login-ip", nil) })
}

// An unknown policy in Check refuses with 500 problem+json rather than
// letting the request through unlimited.
func TestCheckUnknownPolicyRefuses(t *testing.T) {
	lim := newLimiter(t, redisClient(t, testsupport.RedisAddr()), nil,
		ratelimit.Policy{Name: "login-user", Rate: perMinute(10)})
	w := httptest.NewRecorder()
	allowed := lim.Check(w, httptest.NewRequest(http.MethodPost, "/login", nil), "login-usr", "alice")
	assert.False(t, allowed)
	assert.Equal(t, http.StatusInternalServerError, w.Code)
	assert.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
}

// The key used for a request never depends on how its IPv6 address is
// written within the /64.
func TestClientIPKeyIsCanonical(t *testing.T) {
	addrs := []string{"2001:db8:0:1::1", "2001:DB8:0:1:0:0:0:1", "2001:0db8:0000:0001:ffff::"}
	var keys []string
	for _, a := range addrs {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(a), 1).String()
		k, ok := ratelimit.ClientIPKey(r)
		require.True(t, ok)
		keys = append(keys, k)
	}
	assert.Equal(t, []string{"2001:db8:0:1::/64", "2001:db8:0:1::/64", "2001:db8:0:1::/64"}, keys)
}
