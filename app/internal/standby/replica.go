package standby

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbySide is what the standby says of itself. Error is set when the
// question could not be asked; the rest is what was read before it.
type StandbySide struct {
	// Target is where the report connected, never with a password.
	Target string `json:"target"`
	Error  string `json:"error,omitempty"`
	// InRecovery is pg_is_in_recovery(): false once promoted.
	InRecovery bool `json:"in_recovery"`
	// ReceiveLSN is pg_last_wal_receive_lsn(), the WAL streamed and
	// flushed to the standby's disk (null if it never streamed);
	// ReplayLSN is pg_last_wal_replay_lsn(), the WAL replayed, from the
	// stream or from the repository through restore_command.
	ReceiveLSN *string `json:"receive_lsn"`
	ReplayLSN  *string `json:"replay_lsn"`
	// ReplayBehindBytes is ReceiveLSN - ReplayLSN: WAL on the standby's
	// disk not yet replayed. Zero when replay is past what was streamed
	// (WAL from the repository); null without both. It cannot see WAL the
	// primary has not sent: the primary's side can.
	ReplayBehindBytes *int64 `json:"replay_behind_bytes"`
	// LastReplayedCommitAt is pg_last_xact_replay_timestamp(): the commit
	// time, on the primary, of the last transaction replayed.
	LastReplayedCommitAt *time.Time `json:"last_replayed_commit_at"`
	// ReplayDelaySeconds is how far replay is behind in time: 0 when it
	// has replayed everything received (an idle primary sends nothing, so
	// the last replayed commit ages without any delay); otherwise the
	// standby's now() minus LastReplayedCommitAt, the age of the newest
	// commit it shows while more waits (a time of the primary's clock
	// against the standby's: they must agree). Null when neither holds.
	ReplayDelaySeconds *float64 `json:"replay_delay_seconds"`
	// ReplayPauseState is pg_get_wal_replay_pause_state(): not paused,
	// pause requested, paused.
	ReplayPauseState string `json:"replay_pause_state,omitempty"`
	// Receiver is the WAL receiver (pg_stat_wal_receiver); nil when there
	// is none (not connected to a primary).
	Receiver *Receiver `json:"receiver"`
}

// Receiver is the standby's row of pg_stat_wal_receiver.
type Receiver struct {
	Status     string  `json:"status"`
	SlotName   string  `json:"slot_name"`
	SenderHost string  `json:"sender_host"`
	SenderPort int32   `json:"sender_port"`
	WrittenLSN *string `json:"written_lsn"`
	FlushedLSN *string `json:"flushed_lsn"`
	// LastMessageAt is the last message from the primary: it sends one at
	// least every wal_sender_timeout / 2 even when idle.
	LastMessageAt *time.Time `json:"last_message_at"`
}

// askStandby fills side from conn.
func askStandby(ctx context.Context, conn *pgx.Conn, side *StandbySide) error {
	var (
		now   time.Time
		pause *string
	)
	err := conn.QueryRow(ctx, `
SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_receive_lsn()::text,
       pg_catalog.pg_last_wal_replay_lsn()::text, pg_catalog.pg_last_xact_replay_timestamp(),
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_get_wal_replay_pause_state() END,
       now()`).Scan(&side.InRecovery, &side.ReceiveLSN, &side.ReplayLSN, &side.LastReplayedCommitAt, &pause, &now)
	if err != nil {
		return err
	}
	side.ReplayPauseState = deref(pause)
	p, err := parseLSNs(side.ReceiveLSN, side.ReplayLSN)
	if err != nil {
		return err
	}
	if gap := behind(p[0], p[1]); gap != nil {
		*gap = max(*gap, 0)
		side.ReplayBehindBytes = gap
		switch {
		case *gap == 0:
			side.ReplayDelaySeconds = new(float64)
		case side.LastReplayedCommitAt != nil:
			// Not below 0: a commit "in the future" is the clocks'
			// disagreement, not a standby ahead of its primary.
			delay := max(now.Sub(*side.LastReplayedCommitAt).Seconds(), 0)
			side.ReplayDelaySeconds = &delay
		}
	}
	return side.receiver(ctx, conn)
}

func (side *StandbySide) receiver(ctx context.Context, conn *pgx.Conn) error {
	var (
		r      Receiver
		status *string
		slot   *string
		host   *string
		port   *int32
	)
	err := conn.QueryRow(ctx, `
SELECT status, slot_name, sender_host, sender_port, written_lsn::text, flushed_lsn::text, last_msg_receipt_time
FROM pg_catalog.pg_stat_wal_receiver`).Scan(&status, &slot, &host, &port, &r.WrittenLSN, &r.FlushedLSN, &r.LastMessageAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	case status == nil:
		return errNoStats
	}
	r.Status, r.SlotName, r.SenderHost = *status, deref(slot), deref(host)
	if port != nil {
		r.SenderPort = *port
	}
	side.Receiver = &r
	return nil
}
