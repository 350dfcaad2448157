// Package cache builds the Redis client from a URL with bounded timeouts and
// offers a readiness check for it.
//
// The client connects lazily, like the database pool: Open succeeds while
// Redis is down, and readiness reports it until it returns.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults used when neither Options nor the URL's query parameters
// (dial_timeout, read_timeout, write_timeout, pool_timeout) set a value.
// go-redis would wait 5s per read; for a cache, a miss after 1s is better
// than a request stuck behind a slow Redis.
const (
	DefaultDialTimeout  = 2 * time.Second
	DefaultReadTimeout  = time.Second
	DefaultWriteTimeout = time.Second
	DefaultPoolTimeout  = 2 * time.Second
)

// ErrInvalidURL is returned (wrapped) when the Redis URL cannot be parsed.
var ErrInvalidURL = errors.New("cache: invalid Redis URL")

// Options overrides the URL's settings; a zero field keeps the URL's value,
// or the package default when the URL has none. Negative values are
// rejected: go-redis reads them as "no timeout", which is what this package
// exists to prevent.
type Options struct {
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolTimeout bounds the wait for a free connection when all PoolSize
	// connections are busy.
	PoolTimeout time.Duration
	// PoolSize zero keeps go-redis's default (10 per GOMAXPROCS).
	PoolSize int
}

// Open parses url (redis://, rediss:// or unix://), applies o and returns a
// client. It does not contact Redis; ctx is accepted for symmetry with
// database.Open and is not used.
//
// Per-call contexts are honoured (ContextTimeoutEnabled), so a request's
// deadline bounds its cache calls as well as the timeouts above.
//
// Errors never contain the URL, whose parse errors would echo the password.
func Open(_ context.Context, url string, o Options) (*redis.Client, error) {
	opts, err := options(url, o)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

func options(url string, o Options) (*redis.Options, error) {
	if o.DialTimeout < 0 || o.ReadTimeout < 0 || o.WriteTimeout < 0 || o.PoolTimeout < 0 || o.PoolSize < 0 {
		return nil, errors.New("cache: timeouts and PoolSize must not be negative")
	}
	if url == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidURL)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		// Deliberately not wrapping err: url.Parse quotes its input.
		return nil, fmt.Errorf("%w: check its form (redis://[user:password@]host:port/db), "+
			"that the password is percent-encoded and that query values are valid", ErrInvalidURL)
	}
	pick(&opts.DialTimeout, o.DialTimeout, DefaultDialTimeout)
	pick(&opts.ReadTimeout, o.ReadTimeout, DefaultReadTimeout)
	pick(&opts.WriteTimeout, o.WriteTimeout, DefaultWriteTimeout)
	pick(&opts.PoolTimeout, o.PoolTimeout, DefaultPoolTimeout)
	if opts.ReadTimeout < 0 || opts.WriteTimeout < 0 {
		return nil, errors.New("cache: the URL disables read or write timeouts; remove read_timeout/write_timeout < 0")
	}
	if o.PoolSize > 0 {
		opts.PoolSize = o.PoolSize
	}
	opts.ContextTimeoutEnabled = true
	return opts, nil
}

// pick sets *dst to override if given, else keeps the URL's value, else
// uses def.
func pick(dst *time.Duration, override, def time.Duration) {
	switch {
	case override > 0:
		*dst = override
	case *dst == 0:
		*dst = def
	}
}

// Checker reports whether Redis answers PING. It satisfies health.Checker.
type Checker struct {
	client *redis.Client
}

// Check returns a readiness checker for client.
func Check(client *redis.Client) *Checker {
	return &Checker{client: client}
}

// Name identifies the check in readiness output.
func (c *Checker) Name() string { return "redis" }

// Check sends PING within ctx.
func (c *Checker) Check(ctx context.Context) error {
	if err := c.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("cache: ping: %w", err)
	}
	return nil
}

// slogAdapter sends go-redis's own messages (dial failures, pool events)
// to the structured log instead of stderr, redacted like everything else.
type slogAdapter struct{ logger *slog.Logger }

func (a slogAdapter) Printf(ctx context.Context, format string, v ...any) {
	a.logger.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// UseLogger routes go-redis's process-wide logger to logger.
func UseLogger(logger *slog.Logger) { redis.SetLogger(slogAdapter{logger: logger}) }
