package ratelimit_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/ratelimit"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// A limit no benchmark reaches, so every call does the full allowed path.
var unreachable = config.Rate{Count: 1_000_000_000, Period: time.Second}

// BenchmarkAllow measures one GCRA round trip to the real Redis.
func BenchmarkAllow(b *testing.B) {
	name := policyName(b, "bench")
	lim := newLimiter(b, redisClient(b, testsupport.RedisAddr()), nil, ratelimit.Policy{Name: name, Rate: unreachable})
	ctx := context.Background()
	for b.Loop() {
		if _, err := lim.Allow(ctx, name, "198.51.100.1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMiddleware compares a bare handler with the same handler behind
// the middleware (key function, Redis round trip, two headers).
func BenchmarkMiddleware(b *testing.B) {
	name := policyName(b, "bench")
	lim := newLimiter(b, redisClient(b, testsupport.RedisAddr()), nil, ratelimit.Policy{Name: name, Rate: unreachable})
	handlers := []struct {
		name string
		h    http.Handler
	}{
		{"bare", ok},
		{"limited", lim.Middleware(name, ratelimit.ClientIPKey)(ok)},
	}
	for _, c := range handlers {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/api/public/indicators", nil)
			r.RemoteAddr = "198.51.100.1:1234"
			for b.Loop() {
				w := httptest.NewRecorder()
				c.h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatal("status " + strconv.Itoa(w.Code))
				}
			}
		})
	}
}
