package cache_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/cache"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// The checker must plug into the readiness endpoint.
var _ health.Checker = cache.Check(nil)

const secret = "Sup3rS3cretPW"

func TestOpenAppliesTimeouts(t *testing.T) {
	tests := []struct {
		name                        string
		url                         string
		opts                        cache.Options
		dial, read, write, poolWait time.Duration
		poolSize                    int // 0: don't compare
	}{
		{
			name: "defaults when nothing is set",
			url:  testsupport.RedisURL(),
			dial: cache.DefaultDialTimeout, read: cache.DefaultReadTimeout,
			write: cache.DefaultWriteTimeout, poolWait: cache.DefaultPoolTimeout,
		},
		{
			name: "options win",
			url:  testsupport.RedisURL(),
			opts: cache.Options{DialTimeout: 3 * time.Second, ReadTimeout: 400 * time.Millisecond,
				WriteTimeout: 300 * time.Millisecond, PoolTimeout: 700 * time.Millisecond, PoolSize: 4},
			dial: 3 * time.Second, read: 400 * time.Millisecond,
			write: 300 * time.Millisecond, poolWait: 700 * time.Millisecond, poolSize: 4,
		},
		{
			name: "URL values kept when options are zero",
			url:  testsupport.RedisURL() + "?dial_timeout=7s&read_timeout=600ms&write_timeout=500ms&pool_timeout=9s&pool_size=3",
			dial: 7 * time.Second, read: 600 * time.Millisecond,
			write: 500 * time.Millisecond, poolWait: 9 * time.Second, poolSize: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := cache.Open(context.Background(), tt.url, tt.opts)
			require.NoError(t, err)
			t.Cleanup(func() { _ = client.Close() })
			got := client.Options()
			assert.Equal(t, tt.dial, got.DialTimeout)
			assert.Equal(t, tt.read, got.ReadTimeout)
			assert.Equal(t, tt.write, got.WriteTimeout)
			assert.Equal(t, tt.poolWait, got.PoolTimeout)
			assert.True(t, got.ContextTimeoutEnabled)
			if tt.poolSize != 0 {
				assert.Equal(t, tt.poolSize, got.PoolSize)
			}
			// The configured client really talks to Redis.
			require.NoError(t, client.Set(context.Background(), "nbms:cache-test", "v", time.Minute).Err())
			assert.Equal(t, "v", client.Get(context.Background(), "nbms:cache-test").Val())
		})
	}
}

func TestOpenErrorsNeverContainPassword(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		opts    cache.Options
		wantURL bool
	}{
		{"unescaped slash in password", "redis://u:" + secret + "/x@127.0.0.1:6379/0", cache.Options{}, true},
		{"broken IPv6 host", "redis://:" + secret + "@[::1:6379/0", cache.Options{}, true},
		{"unknown scheme", "http://:" + secret + "@127.0.0.1:6379/0", cache.Options{}, true},
		{"bad database number", "redis://:" + secret + "@127.0.0.1:6379/nope", cache.Options{}, true},
		{"bad query value", "redis://:" + secret + "@127.0.0.1:6379/0?dial_timeout=soon", cache.Options{}, true},
		{"empty URL", "", cache.Options{}, true},
		{"URL disables read timeout", "redis://:" + secret + "@127.0.0.1:6379/0?read_timeout=-1", cache.Options{}, false},
		{"negative option", "redis://:" + secret + "@127.0.0.1:6379/0", cache.Options{ReadTimeout: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := cache.Open(context.Background(), tt.url, tt.opts)
			require.Error(t, err)
			assert.Nil(t, client)
			assert.NotContains(t, err.Error(), secret)
			assert.Equal(t, tt.wantURL, errors.Is(err, cache.ErrInvalidURL), err.Error())
		})
	}
}

func TestCheck(t *testing.T) {
	closed := testsupport.ClosedAddr(t)

	tests := []struct {
		name    string
		url     string
		wantErr bool
	}{
		{"reachable", testsupport.RedisURL(), false},
		{"unreachable", "redis://:" + secret + "@" + closed + "/0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := cache.Open(context.Background(), tt.url, cache.Options{})
			require.NoError(t, err)
			t.Cleanup(func() { _ = client.Close() })
			check := cache.Check(client)
			assert.Equal(t, "redis", check.Name())
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err = check.Check(ctx)
			if !tt.wantErr {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.NotContains(t, err.Error(), secret)
		})
	}
}

// FuzzOpenErrorHasNoPassword: whatever Open says about a URL, it must not
// repeat the password in it.
func FuzzOpenErrorHasNoPassword(f *testing.F) {
	for _, pw := range []string{"hunter2", "p@ss:word", "a/b?c#d", "%zz", "[::1]"} {
		for shape := range uint8(4) {
			f.Add(pw, shape)
		}
	}
	shapes := []string{
		"redis://:PW@127.0.0.1:6379/0",
		"redis://user:PW@127.0.0.1:6379/x",
		"rediss://:PW@[::1:6379/0",
		"redis://:PW@127.0.0.1:6379/0?read_timeout=later",
	}
	f.Fuzz(func(t *testing.T, pw string, shape uint8) {
		pw = "Zq9Marker" + pw
		url := strings.Replace(shapes[int(shape)%len(shapes)], "PW", pw, 1)
		client, err := cache.Open(context.Background(), url, cache.Options{})
		if err != nil {
			if strings.Contains(err.Error(), pw) {
				t.Fatalf("error repeats the password: %v", err)
			}
			return
		}
		_ = client.Close()
	})
}

func TestGoRedisMessagesReachTheStructuredLog(t *testing.T) {
	var logs testsupport.SyncBuffer
	cache.UseLogger(slog.New(slog.NewJSONHandler(&logs, nil)))
	t.Cleanup(func() { cache.UseLogger(slog.New(slog.NewTextHandler(io.Discard, nil))) })
	fwd := testsupport.NewForwarder(t, testsupport.RedisAddr())
	client, err := cache.Open(context.Background(), "redis://"+fwd.Addr()+"/0", cache.Options{})
	require.NoError(t, err)
	defer client.Close()
	require.NoError(t, client.Ping(context.Background()).Err())
	fwd.Stop()
	_ = client.Ping(context.Background()).Err()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"component":"go-redis"`) }, 5*time.Second, 20*time.Millisecond)
}
