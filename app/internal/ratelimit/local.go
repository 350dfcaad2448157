package ratelimit

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/nbms-deploy/nbms/app/config"
)

// maxLocalKeys bounds the in-process limiter's memory during an outage;
// each key costs about 60 bytes, so the bound is a few megabytes.
const maxLocalKeys = 100_000

// localLimiter is the same GCRA as the Redis script, for one process. It
// serves FailLocal policies while Redis is unreachable.
type localLimiter struct {
	interval    time.Duration // time one request "costs": Period / Count
	burstOffset time.Duration // interval * burst
	limit       int

	mu        sync.Mutex
	tat       map[[sha256.Size]byte]time.Time // theoretical arrival time per key
	lastSweep time.Time
}

func newLocalLimiter(rate config.Rate, burst int) *localLimiter {
	interval := rate.Period / time.Duration(rate.Count)
	return &localLimiter{
		interval:    interval,
		burstOffset: interval * time.Duration(burst),
		limit:       rate.Count,
		tat:         make(map[[sha256.Size]byte]time.Time),
	}
}

func (l *localLimiter) allow(key [sha256.Size]byte, now time.Time) Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)

	tat := now
	if t, ok := l.tat[key]; ok && t.After(now) {
		tat = t
	}
	next := tat.Add(l.interval)
	diff := now.Sub(next.Add(-l.burstOffset))
	if diff < 0 {
		return Decision{Limit: l.limit, RetryAfter: -diff, ResetAfter: tat.Sub(now)}
	}
	l.tat[key] = next
	return Decision{
		Allowed:    true,
		Limit:      l.limit,
		Remaining:  min(int(diff/l.interval), l.limit),
		ResetAfter: next.Sub(now),
	}
}

// sweep drops keys whose quota is whole again (they hold no information)
// once per window, and, if an attacker spreads requests over more keys than
// maxLocalKeys, arbitrary further keys: forgetting some clients' counts is
// the price of bounded memory while Redis is away.
func (l *localLimiter) sweep(now time.Time) {
	full := len(l.tat) >= maxLocalKeys
	if !full && now.Sub(l.lastSweep) < l.burstOffset {
		return
	}
	l.lastSweep = now
	for k, t := range l.tat {
		if !t.After(now) {
			delete(l.tat, k)
		}
	}
	for k := range l.tat { // map order is random: an unbiased eviction
		if len(l.tat) < maxLocalKeys*3/4 {
			break
		}
		delete(l.tat, k)
	}
}

// reset forgets every count; used when Redis answers again. A new map,
// rather than clear, gives the outage's memory back.
func (l *localLimiter) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tat = make(map[[sha256.Size]byte]time.Time)
}
