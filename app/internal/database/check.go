package database

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrPoolExhausted is returned by Checker.Check when every connection the
// pool may open is in use, so the check would have to queue behind requests.
var ErrPoolExhausted = errors.New("database: pool exhausted")

// fallbackCheckTimeout bounds a check whose caller gave no deadline; a
// readiness probe that never answers is worse than one that fails.
const fallbackCheckTimeout = time.Second

// Checker reports whether the pool can serve a query right now. It satisfies
// health.Checker.
type Checker struct {
	pool *pgxpool.Pool
}

// Check returns a readiness checker for pool.
func Check(pool *pgxpool.Pool) *Checker {
	return &Checker{pool: pool}
}

// Name identifies the check in readiness output.
func (c *Checker) Name() string { return "postgres" }

// Check acquires a connection and runs SELECT 1 within ctx.
//
// A saturated pool fails at once with ErrPoolExhausted instead of waiting in
// the acquire queue: under load the probe would otherwise time out anyway,
// and meanwhile hold a place ahead of real requests. If a connection is
// taken between the look at the pool and the acquire, the wait is still
// bounded by ctx.
func (c *Checker) Check(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fallbackCheckTimeout)
		defer cancel()
	}
	if s := c.pool.Stat(); s.IdleConns() == 0 && s.TotalConns() >= s.MaxConns() {
		return ErrPoolExhausted
	}
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("database: acquire: %w", err)
	}
	defer conn.Release()
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("database: SELECT 1: %w", err)
	}
	return nil
}
