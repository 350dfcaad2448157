package standby

import (
	"fmt"
	"strconv"
	"strings"
)

// lsn is a WAL position (pg_lsn): a byte offset in the WAL stream, which
// PostgreSQL prints as two hexadecimal halves, "16/B374D848". The
// difference of two is bytes of WAL, as pg_wal_lsn_diff computes it.
type lsn uint64

func parseLSN(s string) (lsn, error) {
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("standby: %q is not a WAL position", s)
	}
	return lsn(h<<32 | l), nil
}

// parseLSNs parses every non-nil position of ps, stopping at the first
// that does not parse.
func parseLSNs(ps ...*string) ([]*lsn, error) {
	out := make([]*lsn, len(ps))
	for i, p := range ps {
		if p == nil {
			continue
		}
		v, err := parseLSN(*p)
		if err != nil {
			return nil, err
		}
		out[i] = &v
	}
	return out, nil
}

// behind is how many bytes of WAL b is behind a (a - b), or nil when
// either is unknown.
func behind(a, b *lsn) *int64 {
	if a == nil || b == nil {
		return nil
	}
	d := int64(*a) - int64(*b)
	return &d
}
