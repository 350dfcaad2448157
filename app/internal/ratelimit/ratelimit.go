// Package ratelimit throttles requests per client IP, per user or per any
// other key, with limits shared by every replica through Redis.
//
// Counting uses GCRA (github.com/go-redis/redis_rate/v10): one Lua script
// reads and updates a single timestamp per key atomically, so concurrent
// requests on several replicas can never be allowed past the limit, which
// the read-then-write counters of many limiters (and Django REST
// framework's cache throttles) allow.
//
// What happens when Redis fails is a decision made per policy (FailMode):
// login limits fail closed, because a login endpoint without a throttle is
// an open door for password guessing; public reads fall back to a limiter
// inside the process, because refusing every anonymous reader during a
// Redis outage is worse than letting each replica count on its own. Either
// way a Redis failure is logged (at most once a minute per policy) and is
// never answered with 500.
//
// A nil *Limiter limits nothing: that is what RATE_LIMIT_ENABLED=false
// wires, so handlers can call Check without asking whether limits are on.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/nbms-deploy/nbms/app/config"
)

// FailMode says what a policy does when Redis cannot answer.
type FailMode int

const (
	// FailClosed refuses the request (503 with Retry-After). It is the zero
	// value so that forgetting to choose cannot open a login endpoint.
	FailClosed FailMode = iota
	// FailLocal counts in this process with the same rate. The limit then
	// holds per replica: N replicas together allow up to N times the rate
	// until Redis is back.
	FailLocal
)

func (m FailMode) String() string {
	if m == FailLocal {
		return "fail-local"
	}
	return "fail-closed"
}

// Policy is one named limit.
type Policy struct {
	// Name identifies the policy in Redis keys, in the RateLimit and
	// RateLimit-Policy headers and in logs, e.g. "login-ip". Lower-case
	// letters, digits, '-', '_' and '.', at most 64 characters.
	Name string
	// Rate is Count requests per Period, from the env contract.
	Rate config.Rate
	// Burst is how many requests may arrive at once after a quiet period;
	// zero means Rate.Count, i.e. the whole quota may be used at once.
	Burst int
	// OnRedisError chooses between refusing (FailClosed, the default) and
	// counting in-process (FailLocal) while Redis is unreachable.
	OnRedisError FailMode
}

// Decision is the outcome of one Allow call.
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Limit is the policy's quota (Rate.Count) per window (Rate.Period).
	Limit int
	// Remaining is how many more requests would be allowed right now,
	// never more than Limit.
	Remaining int
	// RetryAfter is how long to wait before a refused request would be
	// allowed; zero when Allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the key's quota is whole again.
	ResetAfter time.Duration
	// Degraded reports that Redis could not answer and the decision was
	// made in-process (FailLocal) or is a refusal (FailClosed).
	Degraded bool
}

// Errors returned by Allow. Callers other than this package's HTTP helpers
// should treat both as "refuse the request", never as a server error.
var (
	// ErrUnavailable means Redis could not answer for a FailClosed policy.
	ErrUnavailable = errors.New("ratelimit: Redis unavailable")
	// ErrUnknownPolicy means Allow was asked for a policy New was not given.
	ErrUnknownPolicy = errors.New("ratelimit: unknown policy")
)

const (
	// keyPrefix namespaces the app's keys; redis_rate adds its own "rate:"
	// in front, so a key reads rate:nbms:rl:<policy>:<sha256 hex>.
	keyPrefix = "nbms:rl:"
	// redisTimeout bounds one GCRA call. The script takes well under a
	// millisecond; a Redis that needs longer is failing, and every request
	// would otherwise wait for the client's read timeout, or for go-redis's
	// dial retries (5 attempts, 100ms apart) when Redis is down. The
	// deadline reaches the socket because cache.Open enables
	// ContextTimeoutEnabled on the client.
	redisTimeout = 300 * time.Millisecond
	// redisCooldown is how long the limiter stops asking Redis after a
	// failure, so that an outage costs requests nothing rather than a
	// connection attempt each (or a timeout, when packets are dropped).
	// It is also the longest Redis waits to be used again once it is back.
	redisCooldown = 2 * time.Second
	// logInterval bounds Redis-failure log lines to one per policy per
	// interval; the line counts the failures it stands for.
	logInterval = time.Minute
	// unavailableRetryAfter is the Retry-After of a FailClosed 503.
	unavailableRetryAfter = 5 * time.Second
	maxPolicyName         = 64
)

// Limiter applies named policies. It is safe for concurrent use.
type Limiter struct {
	gcra     *redis_rate.Limiter
	logger   *slog.Logger
	policies map[string]*policyState
	// redisDownUntil is the UnixNano time before which Redis is not asked
	// again (see redisCooldown); zero when Redis is believed healthy.
	redisDownUntil atomic.Int64
}

// policyState is a Policy with its precomputed forms and outage state.
type policyState struct {
	Policy
	limit     redis_rate.Limit
	headerVal string // RateLimit-Policy item, e.g. "login-ip";q=10;w=60
	local     *localLimiter

	failing atomic.Bool // a Redis failure was logged and not yet cleared
	logMu   sync.Mutex
	lastLog time.Time
	missed  int // failures since lastLog
}

// New returns a Limiter over rdb with the given policies. Names must be
// unique; Count must be at least 1, Period at least a second and Burst not
// negative. A nil logger means slog.Default().
//
// rdb is used as is; build it with cache.Open so that its calls are bounded
// by the per-call deadline this package sets.
func New(rdb *redis.Client, logger *slog.Logger, policies ...Policy) (*Limiter, error) {
	if rdb == nil {
		return nil, errors.New("ratelimit: nil Redis client")
	}
	if logger == nil {
		logger = slog.Default()
	}
	l := &Limiter{
		gcra:     redis_rate.NewLimiter(rdb),
		logger:   logger,
		policies: make(map[string]*policyState, len(policies)),
	}
	for _, p := range policies {
		if err := validate(p); err != nil {
			return nil, err
		}
		if _, dup := l.policies[p.Name]; dup {
			return nil, fmt.Errorf("ratelimit: policy %q declared twice", p.Name)
		}
		if p.Burst == 0 {
			p.Burst = p.Rate.Count
		}
		l.policies[p.Name] = &policyState{
			Policy:    p,
			limit:     redis_rate.Limit{Rate: p.Rate.Count, Period: p.Rate.Period, Burst: p.Burst},
			headerVal: fmt.Sprintf("%q;q=%d;w=%d", p.Name, p.Rate.Count, ceilSeconds(p.Rate.Period)),
			local:     newLocalLimiter(p.Rate, p.Burst),
		}
	}
	return l, nil
}

func validate(p Policy) error {
	if p.Name == "" || len(p.Name) > maxPolicyName {
		return fmt.Errorf("ratelimit: policy name %q must be 1 to %d characters", p.Name, maxPolicyName)
	}
	// The name goes into Redis keys and, quoted, into a structured header
	// field; this alphabet needs no escaping in either.
	for _, c := range []byte(p.Name) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("ratelimit: policy name %q: use a-z, 0-9, '-', '_' and '.'", p.Name)
		}
	}
	if p.Rate.Count < 1 || p.Rate.Period < time.Second {
		return fmt.Errorf("ratelimit: policy %q: rate %s must allow at least 1 request per at least 1s", p.Name, p.Rate)
	}
	if p.Burst < 0 {
		return fmt.Errorf("ratelimit: policy %q: burst must not be negative", p.Name)
	}
	if p.OnRedisError != FailClosed && p.OnRedisError != FailLocal {
		return fmt.Errorf("ratelimit: policy %q: unknown FailMode %d", p.Name, p.OnRedisError)
	}
	return nil
}

// Allow counts one request for key under the named policy and reports
// whether it may proceed.
//
// key is hashed (SHA-256) before it reaches Redis: user input such as a
// username can then neither collide with other keys nor be read back from
// Redis in clear. (Hashing is not anonymisation: an IPv4 address can be
// recovered from its hash by trying them all.)
//
// When Redis fails, a FailLocal policy answers from the in-process limiter
// with Degraded set and a nil error; a FailClosed policy returns a refusal
// with Degraded set and an error wrapping ErrUnavailable. If ctx itself
// ends first, its error is returned and nothing is logged.
//
// On a nil Limiter every request is allowed.
func (l *Limiter) Allow(ctx context.Context, policyName, key string) (Decision, error) {
	if l == nil {
		return Decision{Allowed: true}, nil
	}
	p, ok := l.policies[policyName]
	if !ok {
		return Decision{}, fmt.Errorf("%w %q", ErrUnknownPolicy, policyName)
	}
	sum := sha256.Sum256([]byte(key))

	err := errCoolingDown
	if l.mayAskRedis() {
		var res *redis_rate.Result
		res, err = l.askRedis(ctx, p, sum)
		if err == nil {
			if l.redisDownUntil.Load() != 0 {
				l.redisDownUntil.Store(0)
			}
			if p.failing.Load() {
				l.recovered(p)
			}
			return decisionFrom(res, p), nil
		}
		if ctx.Err() != nil {
			// The caller gave up (client disconnected, deadline): not
			// Redis's fault, so no log line and no new cooldown.
			return Decision{}, ctx.Err()
		}
		l.redisDownUntil.Store(time.Now().Add(redisCooldown).UnixNano())
	}
	l.redisFailed(p, err)

	if p.OnRedisError == FailLocal {
		d := p.local.allow(sum, time.Now())
		d.Degraded = true
		return d, nil
	}
	return Decision{Limit: p.Rate.Count, RetryAfter: unavailableRetryAfter, Degraded: true},
		fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// mayAskRedis reports whether this call should ask Redis: always while it
// is healthy, never during a cooldown, and after a cooldown for exactly one
// call, which probes Redis while the others keep using the fallback; a
// Redis that drops packets then delays one request per cooldown instead of
// every request that arrives while the probe waits.
func (l *Limiter) mayAskRedis() bool {
	until := l.redisDownUntil.Load()
	if until == 0 {
		return true
	}
	now := time.Now().UnixNano()
	if now < until {
		return false
	}
	return l.redisDownUntil.CompareAndSwap(until, now+int64(redisCooldown))
}

// errCoolingDown stands for the Redis error while the limiter is not
// asking Redis (see redisCooldown).
var errCoolingDown = errors.New("not retrying Redis yet after a recent failure")

func (l *Limiter) askRedis(ctx context.Context, p *policyState, sum [sha256.Size]byte) (*redis_rate.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	var buf [len(keyPrefix) + maxPolicyName + 1 + 2*sha256.Size]byte
	k := append(buf[:0], keyPrefix...)
	k = append(k, p.Name...)
	k = append(k, ':')
	k = hex.AppendEncode(k, sum[:])
	return l.gcra.Allow(ctx, string(k), p.limit)
}

func decisionFrom(res *redis_rate.Result, p *policyState) Decision {
	d := Decision{
		Allowed:    res.Allowed > 0,
		Limit:      p.Rate.Count,
		Remaining:  min(res.Remaining, p.Rate.Count),
		ResetAfter: max(res.ResetAfter, 0),
	}
	if !d.Allowed {
		d.RetryAfter = max(res.RetryAfter, 0)
	}
	return d
}

// redisFailed logs a Redis failure unless this policy logged one less than
// logInterval ago; the next line reports how many were left out.
func (l *Limiter) redisFailed(p *policyState, err error) {
	p.failing.Store(true)
	p.logMu.Lock()
	now := time.Now()
	if !p.lastLog.IsZero() && now.Sub(p.lastLog) < logInterval {
		p.missed++
		p.logMu.Unlock()
		return
	}
	missed := p.missed
	p.lastLog, p.missed = now, 0
	p.logMu.Unlock()

	level, effect := slog.LevelError, "refusing requests with 503"
	if p.OnRedisError == FailLocal {
		level, effect = slog.LevelWarn, "counting per process (limit multiplied by the number of replicas)"
	}
	l.logger.Log(context.Background(), level, "rate limiter cannot reach Redis",
		slog.String("policy", p.Name),
		slog.String("on_redis_error", p.OnRedisError.String()),
		slog.String("effect", effect),
		slog.Int("failures_not_logged", missed),
		slog.String("error", err.Error()))
}

// recovered logs that Redis answers again and drops the in-process counts,
// which Redis's state supersedes.
func (l *Limiter) recovered(p *policyState) {
	if !p.failing.CompareAndSwap(true, false) {
		return
	}
	p.local.reset()
	l.logger.Info("rate limiter reaches Redis again", slog.String("policy", p.Name))
}

// ceilSeconds rounds d up to whole seconds, the unit of Retry-After and of
// the RateLimit header parameters.
func ceilSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second > 0 {
		s++
	}
	return s
}
