package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is a limit of Count events per Period, written COUNT/PERIOD
// (e.g. "10/1m", "600/1h").
type Rate struct {
	Count  int
	Period time.Duration
}

// MaxRatePeriod bounds a rate's period; longer windows belong to quotas,
// not throttles.
const MaxRatePeriod = 24 * time.Hour

// ParseRate parses COUNT/PERIOD.
func ParseRate(s string) (Rate, error) {
	count, period, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, errors.New("want COUNT/PERIOD, e.g. 10/1m")
	}
	n, err := strconv.Atoi(strings.TrimSpace(count))
	if err != nil || n < 1 {
		return Rate{}, fmt.Errorf("count %q must be a whole number of at least 1", count)
	}
	d, err := time.ParseDuration(strings.TrimSpace(period))
	if err != nil || d < time.Second || d > MaxRatePeriod {
		return Rate{}, fmt.Errorf("period %q must be a duration from 1s to 24h", period)
	}
	return Rate{Count: n, Period: d}, nil
}

// String writes the rate back as COUNT/PERIOD.
func (r Rate) String() string { return strconv.Itoa(r.Count) + "/" + r.Period.String() }
