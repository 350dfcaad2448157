package standby

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Status asks the servers opts names and judges the standby. An error
// means opts are wrong (Validate); a server that cannot be reached, or
// refuses, is a failed check in the report, so that what the other side
// says is still reported.
func Status(ctx context.Context, opts Options) (Report, error) {
	if err := opts.Validate(); err != nil {
		return Report{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	r := Report{Slot: opts.Slot, CheckedAt: time.Now().UTC()}
	r.Policy.MaxLagBytes = opts.MaxLagBytes
	r.Policy.MaxLagSeconds = opts.MaxLag.Seconds()
	if opts.Primary != "" {
		side := &PrimarySide{}
		side.Target, side.Error = ask(ctx, opts.Primary, func(conn *pgx.Conn) error {
			return askPrimary(ctx, conn, opts.Slot, side)
		})
		r.Primary = side
		r.judgePrimary(side, opts)
	}
	if opts.Standby != "" {
		side := &StandbySide{}
		side.Target, side.Error = ask(ctx, opts.Standby, func(conn *pgx.Conn) error {
			return askStandby(ctx, conn, side)
		})
		r.Standby = side
		r.judgeStandby(side, opts)
	}
	r.OK = true
	for _, c := range r.Checks {
		r.OK = r.OK && c.OK
	}
	return r, nil
}

// ask connects to connString (valid: Validate parsed it) and runs q on
// the connection. It returns where it connected (no password) and what
// went wrong, if anything.
func ask(ctx context.Context, connString string, q func(*pgx.Conn) error) (target, problem string) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return "", err.Error()
	}
	target = fmt.Sprintf("host=%s port=%d dbname=%s user=%s", cfg.Host, cfg.Port, cfg.Database, cfg.User)
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "nbms standby-status"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		err = q(conn)
		// Its own bound: ctx may be what ended q.
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(closeCtx)
		cancel()
	}
	switch {
	case err == nil:
		return target, ""
	case ctx.Err() != nil:
		return target, fmt.Sprintf("no answer in time (--timeout): %v", err)
	}
	return target, err.Error()
}
