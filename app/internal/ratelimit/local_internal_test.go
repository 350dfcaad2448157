package ratelimit

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
)

// The in-process limiter's memory bound is not observable through HTTP, so
// this one test looks inside: many keys during an outage stay bounded, and
// keys whose quota is whole again are dropped once a window has passed.
func TestLocalLimiterMemoryIsBounded(t *testing.T) {
	cases := []struct {
		name    string
		keys    int
		later   time.Duration
		maxLeft int
	}{
		{"more keys than the bound are evicted", maxLocalKeys + 10, 0, maxLocalKeys},
		{"expired keys are swept after a window", 1000, 2 * time.Minute, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLocalLimiter(config.Rate{Count: 10, Period: time.Minute}, 10)
			now := time.Now()
			var key [sha256.Size]byte
			for i := range c.keys {
				binary.BigEndian.PutUint64(key[:], uint64(i))
				require.True(t, l.allow(key, now).Allowed)
			}
			binary.BigEndian.PutUint64(key[:], uint64(c.keys))
			l.allow(key, now.Add(c.later))
			assert.LessOrEqual(t, len(l.tat), c.maxLeft)
		})
	}
}
